"""Handlers for keyrouter's own tests, referenced from rules as `recording:NAME`."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from typing import Any

from keyrouter.retries import PermanentError

CALLS: list[dict[str, Any]] = []
FAILS: dict[tuple[str, str], int] = {}  # (message id, tag) -> failures still to raise


def reset() -> None:
    """Forget what earlier tests recorded, planned or started (a test fixture calls it)."""
    CALLS.clear()
    FAILS.clear()
    STARTED.clear()


def _note(message: Any, match: Any, context: Any, kind: str) -> None:
    tag = context.params.get("tag", "")
    remaining = FAILS.get((message.id, tag), 0)
    if remaining:
        FAILS[(message.id, tag)] = remaining - 1
        raise RuntimeError(f"planned failure of {tag}")
    CALLS.append({"id": message.id, "tag": tag, "key": context.idempotency_key, "kind": kind,
                  "rule": context.rule, "attempt": context.attempt, "match": match,
                  "thread": threading.current_thread().name, "normalized": message.normalized})


def record(message: Any, match: Any, context: Any) -> None:
    _note(message, match, context, "sync")


async def arecord(message: Any, match: Any, context: Any) -> None:
    await asyncio.sleep(0)
    _note(message, match, context, "async")


async def noop(message: Any, match: Any, context: Any) -> None:
    return None


def sync_noop(message: Any, match: Any, context: Any) -> None:
    return None


def permanent(message: Any, match: Any, context: Any) -> None:
    raise PermanentError("this number can never be handled")


async def slow(message: Any, match: Any, context: Any) -> None:
    STARTED.append(message.id)
    await asyncio.sleep(float(context.params.get("seconds", 1)))
    _note(message, match, context, "slow")


STARTED: list[str] = []  # ids whose `slow` entry started (tests clear it)


def to_file(message: Any, match: Any, context: Any) -> None:
    """For tests across processes: a `start` line, an optional pause, an `end` line, each flushed
    to the file named by KEYROUTER_TEST_LOG, so a test can tell which entries were cut off."""
    path = os.environ["KEYROUTER_TEST_LOG"]
    tag = context.params.get("tag", "")
    line = f"{message.id}\t{tag}\t{context.idempotency_key}\t{os.getpid()}"
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"start\t{line}\n")
        log.flush()
        os.fsync(log.fileno())
    # KEYROUTER_TEST_SLEEP overrides the param: the same entry (same params, same keys) made quick
    time.sleep(float(os.environ.get("KEYROUTER_TEST_SLEEP", context.params.get("sleep", 0))))
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"end\t{line}\n")
        log.flush()
        os.fsync(log.fileno())


RUNNING: list[int] = [0]  # sync handlers running right now
MAX_RUNNING: list[int] = [0]


def sync_slow(message: Any, match: Any, context: Any) -> None:
    """A blocking handler: counts how many of it run at once."""
    RUNNING[0] += 1
    MAX_RUNNING[0] = max(MAX_RUNNING[0], RUNNING[0])
    try:
        time.sleep(float(context.params.get("seconds", 0.3)))
    finally:
        RUNNING[0] -= 1
    _note(message, match, context, "sync_slow")


RELEASE = threading.Event()  # set by a test to let `sync_hang` threads return


async def hang(message: Any, match: Any, context: Any) -> None:
    """Noted at its start, then never returns (until cancelled)."""
    _note(message, match, context, "hang")
    await asyncio.Event().wait()


def sync_hang(message: Any, match: Any, context: Any) -> None:
    """A blocking handler that never returns on its own (a test sets RELEASE when done)."""
    _note(message, match, context, "sync_hang")
    RELEASE.wait(120)


async def jitter(message: Any, match: Any, context: Any) -> None:
    """Returns after 0-3 ms, so completions come back in a shuffled order."""
    await asyncio.sleep(random.random() * 0.003)
    _note(message, match, context, "jitter")
