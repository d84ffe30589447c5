"""The event loop of the worker and of `replay`: uvloop when the `fast` extra installed it
(`pip install 'keyrouter[fast]'`), else asyncio's own loop with timer waits to the microsecond
(on Linux).  Nothing else changes with it (docs/design.md, "Why it is fast")."""

from __future__ import annotations

import asyncio
import select
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class MicrosecondEpoll(selectors.EpollSelector):
    """asyncio's epoll selector waits in whole milliseconds (epoll_wait's unit, rounded up), so
    each timer fires up to a millisecond late, half a millisecond on average: a 10 ms wait takes
    10.5.  This one waits on the epoll descriptor itself with select(), whose timeout is in
    microseconds, and then collects the ready events without waiting: the same events, one
    system call more per wait."""

    def __init__(self) -> None:
        super().__init__()
        self._precise = True

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0 and self._precise:
            try:
                select.select([self.fileno()], [], [], timeout)
            except ValueError:  # a descriptor past select()'s FD_SETSIZE: epoll's own wait
                self._precise = False
            else:
                timeout = 0
        return super().select(timeout)


def microsecond_loop() -> asyncio.AbstractEventLoop:
    """asyncio's loop on a MicrosecondEpoll selector."""
    return asyncio.SelectorEventLoop(MicrosecondEpoll())


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor when it is installed, else `microsecond_loop` where epoll is
    (Linux), else None (asyncio's default loop)."""
    try:
        import uvloop  # noqa: PLC0415  (an optional extra: keyrouter[fast])
    except ImportError:
        return microsecond_loop if hasattr(selectors, "EpollSelector") else None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the fastest loop installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
