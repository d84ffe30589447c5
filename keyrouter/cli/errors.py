"""The error layer every command runs under: an expected failure is one line on stderr and an
exit code, never a traceback.

- CliError (raised by commands): its line and code.
- the store unreachable or unopenable (Redis refused, a db index the server lacks, an SQLite file
  in a read-only folder, a full disk): exit 4, naming the setting to fix (--store/KEYROUTER_STORE).
- bad settings: exit 2, naming the environment variable, never a pydantic field or a URL (the
  log settings are checked before, by keyrouter.ops.logs).
- the reader of our output went away (`... --json | head -3`): a quiet exit 0.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable

import redis
from pydantic import ValidationError

from keyrouter.cli.common import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNREACHABLE, CliError, store_setting
from keyrouter.settings import _ENV, Settings
from keyrouter.store.keys import check_namespace

#: Settings whose values are never echoed, even when they are wrong.
SECRET_FIELDS = frozenset({"api_key", "api_hash"}) | {
    f for f in _ENV if any(w in f for w in ("password", "secret", "token", "key", "hash"))}


def say(message: str) -> None:
    if message:
        print(f"keyrouter: {message}", file=sys.stderr)


def settings_problem(exc: ValidationError | ValueError) -> str:
    """One line naming the environment variable (or flag) of the first bad setting."""
    if not isinstance(exc, ValidationError):
        return f"KEYROUTER_HORIZON: {exc}"  # the one setting checked after validation
    lines = []
    for err in exc.errors(include_url=False):
        field = str(err["loc"][0]) if err.get("loc") else ""
        name = {"rules": "--rules/KEYROUTER_RULES", "store": "--store/KEYROUTER_STORE"}.get(
            field, _ENV.get(field, field))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
        shown = "" if field in SECRET_FIELDS else f"={str(err.get('input'))!r}"
        lines.append(f"{name}{shown}: {msg}")
    return "; ".join(lines)


def load_settings(args: argparse.Namespace) -> Settings:
    try:
        settings = Settings.from_env(rules=getattr(args, "rules", None),
                                     store=getattr(args, "store", None))
        settings.horizon_delta()
    except (ValidationError, ValueError) as exc:
        raise CliError(f"invalid setting: {settings_problem(exc)}") from None
    try:
        check_namespace(settings.namespace)
    except ValueError as exc:
        raise CliError(f"invalid setting: KEYROUTER_NAMESPACE: {exc}") from None
    return settings


def store_problem(exc: BaseException, args: argparse.Namespace, url: str = "") -> str | None:
    """One line for a store that cannot be reached or opened, or None when `exc` is not that.
    `url`: the store URL, whose path is named when it is SQLite (a Redis URL may hold a password)."""
    fix = f"(check {store_setting(args)})"
    path = url.partition(":///")[2] if url.startswith("sqlite:///") else ""
    store = f"the SQLite store {path}" if path else "the SQLite store"
    if isinstance(exc, redis.AuthenticationError):
        return f"the Redis store refused the credentials in the URL {fix}"
    if isinstance(exc, redis.ResponseError) and "DB index" in str(exc):
        return f"the Redis store has no such database number: {exc} {fix}"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"the Redis store is unreachable: {exc} {fix}"
    if isinstance(exc, redis.RedisError):
        return f"the Redis store failed: {type(exc).__name__}: {exc} {fix}"
    if isinstance(exc, sqlite3.DatabaseError):
        text = str(exc)
        if "readonly" in text or "read-only" in text:
            why = f"{store} is read-only here (the file or its folder is not writable)"
        elif "full" in text:
            why = f"{store} cannot be written: the disk is full"
        elif "unable to open" in text:
            why = f"{store} cannot be opened: {text} (is its folder writable?)"
        else:
            why = f"{store} failed: {text}"
        return f"{why} {fix}"
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _quiet_broken_pipe() -> int:
    """The reader closed the pipe: stop writing, and keep the interpreter's final flush quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_OK


def run_guarded(func: Callable[[argparse.Namespace, Settings], int],
                args: argparse.Namespace) -> int:
    """Settings, then the command, under the error layer."""
    url = ""
    try:
        settings = load_settings(args)
        url = settings.store
        return int(func(args, settings))
    except BaseException as exc:  # sorted below; unknown ones are re-raised
        leaves = _leaves(exc)
        if any(isinstance(e, BrokenPipeError) for e in leaves):
            return _quiet_broken_pipe()
        for leaf in leaves:
            if isinstance(leaf, CliError):
                say(str(leaf))
                return leaf.code
        for leaf in leaves:
            problem = store_problem(leaf, args, url)
            if problem:
                say(problem)
                return EXIT_UNREACHABLE
        if isinstance(exc, KeyboardInterrupt):
            return 130
        raise


__all__ = ["EXIT_BAD_INPUT", "load_settings", "run_guarded", "say", "store_problem"]
