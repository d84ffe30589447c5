"""What every command module shares: exit codes, the expected-failure exception, common flags,
loading the rules and opening the store.  Command modules (`cli_*.py`, `doctor.py`...) each have
`add_parser(subparsers)` and `cmd_x(args, settings) -> int`; keyrouter.cli registers them."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from keyrouter.rules.model import RulesError
from keyrouter.rules.router import Router
from keyrouter.settings import Settings
from keyrouter.store import open_store
from keyrouter.store.choice import StoreChoiceError, reading_store, require_existing
from keyrouter.worker.reload import build_router

#: Exit codes shared by every command (run's own are the same numbers: keyrouter.worker.loop).
EXIT_OK, EXIT_DEAD_LETTERS, EXIT_BAD_INPUT, EXIT_AUTH, EXIT_UNREACHABLE = 0, 1, 2, 3, 4

DEFAULT_STORE = Settings.model_fields["store"].default


class CliError(Exception):
    """An expected failure: one line for a person (printed as `keyrouter: ...`) and an exit code.
    Raise it anywhere under a command; keyrouter.cli.errors prints it, never a traceback.  An
    empty message means the command already printed what was wrong."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def command(sub: Any, name: str, summary: str, example: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A sub-command (or action) with a one-line description and examples in its help."""
    return cast(argparse.ArgumentParser, sub.add_parser(
        name, help=summary, description=summary[:1].upper() + summary[1:] + ".",
        epilog="example:\n" + textwrap.indent(example.strip("\n"), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs,
    ))


def rules_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", help="rules file or folder (env KEYROUTER_RULES, default ./rules)")


def store_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help=f"store URL (env KEYROUTER_STORE, default {DEFAULT_STORE})")


def store_setting(args: argparse.Namespace) -> str:
    """Where the store URL came from, to name it in an error."""
    if getattr(args, "store", None):
        return "--store"
    if os.environ.get("KEYROUTER_STORE"):
        return "KEYROUTER_STORE"
    return f"KEYROUTER_STORE or --store (the default is {DEFAULT_STORE})"


def rules_setting(args: argparse.Namespace) -> str:
    if getattr(args, "rules", None):
        return "--rules"
    if os.environ.get("KEYROUTER_RULES"):
        return "KEYROUTER_RULES"
    return "give --rules PATH or set KEYROUTER_RULES (the default is ./rules)"


def load_router(args: argparse.Namespace, settings: Settings, *, runnable: bool = False,
                cached: bool = False) -> Router:
    """The rules as a Router; a missing path or invalid rules are a CliError after printing each
    problem (`file:line: problem`), warnings are printed and pass.  `runnable` (check, run,
    replay): rules with no rule and no default are an error too, as they would mark every
    message done with nothing run.  `cached` (run): through the compiled-rules cache
    (KEYROUTER_RULES_CACHE), which only ever holds rules that loaded without an error."""
    if not Path(settings.rules).exists():
        where = rules_setting(args)
        fix = where if where.startswith("give") else f"check {where}"
        raise CliError(f"rules: {settings.rules} does not exist: {fix} "
                       "(a YAML file, or a folder of them)")
    try:
        router = build_router(settings.rules, settings.rules_max_bytes,
                              settings.rules_cache_dir() if cached else None)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise CliError("", EXIT_BAD_INPUT) from None  # already said, one line a problem
    rules = router.rules
    for warning in rules.warnings:
        print(warning, file=sys.stderr)
    if runnable and not rules.rules and not rules.default:
        raise CliError(f"rules: {settings.rules} has no rule and no `default:`: every message would "
                       "be marked done with nothing run; add a rule under `rules:` or a `default:`")
    return router


def read_store(args: argparse.Namespace, settings: Settings, *, must_exist: bool = True) -> Settings:
    """The settings of a command that reads the store: `--sandbox` chooses the sandbox's store,
    and (`must_exist`) a missing SQLite file is a CliError naming the store, never an empty new
    one."""

    try:
        settings = reading_store(args, settings)
        if must_exist:
            require_existing(args, settings)
    except StoreChoiceError as exc:
        raise CliError(str(exc)) from None
    return settings


def with_store(settings: Settings, body: Callable[[Any], Awaitable[int]]) -> int:
    """Open the store, run `body(store)`, close it.  Store failures reach keyrouter.cli.errors."""

    async def act() -> int:
        async with open_store(settings.store, settings.namespace, settings.horizon_delta()) as store:
            return await body(store)

    try:
        return asyncio.run(act())
    except CliError:
        raise
    except ValueError as exc:  # the store URL
        raise CliError(str(exc)) from None
