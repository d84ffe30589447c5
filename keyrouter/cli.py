"""The `keyrouter` command.  Thin: parsing arguments and printing; the work is in the modules."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from keyrouter import doctor
from keyrouter.check import check_examples
from keyrouter.logs import LogConfigError, setup_logging
from keyrouter.router import Route, Router
from keyrouter.rules import HandlerEntry, RulesError, load_rules
from keyrouter.service import add_run_flags
from keyrouter.settings import Settings
from keyrouter.yamlpos import DEFAULT_MAX_BYTES

EXIT_OK, EXIT_DEAD_LETTERS, EXIT_BAD_INPUT = 0, 1, 2  # run's own codes: keyrouter.worker


def _load_router(rules_path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Router | None:
    try:
        rules = load_rules(rules_path, max_bytes)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    for warning in rules.warnings:
        print(warning, file=sys.stderr)
    return Router(rules)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    router = _load_router(settings.rules, settings.rules_max_bytes)
    if router is None:
        return EXIT_BAD_INPUT
    failures, count = check_examples(router)
    for problem in failures:
        print(problem, file=sys.stderr)
    if failures:
        return EXIT_BAD_INPUT
    print(f"{settings.rules}: {len(router.rules.rules)} rules valid, {count} examples hold")
    return EXIT_OK


def entry_json(entry: HandlerEntry) -> Any:
    if entry.timeout is not None:  # as written in a rules file: the name, then `timeout`
        return {entry.name: dict(entry.params) or None, "timeout": entry.timeout}
    return {entry.name: dict(entry.params)} if entry.params else entry.name


def route_json(text: str, route: Route) -> dict[str, Any]:
    m = route.match
    return {
        "text": text,
        "normalized": route.normalized,
        "rule": m.rule if m else None,
        "keyword": m.keyword if m else None,
        "captures": m.captures if m else {},
        "fuzzy": m.fuzzy if m else False,
        "priority": route.rule.priority if route.rule else "normal",
        "handlers": [entry_json(e) for e in route.handlers],
    }


def _entry_text(entry: HandlerEntry) -> str:
    return f"{entry.name} (timeout {entry.timeout:g}s)" if entry.timeout is not None else entry.name


def describe(text: str, route: Route, router: Router) -> str:
    normalizer = route.rule.normalizer if route.rule else router.normalizer
    lines = [repr(text)]
    previous = text
    for name, value in normalizer.steps(text):
        if value != previous:
            lines.append(f"  {name + ':':36} {value!r}")
        previous = value
    lines.append(f"  {'normalized:':36} {route.normalized!r}")
    m, rule = route.match, route.rule
    if m is None or rule is None:
        handlers = ", ".join(map(_entry_text, route.handlers)) or "none (no default configured)"
        lines.append(f"  -> no rule matched; default handlers: {handlers}")
        return "\n".join(lines)
    why = {
        "exact": f"exact keyword {m.keyword!r}",
        "first_word": f"first word(s) are keyword {m.keyword!r}",
        "pattern": f"pattern {rule.pattern.pattern if rule.pattern else ''!r}",
        "fuzzy": f"fuzzy match of keyword {m.keyword!r} at distance {m.distance}",
    }[m.how]
    lines.append(f"  -> rule {m.rule!r} ({rule.where}): {why}")
    if m.captures:
        lines.append(f"     captures: {m.captures}")
    lines.append(f"     priority: {rule.priority}")
    lines.append(f"     handlers: {', '.join(map(_entry_text, route.handlers))}")
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    router = _load_router(settings.rules, settings.rules_max_bytes)
    if router is None:
        return EXIT_BAD_INPUT
    for text in args.texts:
        route = router.route(text, args.receiver)
        if args.json:
            print(json.dumps(route_json(text, route), ensure_ascii=False))
        else:
            print(describe(text, route, router))
    return EXIT_OK


def _bad_config(message: str) -> int:
    print(f"keyrouter: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _with_runtime(settings: Settings, router: Router | None,
                  body: Callable[[Any, asyncio.Event], Awaitable[int]], *, client: Any = None,
                  signals: bool = False, events: Any = None) -> int:
    """Open the runtime, run `body(runtime, stopping)`, close everything; config errors -> 2."""
    from keyrouter import shutdown
    from keyrouter.runtime import open_runtime

    async def main() -> int:
        stopping = asyncio.Event()
        if signals:
            shutdown.install(stopping)
        extra = {"events": events} if events is not None else {}
        async with open_runtime(settings, router=router, stopping=stopping, client=client,
                                **extra) as runtime:
            return await body(runtime, stopping)

    try:
        return asyncio.run(main())
    except ValueError as exc:  # store URL, horizon
        return _bad_config(str(exc))


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from keyrouter import service, worker

    if settings.api_key is None or settings.api_hash is None:
        return _bad_config("`run` needs ILETIMERKEZI_API_KEY and ILETIMERKEZI_API_HASH (from the panel: "
                           "Settings → Security → API Access)")
    router = _load_router(settings.rules, settings.rules_max_bytes)
    if router is None:
        return EXIT_BAD_INPUT

    try:
        metrics, listener = service.make_metrics(args, settings, args.interval)
    except ValueError as exc:
        return _bad_config(str(exc))

    async def body(runtime: Any, stopping: asyncio.Event) -> int:
        async with service.operating(runtime, stopping, metrics=metrics, listener=listener,
                                     watch=args.watch, interval=args.interval):
            return await worker.run(runtime, stopping, once=args.once, interval=args.interval)

    return _with_runtime(settings, router, body, signals=True, events=metrics)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from keyrouter.replay import progress_bar, replay
    from keyrouter.sources import InputError, parse_rows, read_rows

    router = _load_router(settings.rules, settings.rules_max_bytes)
    if router is None:
        return EXIT_BAD_INPUT
    try:
        messages = list(parse_rows(read_rows(args.file)))
    except InputError as exc:
        return _bad_config(str(exc))
    if args.dry_run:
        for m in messages:
            route = router.route(m.text, m.receiver)
            print(json.dumps({"id": m.id, **route_json(m.text, route)}, ensure_ascii=False))
        return EXIT_OK
    sandbox = None
    if args.sandbox:
        from keyrouter.client import IletiMerkezi
        from keyrouter.testing import FakeIletiMerkezi

        sandbox = FakeIletiMerkezi().start()
        settings = settings.model_copy(update={"sender": settings.sender or "KEYROUTER"})
        settings, iys_sandbox = _iys_sandbox(settings)
    show = progress_bar(sys.stderr) if sys.stderr.isatty() and len(messages) > 1000 else None

    async def body(runtime: Any, stopping: asyncio.Event) -> int:
        report, dead = await replay(runtime, messages, stopping, show)
        print(f"{len(messages)} messages: {report.done} done, {report.skipped} skipped, "
              f"{len(dead)} in dead letters")
        for message_id in dead:
            print(f"  dead letter: {message_id}  (keyrouter dead-letters list)")
        return EXIT_DEAD_LETTERS if dead else EXIT_OK

    try:
        client = None
        if sandbox is not None:
            client = IletiMerkezi(sandbox.key, sandbox.hash, base_url=sandbox.base_url)
        code = _with_runtime(settings, router, body, client=client, signals=True)
        if sandbox is not None:
            print(f"sandbox provider: {len(sandbox.sent)} SMS sent, "
                  f"{len(sandbox.blacklist)} numbers on the blacklist")
            print(f"sandbox İYS: {len(iys_sandbox.records)} consent records")
        return code
    finally:
        if sandbox is not None:
            sandbox.stop()
            iys_sandbox.stop()


def _iys_sandbox(settings: Settings) -> tuple[Settings, Any]:
    """`replay --sandbox`: a local fake İYS for rules that use `iys`."""
    from pydantic import SecretStr

    from keyrouter.testing_iys import FakeIys

    fake = FakeIys().start()
    values = {**fake.settings(), "iys_password": SecretStr(fake.password)}
    return settings.model_copy(update=values), fake


def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    async def body(store: Any) -> int:
        if args.action == "list":
            for d in await store.dead_letters():
                when = datetime.fromtimestamp(d.failed_at, UTC).isoformat(timespec="seconds")
                if args.json:
                    print(json.dumps({"id": d.id, "rule": d.rule, "attempts": d.attempts,
                                      "failed_at": when, "error": d.error}, ensure_ascii=False))
                else:
                    print(f"{d.id}\t{when}\trule={d.rule}\tattempts={d.attempts}\t{d.error}")
            return EXIT_OK
        ids = [d.id for d in await store.dead_letters()] if args.all else args.ids
        if not ids:
            return _bad_config("give dead letter ids, or --all")
        change = store.retry_dead if args.action == "retry" else store.drop_dead
        missing = [i for i in ids if not await change(i)]
        for i in missing:
            print(f"keyrouter: {i}: not a dead letter", file=sys.stderr)
        verb = "will run again at the next poll or replay" if args.action == "retry" else "dropped"
        print(f"{len(ids) - len(missing)} dead letters {verb}")
        return EXIT_BAD_INPUT if missing else EXIT_OK

    return _with_store(settings, body)


def _with_store(settings: Settings, body: Callable[[Any], Awaitable[int]]) -> int:
    from keyrouter.store import open_store

    async def act() -> int:
        async with open_store(settings.store, settings.namespace, settings.horizon_delta()) as store:
            return await body(store)

    try:
        return asyncio.run(act())
    except ValueError as exc:
        return _bad_config(str(exc))


def cmd_survey(args: argparse.Namespace, settings: Settings) -> int:
    from keyrouter import reports

    async def body(store: Any) -> int:
        results = await store.survey_results(args.id)
        if args.format == "json":
            print(json.dumps(reports.survey_dict(results), ensure_ascii=False))
        elif args.format == "csv":
            sys.stdout.write(reports.survey_csv(results))
        else:
            print(reports.survey_table(results))
        return EXIT_OK

    return _with_store(settings, body)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyrouter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def rules_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rules", help="rules file or folder (env KEYROUTER_RULES, default ./rules)")

    p = sub.add_parser("check", help="validate the rules and run their examples")
    rules_flag(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("explain", help="show how texts normalize and route")
    rules_flag(p)
    p.add_argument("--receiver", help="the receiving number or short code")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.set_defaults(func=cmd_explain)

    def store_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help="store URL (env KEYROUTER_STORE, default sqlite:///keyrouter.sqlite3)")

    p = sub.add_parser("run", help="the worker: poll get-inbox, process, repeat")
    rules_flag(p)
    store_flag(p)
    p.add_argument("--once", action="store_true", help="one poll, then exit (for cron and tests)")
    p.add_argument("--interval", type=float, default=15.0, help="seconds between polls (default 15)")
    add_run_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replay", help="run a saved get-inbox answer or JSON-lines file through the pipeline")
    p.add_argument("file", metavar="FILE")
    rules_flag(p)
    store_flag(p)
    p.add_argument("--dry-run", action="store_true", help="route and print; no handlers, no store")
    p.add_argument("--sandbox", action="store_true",
                   help="send provider calls (replies, blacklist) to a local fake provider")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("dead-letters", help="list, retry or drop dead letters")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("list")
    store_flag(q)
    q.add_argument("--json", action="store_true")
    for name in ("retry", "drop"):
        q = actions.add_parser(name)
        store_flag(q)
        q.add_argument("ids", nargs="*", metavar="ID")
        q.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_dead_letters)

    from keyrouter import ledger_cli

    ledger_cli.add_parser(sub)  # optouts export|stats|overdue

    doctor.add_parser(sub)

    p = sub.add_parser("survey", help="survey results")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("results")
    store_flag(q)
    q.add_argument("id", metavar="ID")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_survey)

    from keyrouter.web.cli import add_parser as add_dashboard  # imports no web library

    add_dashboard(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging()
    except LogConfigError as exc:
        return _bad_config(str(exc))
    try:
        settings = Settings.from_env(rules=getattr(args, "rules", None), store=getattr(args, "store", None))
        settings.horizon_delta()
    except (ValidationError, ValueError) as exc:
        return _bad_config(f"invalid settings: {exc}")
    return int(args.func(args, settings))


if __name__ == "__main__":
    sys.exit(main())
