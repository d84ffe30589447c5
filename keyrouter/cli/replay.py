"""`keyrouter replay FILE`: a saved inbox through the whole pipeline, and a report of what
happened that a person can read: messages per rule, rows with problems, dead letters grouped by
their reason, and (with `--sandbox`) what the local fake provider received."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr

from keyrouter.cli.common import (
    EXIT_DEAD_LETTERS,
    EXIT_OK,
    CliError,
    command,
    load_router,
    rules_flag,
    store_flag,
)
from keyrouter.cli.rules import route_json
from keyrouter.compliance.reconcile import Reconciler, iys_params_of
from keyrouter.conversations.results import summary as conversation_summary
from keyrouter.dispatch.claims import CHECK_BATCH
from keyrouter.handlers.survey import normalize_choice
from keyrouter.masking import mask_number
from keyrouter.message import TURKEY, Message, content_id
from keyrouter.ops import terminal
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.rules.router import Router
from keyrouter.sandbox.iys import FakeIys
from keyrouter.sandbox.provider import FakeIletiMerkezi
from keyrouter.settings import Settings
from keyrouter.store.choice import SANDBOX_STORE, redact_store_url
from keyrouter.worker import eventloop, shutdown
from keyrouter.worker.replay import replay
from keyrouter.worker.runtime import Runtime, open_runtime
from keyrouter.worker.shutdown import EXIT_AT_ONCE as EXIT_INTERRUPTED
from keyrouter.worker.sources import InputError, SavedInbox, parse_rows, read_rows, shift_dates

#: `--sandbox` with its own store puts this number on the fake provider's blacklist as a click on
#: the opt-out link would (no inbox row), and reconciles: it reaches the ledger, channel provider.
LINK_CLICK = "+905419990042"
SANDBOX_SENDER = "KEYROUTER"
BAR_FROM = 1000  # rows: smaller replays finish before a bar would be worth drawing
_QUOTED = re.compile(r"'[^'\s]*'")  # a quoted value (a number, an id), never across words
SHOWN = 10  # SMS lines, blacklisted numbers and ids shown before "... and N more"


def _rows(args: argparse.Namespace, notes: list[str]) -> tuple[list[Any], timedelta | None, list[str]]:
    """The file's rows (dates shifted with --shift-dates) and the ids given to id-less rows;
    `notes` hears what is odd about the file (a totalRows that does not fit)."""

    try:
        rows = read_rows(args.file, notes)
    except InputError as exc:
        raise CliError(str(exc)) from None
    idless = [content_id(r) for r in rows if isinstance(r, dict) and r.get("id") in (None, "")]
    if not args.shift_dates:
        return rows, None, idless
    shifted, offset = shift_dates(rows, datetime.now(TURKEY))
    return shifted, offset, idless


def _missing_fields(rows: Sequence[Any]) -> list[tuple[str, list[str]]]:
    """(id, the fields missing or empty) for rows that have an id but lack something else."""
    found = []
    for row in rows:
        if not isinstance(row, dict) or row.get("id") in (None, ""):
            continue
        missing = [f for f in ("date", "sender", "number", "text") if row.get(f) in (None, "")]
        if missing:
            found.append((str(row["id"]), missing))
    return found


def _offset_text(offset: timedelta) -> str:
    seconds = int(abs(offset.total_seconds()))
    days, rest = divmod(seconds, 86400)
    sign = "-" if offset < timedelta(0) else "+"
    return f"{sign}{days}d {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def _more(items: Sequence[str], limit: int = SHOWN) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def _by_rule(router: Router, messages: Sequence[Message], taken: dict[str, str]) -> str:
    """`taken`: the messages a conversation took (its answers), by id."""
    counts: Counter[str] = Counter()
    for m in messages:
        if m.id in taken:
            counts[taken[m.id]] += 1
            continue
        route = router.route(m.text, m.receiver)
        counts[route.match.rule if route.match else "no rule (default)"] += 1
    order = [r.name for r in router.rules.rules] + ["no rule (default)"]
    return ", ".join(f"{name} {counts[name]}" for name in order if counts[name])


def _dead_summary(letters: Sequence[Any], ids: Sequence[str]) -> list[str]:
    """Dead letters of this replay, one line per reason (the error with the message id and the
    quoted values taken out) and a few ids, never one line per dead letter."""
    order = {i: n for n, i in enumerate(ids)}  # the file's order, whatever order they died in
    groups: dict[str, list[str]] = {}
    example: dict[str, str] = {}
    for d in sorted((d for d in letters if d.id in order), key=lambda d: order[d.id]):
        reason = d.error.replace(f"message {d.id}: ", "").replace(f", message {d.id}", "")
        key = f"rule {d.rule}: " + _QUOTED.sub("'...'", reason)
        groups.setdefault(key, []).append(d.id)
        example.setdefault(key, f"rule {d.rule}: {reason}")
    lines = []
    for key, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {len(members)} x {example[key] if len(members) == 1 else key}")
        lines.append(f"      ids: {_more(members)}")
    return lines


def _sandbox_lines(sandbox: Any) -> list[str]:
    with sandbox.lock:
        sent = list(sandbox.sent)
        blacklist = sorted(sandbox.blacklist)
        removed = [r.body for r in sandbox.requests if r.endpoint == "delete-blacklist"]
    lines = [f"sandbox provider: {len(sent)} SMS sent, {len(blacklist)} numbers on the blacklist"]
    by_text: dict[tuple[str, str], list[str]] = {}
    for sms in sent:
        by_text.setdefault((sms.sender, sms.text), []).extend(mask_number(n) for n in sms.numbers)
    for (sender, text), numbers in by_text.items():
        lines.append(f"  {len(numbers)} SMS from {sender}: {text!r} to {_more(numbers, 5)}")
    if blacklist:
        lines.append(f"  blacklisted: {_more([mask_number(n) for n in blacklist])}")
    if removed:
        lines.append(f"  asked to remove from the blacklist: {len(removed)} number(s)")
    return lines


async def _survey_lines(router: Router, store: Any) -> list[str]:
    lines = []
    seen: dict[str, list[str]] = {}
    for rule in router.rules.rules:
        for entry in rule.handlers:
            if entry.name == "survey" and "id" in entry.params:
                choices = seen.setdefault(str(entry.params["id"]).strip(), [])
                choices += [normalize_choice(c) for c in entry.params.get("choices") or ()
                            if normalize_choice(c) not in choices]
    for survey, choices in seen.items():
        results = await store.survey_results(survey)
        votes = {c: 0 for c in choices} | results.votes
        counts = ", ".join(f"{c} {n}" for c, n in votes.items())
        lines.append(f"survey {survey}: {counts or 'no votes'} ({results.voters} voters, "
                     f"{results.rejected} rejected)")
    return lines


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    if args.shift_dates and not (args.sandbox or args.dry_run):
        raise CliError("--shift-dates invents receive and consent dates: use it with --sandbox or "
                       "--dry-run, never against the real provider and store")
    router = load_router(args, settings, runnable=not args.dry_run)
    notes: list[str] = []
    rows, offset, idless = _rows(args, notes)
    if args.dry_run:
        for note in notes:
            print(f"keyrouter: warning: {note}", file=sys.stderr)

        for m in parse_rows(rows):
            route = router.route(m.text, m.receiver)
            print(json.dumps({"id": m.id, **route_json(m.text, route)}, ensure_ascii=False))
        return EXIT_OK
    sandbox = iys_sandbox = None
    if args.sandbox:
        sandbox = FakeIletiMerkezi().start()
        settings = settings.model_copy(update={
            "sender": settings.sender or SANDBOX_SENDER,
            "store": args.store or SANDBOX_STORE,
        })
        settings, iys_sandbox = _iys_sandbox(settings)
    try:
        return _replay(args, settings, router, SavedInbox(rows), offset, sandbox, iys_sandbox,
                       idless, notes)
    finally:
        if sandbox is not None:
            sandbox.stop()
        if iys_sandbox is not None:
            iys_sandbox.stop()


def _iys_sandbox(settings: Settings) -> tuple[Settings, Any]:
    """`replay --sandbox`: a local fake İYS for rules that use `iys`."""

    fake = FakeIys().start()
    values = {**fake.settings(), "iys_password": SecretStr(fake.password)}
    return settings.model_copy(update=values), fake


def _replay(args: argparse.Namespace, settings: Settings, router: Router, inbox: SavedInbox,
            offset: timedelta | None, sandbox: Any,
            iys_sandbox: Any = None, idless: Sequence[str] = (), notes: Sequence[str] = ()) -> int:
    client = None
    if sandbox is not None:
        client = IletiMerkezi(sandbox.key, sandbox.hash, base_url=sandbox.base_url)
    out: list[str] = []
    if offset is not None:
        out.append(f"{args.file}: dates shifted by {_offset_text(offset)} so the newest row is now")
    out.extend(notes)
    explicit_level = os.environ.get("KEYROUTER_LOG_LEVEL", "").strip().upper() == "DEBUG"

    taken: dict[str, str] = {}  # message id -> the conversation that took it

    async def main() -> int:
        stopping = asyncio.Event()
        shutdown.install(stopping)
        async with open_runtime(settings, router=router, stopping=stopping, client=client) as runtime:
            # What the store held before this run, in one round trip: a message counts as
            # "finished before" only when the store said so now.  A store that cannot be reached
            # is exit 4 here (keyrouter.cli.errors), not a dispatcher backing off for ever.
            unique = inbox.unique_ids
            waiting = await _unfinished(runtime.store, unique)
            if runtime.dispatcher.conversations is not None:
                runtime.dispatcher.conversations.on_route = taken.__setitem__
            if terminal.is_terminal() and inbox.total > BAR_FROM:
                with terminal.progress_bar("replay", hold_lines=not explicit_level) as show:
                    report, dead = await replay(runtime, inbox, stopping, show)
            else:
                report, dead = await replay(runtime, inbox, stopping)
            messages = inbox.messages()  # all parsed now, the parts a stop left unread too
            beyond = {m.id for m in messages if runtime.dispatcher.beyond_horizon(m)}
            counted = [i for i in unique if i not in beyond]
            dead_ids = set(dead)
            earlier = sum(i not in waiting and i not in dead_ids for i in counted)
            if stopping.is_set():
                left = await _unfinished(runtime.store, counted)
                out.append(_interrupted_line(counted, waiting, left, dead_ids, earlier,
                                             report.retrying))
                return EXIT_INTERRUPTED
            # every counted message is finished now (replay returns once none is left): done are
            # those neither skipped, dead nor finished before, including a retry that ran while no
            # pass waited for it and a message another worker held at first and finished since
            done = len(counted) - report.skipped - len(dead) - earlier
            out.append(_summary_line(len(messages), len(unique), done, report.skipped, len(dead),
                                     earlier, len(beyond)))
            if messages:
                out.append(f"  by rule: {_by_rule(router, messages, taken)}")
            out.extend(_row_lines(inbox.rows, idless, len(inbox.rows) - len(messages)))
            out.extend(await _store_lines(args, settings, runtime, dead, sandbox))
            return EXIT_DEAD_LETTERS if dead else EXIT_OK

    try:
        code = eventloop.run(main())
    except ValueError as exc:  # the store URL, a missing SQLite folder
        raise CliError(str(exc)) from None
    if sandbox is not None:
        out.extend(_sandbox_lines(sandbox))
        if iys_sandbox is not None:
            out.append(f"sandbox İYS: {len(iys_sandbox.records)} consent records")
        out.append(f"store: {redact_store_url(settings.store)}"
                   + (" (the sandbox's own; --store to choose another)" if not args.store else ""))
    sys.stderr.flush()
    print("\n".join(out))
    return code


async def _store_lines(args: argparse.Namespace, settings: Settings, runtime: Runtime,
                       dead: Sequence[str], sandbox: Any) -> list[str]:
    """What the store holds after the run: dead letters, survey and conversation results, and in
    the sandbox the reconciliation of its blacklist."""
    lines = []
    if dead:
        lines.append(f"dead letters: {len(dead)} ({_list_hint(args, settings)})")
        lines.extend(_dead_summary(await runtime.store.dead_letters(), dead))
    lines.extend(await _survey_lines(runtime.router, runtime.store))
    for conv in runtime.router.rules.conversations:  # docs/conversations.md
        records = await runtime.store.conversation_records(conv.id)
        lines.append(conversation_summary(records, conv, runtime.dispatcher.clock()))
    if sandbox is not None:
        lines.extend(await _sandbox_reconcile(runtime, sandbox, link_click=not args.store))
    return lines


def _summary_line(messages: int, unique: int, done: int, skipped: int, dead: int, earlier: int,
                  beyond: int) -> str:
    """The report's first line: what happened to the file's messages."""
    return (f"{messages} messages: {done} done, {skipped} skipped, {dead} in dead letters"
            + (f", {earlier} finished before (this store had seen them)" if earlier else "")
            + (f", {beyond} older than KEYROUTER_HORIZON (ignored)" if beyond else "")
            + (f", {messages - unique} repeated ids" if unique < messages else ""))


def _row_lines(rows: Sequence[Any], idless: Sequence[str], skipped_rows: int) -> list[str]:
    """What the report says about rows that were not quite messages: malformed, id-less, unusable."""
    lines = []
    problems = _missing_fields(rows)
    if problems:
        shown = [f"{i} (no {', '.join(f)})" for i, f in problems]
        lines.append(f"  {len(problems)} malformed row(s), routed as they are: {_more(shown, 5)}")
    if idless:
        lines.append(f"  {len(idless)} row(s) without an id, given one from their content "
                     f"and routed as usual: {_more(idless, 3)}")
    if skipped_rows:
        lines.append(f"  {skipped_rows} row(s) without a usable id, not processed (see the log)")
    return lines


async def _unfinished(store: Any, ids: Sequence[str]) -> set[str]:
    """The unfinished ones of `ids`, asked CHECK_BATCH ids at a time (as the dispatcher does)."""
    left: set[str] = set()
    for start in range(0, max(len(ids), 1), CHECK_BATCH):  # one call at least: the store probe
        left.update(await store.unfinished(ids[start:start + CHECK_BATCH]))
    return left


def _interrupted_line(ids: Sequence[str], waiting: set[str], left: set[str], dead: set[str],
                      earlier: int, retrying: int) -> str:
    """The report of a replay stopped by SIGINT/SIGTERM, from what the store said before this
    run (`waiting`: unfinished then) and says now (`left`: unfinished now)."""
    finished_now = [i for i in ids if i in waiting and i not in left]
    dead_now = sum(i in dead for i in finished_now)
    todo = sum(i in left for i in ids)
    started = min(retrying, todo)  # failed once, retry scheduled: unfinished, not untouched
    parts = [f"interrupted: {len(finished_now) - dead_now:,} of {len(ids):,} done"]
    if dead_now:
        parts.append(f"{dead_now:,} in dead letters")
    if earlier:
        parts.append(f"{earlier:,} finished before (this store had seen them)")
    parts.append(f"{todo - started:,} not started")
    if started:
        parts.append(f"{started:,} started and not finished")
    return ", ".join(parts) + "; run the same command again to continue"


async def _sandbox_reconcile(runtime: Any, sandbox: Any, link_click: bool) -> list[str]:
    """The sandbox's blacklist reconciled with the ledger (docs/reconciliation.md); with
    `link_click`, first a number that clicked the opt-out link (on the list, no inbox row)."""

    if link_click:
        sandbox.add_from_panel(LINK_CLICK, at=time.time() - 3600)
    source = runtime.settings.reconcile_iys_source
    reconciler = Reconciler(runtime.store, runtime.client, router=runtime.router,
                            iys=iys_params_of(runtime.router.rules, source))
    outcome = await reconciler.run(runtime.dispatcher.process, full=True)
    line = f"reconcile: {outcome.plan.listed} numbers on the sandbox blacklist"
    if link_click:
        latest = await runtime.store.latest_optout(LINK_CLICK)
        recorded = latest is not None and latest.message_id.startswith("provider:")
        line += (f"; {mask_number(LINK_CLICK)} clicked the opt-out link (no inbox row): "
                 + ("in the ledger, channel provider" if recorded else "not recorded"))
    elif outcome.plan.record:
        line += f"; {len(outcome.plan.record)} opt-out(s) on it alone recorded, channel provider"
    if outcome.readded:
        line += (f"; {len(outcome.readded)} re-added (blacklisted in the ledger, missing at the "
                 "sandbox)")
    if outcome.result == "agree" and not link_click and not outcome.plan.record and not outcome.readded:
        line += "; the ledger agrees"
    return [line]


def _list_hint(args: argparse.Namespace, settings: Settings) -> str:
    """The command that lists them, with --store when this replay did not use KEYROUTER_STORE
    (a Redis URL may hold a password: then only `--store URL`)."""
    if not args.store and not args.sandbox:
        return "keyrouter dead-letters list"
    if args.sandbox and not args.store:
        return "keyrouter dead-letters list --sandbox"
    shown = settings.store if settings.store.startswith(("sqlite:", "memory:")) else "URL"
    return f"keyrouter dead-letters list --store {shown}"


def add_parser(sub: Any) -> None:
    p = command(sub, "replay", "run a saved get-inbox answer or a JSON-lines file of rows through "
                "the pipeline", "keyrouter replay examples/inbox.json --sandbox --shift-dates\n"
                "keyrouter replay export.jsonl --dry-run --rules rules-next/")
    p.add_argument("file", metavar="FILE", help="a saved get-inbox answer, a JSON list of rows, "
                   "or JSON lines")
    rules_flag(p)
    store_flag(p)
    p.add_argument("--dry-run", action="store_true", help="route and print; no handlers, no store")
    p.add_argument("--sandbox", action="store_true",
                   help="send provider calls (replies, blacklist) to a local fake provider, then "
                   "reconcile its blacklist; write its own store "
                   f"({SANDBOX_STORE}, with a link-click opt-out to show) unless --store is given")
    p.add_argument("--shift-dates", action="store_true",
                   help="move every row's date by one offset so the newest row is now "
                   "(an old export replays as if it had just arrived); only with --sandbox or "
                   "--dry-run")
    p.set_defaults(func=cmd_replay)
