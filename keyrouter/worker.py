"""The poll loop: get-inbox, process, sleep; transient API errors back off, never kill it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3

import redis

from keyrouter.client import AuthenticationRefused, PermanentApiError, TransientApiError
from keyrouter.dispatch import Report
from keyrouter.runtime import Runtime
from keyrouter.sources import parse_rows

logger = logging.getLogger("keyrouter.worker")
EXIT_OK, EXIT_DEAD_LETTERS, EXIT_BAD_CONFIG, EXIT_AUTH, EXIT_POLL_FAILED = 0, 1, 2, 3, 4
#: Worth waiting out: the provider or the store is down or slow, not misconfigured.
TRANSIENT = (TransientApiError, redis.RedisError, sqlite3.OperationalError, OSError)
MAX_BACKOFF = 300.0


async def sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), max(0.0, seconds))


async def poll_once(runtime: Runtime) -> Report:
    """One get-inbox call through the pipeline.  Raises the client's errors."""
    assert runtime.client is not None
    inbox = await runtime.client.get_inbox()
    messages = list(parse_rows(inbox.rows))
    return await runtime.dispatcher.process(messages)


async def run(runtime: Runtime, stopping: asyncio.Event, *, once: bool = False,
              interval: float = 15.0) -> int:
    """Returns the exit code of `keyrouter run`."""
    failures = 0
    while not stopping.is_set():
        try:
            report = await poll_once(runtime)
        except AuthenticationRefused as exc:
            logger.error("%s", exc)
            return EXIT_AUTH
        except PermanentApiError as exc:  # e.g. a base URL that is not the API: retrying cannot help
            logger.error("get-inbox refused: %s (check ILETIMERKEZI_BASE_URL)", exc)
            return EXIT_BAD_CONFIG
        except TRANSIENT as exc:
            failures += 1
            delay = min(MAX_BACKOFF, interval * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
            what = "get-inbox failed" if isinstance(exc, TransientApiError) else "the store failed"
            logger.warning("%s (%s: %s); next try in %.0fs", what, type(exc).__name__, exc, delay)
            if once:
                return EXIT_POLL_FAILED
            await sleep_unless_stopped(stopping, delay)
            continue
        failures = 0
        if report.seen or report.dead or report.retrying:
            logger.info("poll: %d rows, %d done, %d skipped, %d retrying, %d dead, %d deferred",
                        report.seen, report.done, report.skipped, report.retrying, report.dead,
                        report.deferred)
        if once:
            return EXIT_DEAD_LETTERS if await runtime.store.dead_letters() else EXIT_OK
        await sleep_unless_stopped(stopping, interval * random.uniform(0.9, 1.1))
    logger.info("stopped cleanly")
    return EXIT_OK
