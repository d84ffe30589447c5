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
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from keyrouter.events import Events

logger = logging.getLogger("keyrouter.dispatch")

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


def first_step(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run an async handler's coroutine up to its first wait, in the caller: (True, its result)
    when it finished without waiting (a handler that only decides something: no watch, no
    timer), else (False, what it waits for), to hand to `Limits.resume`.  Its exception is
    raised as the handler's."""
    try:
        return False, coro.send(None)
    except StopIteration as done:
        return True, done.value


class _Resumed:
    """Awaiting it goes on with a coroutine whose first step ran by hand (`first_step`): what
    `yield from` would do after that step, each wait and each exception passed through."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro, self._pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, or what the task throws in
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as done:
                    return done.value


class Watchdog:
    """One periodic check for every running entry, cheaper on the hot path than a timer per
    call: an entry past its deadline has its task cancelled (and knows it was the limit).  A
    watch is one dict entry (task -> deadline), nothing built per call."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # monotonic
        self._calls: dict[asyncio.Task[Any], tuple[_Call, float]] = {}  # thread calls, their limit
        self._fired: set[asyncio.Task[Any]] = set()

    def watch(self, task: asyncio.Task[Any], deadline: float) -> None:
        """Cancel `task` at `deadline` (time.monotonic())."""
        self._deadlines[task] = deadline

    def watch_call(self, task: asyncio.Task[Any], limit: float, call: _Call) -> None:
        """A thread call's clock starts when a thread takes it."""
        self._calls[task] = (call, limit)

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._deadlines.pop(task, None)
        self._calls.pop(task, None)

    def fired(self, task: asyncio.Task[Any]) -> bool:
        """Whether the task's cancellation was its limit (not a stop's): if so, swallow it."""
        if task not in self._fired:
            return False
        self._fired.discard(task)
        task.uncancel()
        return True

    def expired(self, now: float) -> list[asyncio.Task[Any]]:
        late = [t for t, deadline in self._deadlines.items() if deadline <= now]
        late += [t for t, (call, limit) in self._calls.items()
                 if call.started_at is not None and call.started_at + limit <= now]
        return [t for t in late if t not in self._fired]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            if not self._deadlines and not self._calls:
                continue
            for task in self.expired(time.monotonic()):
                self._fired.add(task)
                task.cancel()


class Limits:
    """Time limits of running entries, and the thread pool of plain `def` handlers: the
    dispatcher's runner calls handlers through it.  Past `max_abandoned` stuck threads it asks
    for a restart (`restart()`, the dispatcher's stop)."""

    def __init__(self, threads: int, max_abandoned: int, events: Events,
                 restart: Callable[[], None]) -> None:
        self.size, self.max_abandoned, self.events = threads, max_abandoned, events
        self._restart = restart
        self.watchdog = Watchdog()
        self._pool: Threads | None = None
        self.restart_needed = False  # too many stuck threads: the worker exits for a restart

    @property
    def pool(self) -> Threads:
        if self._pool is None:
            self._pool = Threads(self.size)
        return self._pool

    def stuck(self) -> int:
        """Plain `def` handler threads abandoned past their limit and still running."""
        return self._pool.stuck() if self._pool is not None else 0

    def resume(self, coro: Coroutine[Any, Any, Any], pending: Any, started: float,
               limit: float) -> Coroutine[Any, Any, Any]:
        """Go on with an async handler's coroutine that its first step (run by the caller, see
        `first_step`) left waiting for `pending`; cancelled `limit` seconds after `started`
        (time.monotonic()).  A plain function returning the watched coroutine: awaiting it is
        one coroutine less a message."""
        return self._watched(_Resumed(coro, pending), started + limit, limit)

    def run_async(self, awaitable: Awaitable[Any], limit: float) -> Coroutine[Any, Any, Any]:
        """An async handler's coroutine, cancelled at the limit."""
        return self._watched(awaitable, time.monotonic() + limit, limit)

    async def _watched(self, awaitable: Awaitable[Any], deadline: float, limit: float) -> Any:
        """`awaitable`, cancelled at `deadline` (time.monotonic()); the error names `limit`."""
        task = asyncio.current_task()
        assert task is not None
        watchdog = self.watchdog
        watchdog.watch(task, deadline)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not watchdog.fired(task):
                raise
            raise HandlerTimeout(f"ran longer than its {limit:g}s time limit (cancelled)") from None
        finally:
            watchdog.forget(task)

    async def run_in_thread(self, limit: float, handler: str, func: Callable[..., Any],
                            *args: Any) -> Any:
        """`func(*args)` in the pool; HandlerTimeout once it has run `limit` seconds (its thread
        is then abandoned)."""
        task = asyncio.current_task()
        assert task is not None
        pool, watchdog = self.pool, self.watchdog
        call = pool.submit(func, *args)
        watchdog.watch_call(task, limit, call)
        try:
            return await asyncio.shield(call.future)
        except asyncio.CancelledError:
            if not watchdog.fired(task):
                raise
            pool.abandon(call)
            self._abandoned(handler)
            raise HandlerTimeout(f"ran longer than its {limit:g}s time limit (its thread was "
                                 "abandoned)") from None
        finally:
            watchdog.forget(task)

    def _abandoned(self, handler: str) -> None:
        """A plain `def` handler's thread passed its limit and was left running."""
        self.events.handler_abandoned(handler)
        stuck = self.pool.stuck()
        logger.error("handler %s passed its time limit; its thread is abandoned (%d stuck)",
                     handler, stuck)
        if stuck > self.max_abandoned and not self.restart_needed:
            self.restart_needed = True
            logger.error("%d handler threads are stuck past their time limits "
                         "(KEYROUTER_MAX_ABANDONED=%d): stopping so the supervisor restarts the "
                         "worker", stuck, self.max_abandoned)
            self._restart()

    def close(self) -> None:
        """Let idle handler threads end; a stuck one is a daemon and never holds up the exit."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
