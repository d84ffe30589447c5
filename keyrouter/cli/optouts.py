"""`keyrouter optouts export|stats|overdue`: the opt-out ledger, as the regulator and on-call read it.

- `export [--since DATE] [--format csv|jsonl|iys]`: the ledger with deadline and İYS columns, or
  İYS consent records (one JSON object a line) for bulk upload;
- `stats [--since DATE]`: counts and delays, then per effect (provider blacklist, İYS): handled
  within the deadline, late, pending, and the business hours the closest pending one has left;
- `overdue [--within DURATION] [--full]`: pending opt-outs past their deadline, or due within
  DURATION; exit 1 when there is any (cron, monitoring), 0 when none;
- `reconcile [--dry-run] [--incremental]`: the provider's blacklist against the ledger
  (keyrouter.reconcile_cli).

Which rules are opt-outs (for dead letters that never reached the opt-out entry) comes from the
rules (`--rules`, KEYROUTER_RULES); unreadable rules only narrow that, with a warning.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from keyrouter import timefmt
from keyrouter.cli import reconcile as reconcile_cli
from keyrouter.cli.common import DEFAULT_STORE, command, read_store, with_store
from keyrouter.compliance import exports, reports
from keyrouter.compliance import overdue as compliance
from keyrouter.compliance.overdue import effects_of_rules
from keyrouter.durations import parse_duration
from keyrouter.masking import mask_number
from keyrouter.message import parse_date
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError
from keyrouter.rules.router import Router
from keyrouter.settings import Settings
from keyrouter.store.choice import read_flags

__all__ = ["add_parser", "cmd_optouts"]

EXIT_OK, EXIT_SOME, EXIT_BAD_INPUT, EXIT_STORE = 0, 1, 2, 4
#: The moment commands judge deadlines at; tests move it.
CLOCK: Callable[[], float] = time.time


def add_parser(sub: Any) -> None:
    """Register `optouts` and its actions on the top-level subparsers."""

    p = command(sub, "optouts", "the opt-out ledger: export it, deadlines, overdue opt-outs",
                "keyrouter optouts export --since 2026-11-01 > optouts.csv\nkeyrouter optouts overdue")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        read_flags(q, DEFAULT_STORE)
        q.add_argument("--rules", help="rules file or folder: which rules are opt-outs (env KEYROUTER_RULES)")

    q = command(actions, "export", "the ledger as CSV or JSON lines, or İYS consent records",
                "keyrouter optouts export --format jsonl --since 2026-11-01")
    common(q)
    q.add_argument("--since", help="received on or after this date (Turkey time unless an offset is given)")
    q.add_argument("--format", choices=("csv", "jsonl", "iys"), default="csv")
    q = command(actions, "stats", "counts, delays, and deadlines met per effect",
                "keyrouter optouts stats --since 2026-11-01")
    common(q)
    q.add_argument("--since")
    q = command(actions, "overdue", "pending opt-outs past or near their deadline (exit 1 when any)",
                "keyrouter optouts overdue --within 1d")
    common(q)
    q.add_argument("--within", default="0s", metavar="DURATION",
                   help="also list those due within DURATION (e.g. 1d, 12h); default: only overdue")
    q.add_argument("--full", action="store_true", help="show whole numbers (masked by default)")
    q = command(actions, "reconcile", "the provider's blacklist against the ledger (exit 0 agree, "
                "1 something left reported)", "keyrouter optouts reconcile --dry-run")
    common(q)
    reconcile_cli.add_arguments(q)
    p.set_defaults(func=cmd_optouts)


def _fail(message: str, code: int) -> int:
    print(f"keyrouter: {message}", file=sys.stderr)
    return code


def _since(text: str | None) -> float | None:
    if not text:
        return None
    parsed = parse_date(text)
    if parsed is None:
        raise ValueError(text)
    return parsed.timestamp()


def _rules(settings: Settings) -> tuple[dict[str, tuple[str, ...]] | None, Any]:
    """The opt-out effects per rule name and a Router, or (None, None) with a warning."""

    try:
        rules = load_rules(settings.rules, handlers=False)
    except (RulesError, OSError) as exc:
        first = exc.problems[0] if isinstance(exc, RulesError) and exc.problems else exc
        print(f"keyrouter: warning: rules {settings.rules} not readable ({first}); dead letters "
              "count as pending opt-outs only where their handler had started", file=sys.stderr)
        return None, None
    return effects_of_rules(rules), Router(rules)


def cmd_optouts(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "reconcile":
        return reconcile_cli.cmd_reconcile(args, settings)
    settings = read_store(args, settings)
    try:
        since = _since(getattr(args, "since", None))
    except ValueError:
        return _fail(f"--since {args.since!r}: give a date, e.g. 2026-11-01 or 2026-11-01T09:00",
                     EXIT_BAD_INPUT)
    within = 0.0
    if args.action == "overdue":
        try:
            within = parse_duration(args.within).total_seconds()
        except ValueError as exc:
            return _fail(f"--within: {exc}", EXIT_BAD_INPUT)
    effects, router = _rules(settings) if args.action != "export" else (None, None)

    async def body(store: Any) -> int:
        if args.action == "export":
            return await _export(store, args.format, since, settings.reconcile_iys_source)
        if args.action == "stats":
            return await _stats(store, effects, router, since)
        return await _overdue(store, effects, router, within, args.full)

    return _with_store(settings, body)


def _with_store(settings: Settings, body: Callable[[Any], Awaitable[int]]) -> int:
    """The store under the CLI's one error layer (keyrouter.cli.errors): unreachable is exit 4,
    naming the cause and the setting to fix."""

    return with_store(settings, body)


async def _export(store: Any, fmt: str, since: float | None, provider_source: str) -> int:
    """Full numbers: the export is for the CRM, İYS and the regulator
    (keyrouter.compliance.exports)."""
    entries = await store.optouts(since)
    if fmt == "iys":
        sys.stdout.writelines(exports.iys_records(entries, provider_source=provider_source))
    elif fmt == "csv":
        sys.stdout.write(exports.ledger_csv(entries, full_numbers=True))
    else:
        sys.stdout.writelines(exports.ledger_jsonl(entries, full_numbers=True))
    return EXIT_OK


def _hours(hours: float) -> str:
    return f"{hours:.1f} business hours left" if hours >= 0 else f"{-hours:.1f} business hours overdue"


async def _stats(store: Any, effects: dict[str, tuple[str, ...]] | None, router: Any,
                 since: float | None) -> int:
    entries = await store.optouts(since)
    print(reports.ledger_stats_text(reports.ledger_stats(entries)))
    cases = [c for c in await compliance.collect(store, effects, router=router)
             if since is None or c.received_at >= since]
    now = CLOCK()
    print("deadline: three Turkish business days (docs/compliance.md, Deadlines)")
    for effect, s in compliance.summary(cases, now).items():
        closest = s["closest_hours_left"]
        tail = f"; closest: {_hours(closest)}" if closest is not None else ""
        overdue = f" ({s['overdue']} overdue)" if s["overdue"] else ""
        print(f"  {compliance.EFFECTS[effect]}: {s['on_time']} within deadline, {s['late']} late, "
              f"{s['pending']} pending{overdue}{tail}")
    return EXIT_OK


async def _overdue(store: Any, effects: dict[str, tuple[str, ...]] | None, router: Any, within: float,
                   full: bool) -> int:
    now = CLOCK()
    cases = [c for c in await compliance.collect(store, effects, router=router, pending_only=True)
             if c.deadline <= now + within]
    cases.sort(key=lambda c: c.deadline)
    for c in cases:
        number = (c.number if full else mask_number(c.number)) if c.number else "(no mobile number)"
        label = "OVERDUE" if c.deadline <= now else "DUE"
        print(f"{label}\t{compliance.EFFECTS[c.effect]}\t{number}\tmessage {c.message_id}\t"
              f"received {timefmt.minute(c.received_at)}\t"
              f"deadline {timefmt.minute(c.deadline)} (Turkey time)\t"
              f"{_hours(c.hours_left(now))}\t{c.where}")
    late = sum(c.deadline <= now for c in cases)
    if cases:
        print(f"{len(cases)} pending opt-outs: {late} overdue, {len(cases) - late} due soon", file=sys.stderr)
    else:
        print("none overdue" + (" or due within --within" if within else ""), file=sys.stderr)
    return EXIT_SOME if cases else EXIT_OK
