"""Time limits that hold whatever the handler's kind.

An `async def` handler past its limit is cancelled.  A plain `def` handler runs in one of a fixed
number of daemon threads; Python cannot stop a thread, so one past its limit is *abandoned*: the
entry counts as failed at once, its slot goes to other messages, a fresh thread takes its place in
the pool, and the stuck one runs on (a retry may overlap it, with the same idempotency key) until
it returns or the process exits.  Abandoned threads are counted; past `max_abandoned` still
running, the dispatcher stops cleanly so a supervisor restarts the process (a daemon thread never
keeps a stopping process alive).  The limit of a thread call counts from the moment a thread starts
it, not while it waits for a free thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

NOT_STARTED = object()  # a queued call that a stop kept from starting


class HandlerTimeout(TimeoutError):
    """An entry ran past its time limit."""


class _Call:
    __slots__ = ("args", "func", "future", "loop", "started_at", "thread")

    def __init__(self, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop,
                 func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.future, self.loop, self.func, self.args = future, loop, func, args
        self.started_at: float | None = None  # time.monotonic() when a thread took it
        self.thread: threading.Thread | None = None


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Threads:
    """`size` daemon threads taking plain `def` handler calls from one queue."""

    def __init__(self, size: int, name: str = "keyrouter-handler") -> None:
        self.size, self.name = size, name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._count = 0
        self.abandoned_total = 0
        self.closed = False

    def submit(self, func: Callable[..., Any], *args: Any) -> _Call:
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future(), loop, func, args)
        self._calls.put(call)
        if len(self._threads) < self.size:
            self._start_thread()
        return call

    def _start_thread(self) -> None:
        with self._lock:
            self._count += 1
            thread = threading.Thread(target=self._work, name=f"{self.name}-{self._count}", daemon=True)
            self._threads.add(thread)
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while me not in self._abandoned:
            call = self._calls.get()
            if call is None:
                break
            call.thread, call.started_at = me, time.monotonic()
            result: Any = None
            error: BaseException | None = None
            try:
                result = call.func(*call.args)
            except BaseException as exc:  # handed to the event loop, which decides
                error = exc
            try:
                call.loop.call_soon_threadsafe(_resolve, call.future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                break
        with self._lock:
            self._threads.discard(me)

    def abandon(self, call: _Call) -> None:
        """Give up on a call whose thread is stuck: replace the thread in the pool."""
        thread = call.thread
        if thread is None or thread in self._abandoned:
            return
        with self._lock:
            self._abandoned.add(thread)
            self._threads.discard(thread)
            self.abandoned_total += 1
        if not self.closed and len(self._threads) < self.size:
            self._start_thread()

    def stuck(self) -> int:
        """Abandoned threads still running."""
        with self._lock:
            self._abandoned = {t for t in self._abandoned if t.is_alive()}
            return len(self._abandoned)

    def close(self) -> None:
        """Let idle threads end; never waits for a stuck one."""
        self.closed = True
        for _ in range(len(self._threads)):
            self._calls.put(None)


class _Watched:
    __slots__ = ("call", "fired", "limit", "started", "task")

    def __init__(self, task: asyncio.Task[Any], limit: float, call: _Call | None) -> None:
        self.task, self.limit, self.call = task, limit, call
        self.started = time.monotonic()
        self.fired = False

    def deadline(self) -> float:
        if self.call is None:
            return self.started + self.limit
        started = self.call.started_at  # a thread call's clock starts when a thread takes it
        return float("inf") if started is None else started + self.limit


class Watchdog:
    """One periodic check for every running entry, cheaper on the hot path than a timer per
    call: an entry past its deadline has its task cancelled (and knows it was the limit)."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self._watched: set[_Watched] = set()

    def watch(self, limit: float, call: _Call | None = None) -> _Watched:
        task = asyncio.current_task()
        assert task is not None
        watched = _Watched(task, limit, call)
        self._watched.add(watched)
        return watched

    def forget(self, watched: _Watched) -> None:
        self._watched.discard(watched)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            if not self._watched:
                continue
            now = time.monotonic()
            for watched in list(self._watched):
                if not watched.fired and watched.deadline() <= now:
                    watched.fired = True
                    watched.task.cancel()


def _limit_reached(watched: _Watched) -> bool:
    """Our own cancellation (not a stop's): swallow it."""
    if not watched.fired:
        return False
    watched.task.uncancel()
    return True


async def call_in_thread(threads: Threads, watchdog: Watchdog, limit: float,
                         on_abandon: Callable[[], None], func: Callable[..., Any], *args: Any) -> Any:
    """Run `func(*args)` in the pool; HandlerTimeout once it has run `limit` seconds (its thread
    is then abandoned)."""
    call = threads.submit(func, *args)
    watched = watchdog.watch(limit, call)
    try:
        return await asyncio.shield(call.future)
    except asyncio.CancelledError:
        if not _limit_reached(watched):
            raise
        threads.abandon(call)
        on_abandon()
        raise HandlerTimeout(f"ran longer than its {limit:g}s time limit (its thread was "
                             "abandoned)") from None
    finally:
        watchdog.forget(watched)


async def await_with_limit(awaitable: Awaitable[Any], watchdog: Watchdog, limit: float) -> Any:
    """An async handler's coroutine, cancelled at the limit."""
    watched = watchdog.watch(limit)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if not _limit_reached(watched):
            raise
        raise HandlerTimeout(f"ran longer than its {limit:g}s time limit (cancelled)") from None
    finally:
        watchdog.forget(watched)
