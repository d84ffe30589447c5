"""`keyrouter run`: one fetcher per namespace (keyrouter.worker.intake) feeding every worker's dispatcher.

Two loops run side by side, so fetching never waits for handlers:
- the *fetch* loop, once per interval: take or renew the namespace's fetch lease; the holder polls
  get-inbox and publishes the new unfinished rows;
- the *feed* loop, about once a second (soon after this worker published): reads the shared rows
  and hands them to the dispatcher.

A running worker exits only when a person must act and retrying cannot help: refused credentials
(3) or a base URL that is not the API (2).  Every other provider answer and every store failure is
logged loudly and retried with capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from keyrouter.dispatch import Report
from keyrouter.events import NO_EVENTS, Events
from keyrouter.ops.durability import warn_if_not_durable
from keyrouter.providers.iletimerkezi import (
    ApiError,
    AuthenticationRefused,
    PermanentApiError,
)
from keyrouter.store.errors import STORE_ERRORS
from keyrouter.worker.intake import Intake
from keyrouter.worker.reconcile import ReconcileTicker
from keyrouter.worker.runtime import Runtime

logger = logging.getLogger("keyrouter.worker")
EXIT_OK, EXIT_DEAD_LETTERS, EXIT_BAD_CONFIG, EXIT_AUTH, EXIT_POLL_FAILED = 0, 1, 2, 3, 4
#: Too many handler threads stuck past their time limits (KEYROUTER_MAX_ABANDONED): the
#: dispatcher stopped the worker cleanly so that its supervisor restarts it.
EXIT_RESTART = 5
MAX_BACKOFF = 300.0


async def sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), max(0.0, seconds))


def not_the_api(exc: PermanentApiError) -> bool:
    """A refusal that says the base URL points somewhere that is not the provider's API (no
    usable scheme, or no such endpoint there): only a person can fix it.  Other refusals of
    get-inbox (say, a 200 carrying {"code": 400}) may pass: they are retried."""
    return exc.code is None or exc.code in (404, 405)


class Backoff:
    """Capped exponential backoff with jitter, starting at the poll interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        raw = min(MAX_BACKOFF, max(self.interval, 1.0) * 2.0 ** (self.failures - 1))
        return raw * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.failures = 0


class Worker:
    """One `keyrouter run` process.  `is_fetch_leader` (for metrics): this worker holds the
    namespace's fetch lease and is the one calling get-inbox."""

    def __init__(self, runtime: Runtime, stopping: asyncio.Event, *, interval: float = 15.0,
                 once: bool = False, events: Events | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.stopping = stopping
        self.interval = interval
        self.once = once
        self.clock = clock
        dispatcher = runtime.dispatcher
        self.events: Events = events or getattr(dispatcher, "events", None) or NO_EVENTS
        # the holder renews once per interval: the lease must outlast a few intervals
        self.fetch_lease = max(runtime.settings.lease, 2.5 * interval)
        self.intake = Intake(runtime.store, runtime.client, owner=dispatcher.owner,
                             lease=self.fetch_lease, beyond_horizon=dispatcher.beyond_horizon,
                             events=self.events)
        self.exit_code: int | None = None
        #: seconds between reads of the shared rows (jittered), so a row published by another
        #: worker starts within about a second, whatever the poll interval
        self.tick = min(interval, 1.0)
        self._fresh = asyncio.Event()  # this worker just published: read at once
        #: the fetch leader reconciles the provider's blacklist (keyrouter.reconcile_worker)
        self.reconcile = ReconcileTicker(runtime, self.events, clock)
        self._logged_kinds: set[type] = set()

    @property
    def is_fetch_leader(self) -> bool:
        return self.intake.is_leader

    # ------------------------------------------------------------------ entry points
    async def run(self) -> int:
        """Returns the exit code of `keyrouter run`."""
        await warn_if_not_durable(self.runtime.store)
        if self.once:
            return await self._run_once()
        logger.info("worker %s started (namespace %r, poll interval %gs)",
                    self.runtime.dispatcher.owner, self.runtime.settings.namespace, self.interval)
        loops = [asyncio.create_task(self._fetch_loop(), name="keyrouter-fetch"),
                 asyncio.create_task(self._feed_loop(), name="keyrouter-feed"),
                 asyncio.create_task(self._dispatch_loop(), name="keyrouter-dispatch")]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.reconcile.stop()
            await self._release()
        if self.exit_code is not None:
            return self.exit_code
        if getattr(self.runtime.dispatcher, "restart_needed", False):
            logger.error("stopped for a restart: handler threads are stuck past their time limits")
            return EXIT_RESTART
        logger.info("stopped cleanly")
        return EXIT_OK

    async def _run_once(self) -> int:
        """One poll (when this worker may fetch), every shared row processed, then exit.  The
        store must take a write first (`Store.touch`): beside a running worker there may be
        nothing to claim, and a store that refuses writes (a full disk) would otherwise look
        like one with nothing to do."""
        self.events.loop_ticked(self.clock())
        try:
            try:
                await self.runtime.store.touch(time.time())
                if await self.intake.acquire(self.clock()):
                    code = await self._poll(backoff=None)
                    if code is not None:
                        return code
                else:
                    logger.info("another worker fetches for this namespace; running the rows "
                                "it shared")
                messages = await self.intake.read(full=True)
                report = await self.runtime.dispatcher.process(messages)
            finally:
                await self._release()
        except Exception as exc:  # the store failed: one line, exit 4
            self._store_failed(exc, None)
            return EXIT_POLL_FAILED
        _log_report(report)
        return EXIT_DEAD_LETTERS if await self.runtime.store.dead_letters() else EXIT_OK

    # ------------------------------------------------------------------ the two loops
    async def _fetch_loop(self) -> None:
        poll_backoff, store_backoff = Backoff(self.interval), Backoff(self.interval)
        next_poll = 0.0
        while not self.stopping.is_set():
            now = self.clock()
            self.events.loop_ticked(now)
            wait = self.interval * random.uniform(0.9, 1.1)
            try:
                if await self.intake.acquire(now) and now >= next_poll:
                    code = await self._poll(backoff=poll_backoff)
                    if code is not None:
                        self.exit_code = code
                        self.stopping.set()
                        return
                    if poll_backoff.failures:
                        next_poll = now + self._poll_delay
                    else:
                        await self.reconcile.after_poll(self.intake.token)
                store_backoff.reset()
            except Exception as exc:  # the store failed: back off, never die
                self.events.poll_finished("store")
                wait = self._store_failed(exc, store_backoff)
            await self._sleep_ticking(wait)

    async def _sleep_ticking(self, seconds: float) -> None:
        """Sleep, ticking once per interval: a long backoff is alive (/healthz), not stuck."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            await sleep_unless_stopped(self.stopping, min(left, self.interval))
            self.events.loop_ticked(self.clock())

    async def _feed_loop(self) -> None:
        """Shared rows -> the dispatcher: offer what is new, and everything still shared once per
        resync period (the dispatcher keeps and rechecks what it could not claim; the resync is
        the safety net for anything a failed read or a restart of its loop let slip)."""
        store_backoff = Backoff(self.interval)
        lease = self.runtime.settings.lease
        resync = max(self.interval, min(lease / 2, 10.0))
        last_full = -resync
        dispatcher = self.runtime.dispatcher
        while not self.stopping.is_set():
            wait = self.tick * random.uniform(0.5, 1.0)
            self.events.loop_ticked(self.clock())
            try:
                self._fresh.clear()
                full = time.monotonic() - last_full >= resync
                messages = await self.intake.read(full=full)
                if full:
                    last_full = time.monotonic()
                if messages:
                    dispatcher.offer(messages)
                store_backoff.reset()
            except Exception as exc:  # the store failed: back off, never die
                wait = self._store_failed(exc, store_backoff, echo=True)
            if self.stopping.is_set():
                return
            await self._wait_for_rows(wait)

    async def _wait_for_rows(self, seconds: float) -> None:
        """Sleep until the next read: `seconds`, or soon after this worker published.  Not at
        once: the others read on their own ticks, and a holder that always read first would take
        every burst for itself."""
        stop = asyncio.ensure_future(self.stopping.wait())
        fresh = asyncio.ensure_future(self._fresh.wait())
        try:
            await asyncio.wait({stop, fresh}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            if fresh.done() and not stop.done():
                await sleep_unless_stopped(self.stopping, random.uniform(0, self.tick / 2))
        finally:
            stop.cancel()
            fresh.cancel()

    async def _dispatch_loop(self) -> None:
        """The dispatcher's scheduling loop; if it fails (the store), log, back off, go on."""
        backoff = Backoff(self.interval)
        while True:
            try:
                await self.runtime.dispatcher.run(self.stopping)
                return
            except Exception as exc:
                delay = self._store_failed(exc, backoff)
                if self.stopping.is_set():
                    return
                await sleep_unless_stopped(self.stopping, delay)

    # ------------------------------------------------------------------ one poll
    _poll_delay = 0.0

    async def _poll(self, backoff: Backoff | None) -> int | None:
        """get-inbox and publish; None to go on, or the exit code when a person must act.
        Provider failures are logged and, outside --once, scheduled for a later try."""
        try:
            fetched = await self.intake.fetch()
        except AuthenticationRefused as exc:
            self.events.poll_finished("auth")
            logger.error("%s", exc)
            return EXIT_AUTH
        except PermanentApiError as exc:
            self.events.poll_finished("transient")
            if not_the_api(exc):
                logger.error("get-inbox refused: %s (check ILETIMERKEZI_BASE_URL)", exc)
                return EXIT_BAD_CONFIG
            return self._poll_failed(exc, backoff)
        except ApiError as exc:
            self.events.poll_finished("transient")
            return self._poll_failed(exc, backoff)
        self.events.poll_finished("ok", fetched.rows, fetched.total_rows)
        if backoff is not None and backoff.failures:
            logger.warning("get-inbox answers again after %d failed polls", backoff.failures)
            backoff.reset()
        if fetched.published > 0:
            self._fresh.set()
        return None

    def _poll_failed(self, exc: ApiError, backoff: Backoff | None) -> int | None:
        refused = isinstance(exc, PermanentApiError)
        what = "get-inbox refused" if refused else "get-inbox failed"
        if backoff is None:  # --once: nothing will try again, so do not promise it
            logger.error("%s (%s: %s)", what, type(exc).__name__, exc)
            return EXIT_POLL_FAILED
        self._poll_delay = backoff.next_delay()
        logger.error("%s (%s: %s); next try in %.0fs", what, type(exc).__name__, exc,
                     self._poll_delay)
        return None

    def _store_failed(self, exc: BaseException, backoff: Backoff | None, *,
                      echo: bool = False) -> float:
        """Log a store failure loudly (one line for the known kinds); returns the delay before
        the next try.  `echo`: another loop meets the same outage and logs each try, so this
        one says it once per outage."""
        delay = backoff.next_delay() if backoff is not None else 0.0
        later = f"; next try in {delay:.0f}s" if backoff is not None else ""
        if echo and isinstance(exc, STORE_ERRORS):
            if backoff is not None and backoff.failures == 1:
                logger.error("reading the shared rows failed (%s: %s); retrying", type(exc).__name__, exc)
            return delay
        if isinstance(exc, STORE_ERRORS) or type(exc) in self._logged_kinds:
            logger.error("the store failed (%s: %s)%s", type(exc).__name__, exc, later)
        else:
            self._logged_kinds.add(type(exc))
            logger.error("the store failed (%s: %s)%s", type(exc).__name__, exc, later,
                         exc_info=exc)
        return delay

    async def _release(self) -> None:
        try:
            await self.intake.release()
        except Exception as exc:  # the lease expires on its own
            logger.warning("could not hand on the fetch lease (%s); it expires in %.0fs",
                           type(exc).__name__, self.fetch_lease)


def _log_report(report: Report) -> None:
    if report.seen or report.dead or report.retrying:
        logger.info("poll: %d rows, %d done, %d skipped, %d retrying, %d dead, %d deferred",
                    report.seen, report.done, report.skipped, report.retrying, report.dead,
                    report.deferred)


async def run(runtime: Runtime, stopping: asyncio.Event, *, once: bool = False,
              interval: float = 15.0, events: Events | None = None) -> int:
    """Returns the exit code of `keyrouter run`."""
    worker = Worker(runtime, stopping, interval=interval, once=once, events=events)
    runtime.worker = worker
    return await worker.run()
