"""The `keyrouter` command: the parser, logging set-up and the error layer; each command's code is
in its own module (cli_rules, cli_replay, cli_store, ...) with `add_parser(subparsers)`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from keyrouter.cli import doctor
from keyrouter.cli import optouts as ledger_cli
from keyrouter.cli import replay as cli_replay
from keyrouter.cli import rules as cli_rules
from keyrouter.cli import run as service
from keyrouter.cli import store as cli_store
from keyrouter.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_DEAD_LETTERS,
    EXIT_OK,
    CliError,
    command,
    load_router,
    rules_flag,
    store_flag,
)
from keyrouter.cli.dashboard import add_parser as add_dashboard
from keyrouter.cli.errors import run_guarded, say
from keyrouter.cli.run import add_run_flags
from keyrouter.events import NO_EVENTS, Events
from keyrouter.ops.doctor_iys import check_iys, uses_iys
from keyrouter.ops.logs import LogConfigError, setup_logging
from keyrouter.settings import Settings
from keyrouter.worker import eventloop, shutdown
from keyrouter.worker import loop as worker
from keyrouter.worker.runtime import open_runtime

__all__ = ["EXIT_BAD_INPUT", "EXIT_DEAD_LETTERS", "EXIT_OK", "build_parser", "main"]

DESCRIPTION = """\
keyrouter reads the SMS your customers send to your iletiMerkezi numbers, matches each text
against keyword rules (YAML) and runs their handlers: blacklist, reply, webhook, survey vote or
your own code, once per message."""

EPILOG = """\
examples:
  keyrouter check                                   validate ./rules and run their examples
  keyrouter explain "ILT AHKTEST RET"               how a text routes
  keyrouter replay examples/inbox.json --sandbox --shift-dates
  keyrouter run                                     the worker (needs ILETIMERKEZI_API_KEY/HASH)

`keyrouter COMMAND --help` shows a command's options and an example. Exit codes: 0 ok,
1 dead letters left, 2 bad input or settings, 3 authentication refused, 4 store or provider
unreachable, 5 (run) stopped for a restart by its supervisor (handler threads stuck past their
time limits), 130 interrupted (Ctrl-C)."""


def package_version() -> str:
    try:
        return version("keyrouter")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.api_key is None or settings.api_hash is None:
        raise CliError("`run` needs ILETIMERKEZI_API_KEY and ILETIMERKEZI_API_HASH (from the panel: "
                       "Settings → Security → API Access)")
    router = load_router(args, settings, runnable=True, cached=True)
    refuse_bad_iys(settings, router)
    try:
        metrics, listener = service.make_metrics(args, settings, args.interval)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    async def main() -> int:
        stopping = asyncio.Event()
        shutdown.install(stopping)
        events: Events = metrics if metrics is not None else NO_EVENTS
        async with (
            open_runtime(settings, router=router, stopping=stopping, events=events) as runtime,
            service.operating(runtime, stopping, metrics=metrics, listener=listener,
                              watch=args.watch, interval=args.interval),
        ):
            return await worker.run(runtime, stopping, once=args.once, interval=args.interval)

    try:
        return eventloop.run(main())
    except ValueError as exc:  # the store URL, a missing SQLite folder
        raise CliError(str(exc)) from None


def refuse_bad_iys(settings: Settings, router: Any) -> None:
    """With an `iys` entry in the rules, the İYS set-up `keyrouter doctor` would fail stops `run`
    (exit 2, naming the variable); an İYS that does not answer only warns (the handler retries)."""
    if not uses_iys(router):
        return
    check = asyncio.run(check_iys(settings, router))
    if check.status == "fail":
        raise CliError(f"the rules use `iys` and the İYS set-up fails: {check.detail} "
                       f"(fix: {check.fix}; `keyrouter doctor` checks it)")
    if check.status == "warn":
        logging.getLogger("keyrouter").warning("%s", check.detail)


def _add_run(sub: Any) -> None:
    p = command(sub, "run", "the worker: poll get-inbox, process, repeat",
                "ILETIMERKEZI_API_KEY=... ILETIMERKEZI_API_HASH=... keyrouter run --store redis://localhost/0\n"
                "keyrouter run --once      # one poll, then exit (cron, health checks)")
    rules_flag(p)
    store_flag(p)
    p.add_argument("--once", action="store_true", help="one poll, then exit (for cron and tests)")
    p.add_argument("--interval", type=float, default=15.0, help="seconds between polls (default 15)")
    add_run_flags(p)
    p.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyrouter", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"keyrouter {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_rules.add_parser(sub)
    _add_run(sub)
    cli_replay.add_parser(sub)
    cli_store.add_parser(sub)  # dead-letters, survey
    ledger_cli.add_parser(sub)  # optouts export|stats|overdue
    doctor.add_parser(sub)


    add_dashboard(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging()  # KEYROUTER_LOG_LEVEL / KEYROUTER_LOG_FORMAT (keyrouter.ops.logs)
    except LogConfigError as exc:
        say(str(exc))
        return EXIT_BAD_INPUT
    return run_guarded(args.func, args)

