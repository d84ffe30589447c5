"""A saved inbox through the whole pipeline, retries included, until every message is finished."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

from keyrouter.dispatch import Report
from keyrouter.message import Message
from keyrouter.runtime import Runtime
from keyrouter.worker import sleep_unless_stopped

CHUNK = 1000


async def replay(runtime: Runtime, messages: Sequence[Message], stopping: asyncio.Event,
                 progress: Callable[[int, int], None] | None = None) -> tuple[Report, list[str]]:
    """Process `messages` (chunk by chunk), then keep taking due retries until none is left
    unfinished.  Returns the summed report and the ids of these messages in the dead letters."""
    report = Report()
    for start in range(0, len(messages), CHUNK):
        if stopping.is_set():
            break
        report.add(await runtime.dispatcher.process(messages[start : start + CHUNK]))
        if progress:
            progress(min(start + CHUNK, len(messages)), len(messages))
    ids = [m.id for m in messages if not runtime.dispatcher.beyond_horizon(m)]
    pause = min(1.0, runtime.settings.retry_base)
    while not stopping.is_set():
        left = set(await runtime.store.unfinished(ids))
        if not left:
            break
        await sleep_unless_stopped(stopping, pause)
        retried = await runtime.dispatcher.process([m for m in messages if m.id in left])
        report.add(replace(retried, seen=0, ignored=0, deferred=0))  # the first pass counted these
    dead = {d.id for d in await runtime.store.dead_letters()}
    return report, [i for i in dict.fromkeys(m.id for m in messages) if i in dead]


def progress_bar(stream: object) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="",
              file=stream, flush=True)  # type: ignore[call-overload]
        if done >= total:
            print(file=stream)  # type: ignore[call-overload]

    return show
