"""A saved inbox through the whole pipeline, retries included, until every message is finished."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from keyrouter.dispatch import Report
from keyrouter.message import Message
from keyrouter.worker.loop import sleep_unless_stopped
from keyrouter.worker.runtime import Runtime

PROGRESS_EVERY = 0.1  # seconds between progress calls


async def replay(runtime: Runtime, messages: Sequence[Message], stopping: asyncio.Event,
                 progress: Callable[[int, int], None] | None = None) -> tuple[Report, list[str]]:
    """Stream `messages` through the dispatcher (all offered at once: a slot never waits for a
    chunk to end), each running as soon as a slot is free and its sender's earlier message is
    finished; retries run when due.  Returns the summed report and the ids of these messages in
    the dead letters.  `progress(done, total)` is called at most every 100 ms and at the end;
    after a stop it is not called again (messages given back unstarted are not progress)."""
    dispatcher = runtime.dispatcher
    total = len(messages)
    last = [0.0]

    def settled(n: int) -> None:
        now = time.monotonic()
        if progress is not None and not stopping.is_set() and (
                n >= total or now - last[0] >= PROGRESS_EVERY):
            last[0] = now
            progress(n, total)

    finished = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(finished))
    await asyncio.sleep(0)  # let the loop start, so process() below waits on it
    try:
        report = await dispatcher.process(messages, progress=settled)
        if progress is not None and not stopping.is_set() and report.seen - report.ignored < total:
            # duplicates, horizon: they settle without running
            progress(total, total)
        ids = [m.id for m in messages if not dispatcher.beyond_horizon(m)]
        pause = min(1.0, runtime.settings.retry_base)
        # every one done, skipped or dead in the first pass: no need to ask the store again
        ended = report.done + report.skipped + report.dead == len(set(ids))
        while not stopping.is_set() and not ended:
            left = set(await runtime.store.unfinished(ids))
            if not left:
                break
            retried = await dispatcher.process([m for m in messages if m.id in left])
            report.add(replace(retried, seen=0, ignored=0, deferred=0))  # the first pass counted these
            if retried.deferred:  # held by another worker: give it time
                await sleep_unless_stopped(stopping, pause)
    finally:
        finished.set()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    dead = {d.id for d in await runtime.store.dead_letters()}
    return report, [i for i in dict.fromkeys(m.id for m in messages) if i in dead]
