"""Messages -> handler effects, exactly once per namespace, as a stream.

`offer(messages)` adds messages to a local queue (routed at once, for their priority); `run()`
keeps `concurrency` slots busy: whenever one is free it claims the next heads of the queue (high
priority first; free slots plus a small prefetch, so several workers share a burst) and starts
each claimed message on its own (`running.py`).  No message waits for another sender's message;
a sender's messages start one after another in received order (`scheduling.py`).  Leases are
renewed in one round trip for everything held; progress and done markers are written in batches
(`writes.py`); time limits hold for every handler kind (`limits.py`).

`process(messages)` is `offer` plus waiting until each of those messages ran once or cannot run
this time (tests, replay, `keyrouter.testing`); without a `run()` loop it drives the loop itself.
A crash at any point repeats at most the entries that were running, with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from keyrouter.compliance.channels import is_provider_row, provider_route
from keyrouter.conversations.engine import Conversations
from keyrouter.dispatch.duplicates import note_duplicate
from keyrouter.dispatch.limits import NOT_STARTED, Threads, Watchdog
from keyrouter.dispatch.loop import ServeLoop
from keyrouter.dispatch.outcomes import DEFERRED, Report
from keyrouter.dispatch.running import run_message as run_claimed
from keyrouter.dispatch.scheduling import (
    HIGH,
    NORMAL,
    PRIORITY_NAMES,
    WAITING,
    Item,
    Queue,
    Waiter,
)
from keyrouter.dispatch.tally import Tally
from keyrouter.dispatch.writes import Writer
from keyrouter.events import NO_EVENTS, Events
from keyrouter.message import Message
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.retries import RetryPolicy
from keyrouter.rules import registry
from keyrouter.rules.router import Route, Router
from keyrouter.settings import Settings
from keyrouter.store.base import Store
from keyrouter.store.retried import is_retried_row

logger = logging.getLogger("keyrouter.dispatch")


@dataclass
class Dispatcher(ServeLoop):
    router: Router
    store: Store
    namespace: str = "default"
    client: IletiMerkezi | None = None  # for built-ins
    settings: Settings | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    lease: float = 60.0
    concurrency: int = 64  # messages running at once
    batch_size: int = 1000  # kept for callers; claims are sized by free slots instead
    handler_timeout: float = 300.0  # KEYROUTER_HANDLER_TIMEOUT; a rule's or entry's `timeout` wins
    flush_interval: float = 0.1  # seconds a done marker may wait to share a write
    horizon: timedelta | None = None
    threads: int = 16  # threads for plain `def` handlers
    clock: Callable[[], float] = time.time
    stopping: asyncio.Event | None = None
    owner: str = field(default_factory=lambda: secrets.token_hex(8))
    events: Events = NO_EVENTS
    shutdown_grace: float = 30.0  # KEYROUTER_SHUTDOWN_GRACE
    max_abandoned: int = 8  # KEYROUTER_MAX_ABANDONED
    #: claimed beyond free slots, at least (more at a fast pace: see loop.ServeLoop._wants);
    #: None: a quarter of concurrency, at most 32
    prefetch: int | None = None

    def __post_init__(self) -> None:
        self._handlers: dict[str, tuple[Callable[..., Any], bool]] = {}
        self._loggers: dict[str, logging.Logger] = {}
        self._check_handlers(self.router)  # fail at start-up, not at the first message
        if self.prefetch is None:
            self.prefetch = max(1, min(32, self.concurrency // 4))
        self.restart_needed = False  # too many stuck threads: the worker exits for a restart
        self._pool: Threads | None = None
        self.watchdog = Watchdog()  # time limits of running entries
        self._pace, self._started, self._pace_since = 0.0, 0, time.monotonic()
        self._queue = Queue()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiters: set[Waiter] = set()
        self._to_release: list[str] = []
        self._stop_events: list[asyncio.Event] = []
        self._serving = self._continuous = False
        self._driver: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._writer: Writer | None = None
        self.tally = Tally(self.store)  # finished messages per rule and hour, for the dashboard
        #: the rules' conversations, consulted when each message starts (running.run_message)
        self.conversations = Conversations.for_rules(self.router.rules, self.store, self.clock)

    # ------------------------------------------------------------------ handlers and rules
    def _check_handlers(self, router: Router) -> None:
        for rule in router.rules.rules:
            for entry in rule.handlers:
                self.resolve(entry.name)
        for entry in router.rules.default:
            self.resolve(entry.name)

    def resolve(self, name: str) -> tuple[Callable[..., Any], bool]:
        found = self._handlers.get(name)
        if found is None:
            func = registry.resolve(name)
            found = self._handlers[name] = (func, inspect.iscoroutinefunction(func))
        return found

    def handler_logger(self, handler: str) -> logging.Logger:
        found = self._loggers.get(handler)
        if found is None:
            found = self._loggers[handler] = logging.getLogger(f"keyrouter.handler.{handler}")
        return found

    def use_router(self, router: Router) -> None:
        """Hot reload: messages not started yet run under the new rules, started ones finish
        under theirs.  Raises (and keeps the old rules) when a handler cannot be resolved."""
        self._check_handlers(router)
        self.router = router
        self.conversations = Conversations.for_rules(router.rules, self.store, self.clock)

    def route(self, message: Message) -> Route:
        if is_provider_row(message):  # an opt-out found on the provider's blacklist only
            return provider_route(message)
        return self.router.route(message.text, message.receiver)

    async def run_message(self, item: Item) -> None:
        await run_claimed(self, item)

    def _route_item(self, item: Item) -> None:
        item.route, item.router = self.route(item.message), self.router
        rule = item.route.rule
        item.priority = HIGH if rule is not None and rule.priority == "high" else NORMAL

    def beyond_horizon(self, message: Message) -> bool:
        """Older than the horizon: ignored before it reaches the store.  A message without a
        provider date is never beyond it (its done marker is kept for good instead), nor is a
        dead letter retried by hand (store/retried.py)."""
        return (self.horizon is not None and message.date_known
                and not is_retried_row(message.row)
                and message.received_at.timestamp() < self.clock() - self.horizon.total_seconds())

    @property
    def threads_pool(self) -> Threads:
        if self._pool is None:
            self._pool = Threads(self.threads)
        return self._pool

    # ------------------------------------------------------------------ what others read
    @property
    def inflight(self) -> int:
        """Messages running now."""
        return len(self._tasks)

    def queued(self) -> dict[str, int]:
        """Messages waiting to start (claimed or not), by priority."""
        counts = dict.fromkeys(PRIORITY_NAMES, 0)
        for item in self._queue.waiting():
            counts[PRIORITY_NAMES[item.priority]] += 1
        return counts

    def oldest_waiting_age(self, now: float) -> float | None:
        """Seconds since the oldest unfinished message of this worker (waiting or running) was
        received, at epoch `now` (the inbox lag); None when there is none."""
        oldest = min((i.received for i in self._queue.items.values()), default=None)
        return None if oldest is None else max(0.0, now - oldest)

    @property
    def abandoned_threads(self) -> int:
        """Plain `def` handler threads abandoned past their limit and still running."""
        return self._pool.stuck() if self._pool is not None else 0

    # ------------------------------------------------------------------ offering and waiting
    def offer(self, messages: Iterable[Message]) -> int:
        """Queue messages not queued yet (and not beyond the horizon); returns how many."""
        new = 0
        now = time.monotonic()
        queue = self._queue
        for m in messages:
            if m.id in queue.items or self.beyond_horizon(m):
                continue
            queue.add(m, now)
            new += 1
        if new:
            self._wake.set()
        return new

    async def process(self, messages: Sequence[Message], *,
                      progress: Callable[[int], None] | None = None) -> Report:
        """Offer `messages` and wait until each ran once or cannot run this time (held by another
        worker, or a stop; without a `run()` loop also: retry not due, its sender's earlier
        message unfinished).  `progress(n)` hears how many have settled so far."""
        report = Report(seen=len(messages))
        by_id = self._runnable(messages, report)
        if not by_id:
            return report
        if self._driver is not None and not self._open_waiters():
            await self._driver  # it is winding down: let it end before starting another
        self.offer(by_id.values())
        waiter = Waiter(report, len(by_id), progress)
        items = [self._queue.items[i] for i in by_id]
        for item in items:
            item.waiters = [*(item.waiters or ()), waiter]
        now = time.monotonic()
        for item in items:
            if item.state == WAITING and item.checked:
                if self._blocked(item, now):
                    self._defer_line(item, DEFERRED)
                else:
                    self._queue.make_ready(item)
        self._waiters.add(waiter)
        self._wake.set()
        if not self._serving and self._driver is None:
            self._driver = asyncio.create_task(self._drive())
        driver = self._driver
        await waiter.settled.wait()
        self._waiters.discard(waiter)
        if waiter.error is not None:
            raise waiter.error
        if driver is not None and not self._open_waiters():
            await asyncio.shield(driver)
        return report

    def _runnable(self, messages: Sequence[Message], report: Report) -> dict[str, Message]:
        """The messages to offer, by id: a repeated id (logged when its content differs) and a
        message beyond the horizon are counted as ignored."""
        by_id: dict[str, Message] = {}
        for m in messages:
            if m.id in by_id:
                note_duplicate(by_id[m.id], m, self.events, where="inbox")
            if m.id in by_id or self.beyond_horizon(m):
                report.ignored += 1
                continue
            by_id[m.id] = m
        return by_id

    def _open_waiters(self) -> bool:
        return any(not w.settled.is_set() for w in self._waiters)

    async def _drive(self) -> None:
        """The loop for `process()` calls without `run()`: until every waiter has its answer."""
        self._continuous = False
        try:
            await self._serve(lambda: not self._open_waiters())
        except Exception as exc:
            for waiter in self._waiters:
                waiter.fail(exc)
        finally:
            self._queue.clear()
            self._driver = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Run offered messages as slots free up, until `stopping` is set; then stop gracefully:
        start nothing new, give back what has not started, wait up to `shutdown_grace` seconds
        for running entries and leave the rest to lease expiry."""
        if self._driver is not None:
            await self._driver
        self._continuous = True
        self._stop_events = [stopping]
        self._queue.recheck_all()
        try:
            await self._serve(lambda: False)
        finally:
            self._continuous = False
            self._stop_events = []

    def stopped(self) -> bool:
        return (self.stopping is not None and self.stopping.is_set()) or any(
            e.is_set() for e in self._stop_events)

    # ------------------------------------------------------------------ handler threads
    def call_unless_stopped(self, func: Callable[..., Any], *args: Any) -> Any:
        """Runs in a handler thread: a call still queued when a stop arrives never starts."""
        return NOT_STARTED if self.stopped() else func(*args)

    @property
    def writer(self) -> Writer:
        assert self._writer is not None
        return self._writer

    def abandoned(self, handler: str) -> None:
        """A plain `def` handler's thread passed its limit and was left running."""
        self.events.handler_abandoned(handler)
        stuck = self.threads_pool.stuck()
        logger.error("handler %s passed its time limit; its thread is abandoned (%d stuck)", handler, stuck)
        if stuck > self.max_abandoned and not self.restart_needed:
            self.restart_needed = True
            logger.error("%d handler threads are stuck past their time limits (KEYROUTER_MAX_ABANDONED="
                         "%d): stopping so the supervisor restarts the worker", stuck, self.max_abandoned)
            for event in (self.stopping, *self._stop_events):
                if event is not None:
                    event.set()
            if self.stopping is None and not self._stop_events:
                self.stopping = asyncio.Event()
                self.stopping.set()

    async def aclose(self) -> None:
        """Let idle handler threads end; a stuck one is a daemon and never holds up the exit."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
