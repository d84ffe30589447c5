"""Prometheus metrics and the health state behind /healthz and /readyz.

`Metrics` is a `keyrouter.events.Events`: the dispatcher and worker call its hooks on the hot path
(a counter increment each, no I/O).  Figures that describe *now* (in flight, queued, inbox lag,
fetch leader, rules version) are read from the dispatcher and worker at scrape time by a
collector; dead letters held are read from the store by a refresher task on the worker's event
loop every few seconds (one store call per period, never one per scrape).

Labels come only from bounded sets: rule and handler names from the rules, outcomes and results
from keyrouter.events.  Never a number, id or text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keyrouter.compliance.overdue import pending_counts
from keyrouter.compliance.reconcile import DRIFT_KINDS
from keyrouter.events import OUTCOMES, POLL_RESULTS, RECONCILE_RESULTS, RELOAD_RESULTS, Events
from keyrouter.store import Store

logger = logging.getLogger("keyrouter.observe")
PRIORITIES = ("high", "normal")
#: Consecutive failed polls after which /readyz says the worker is not getting messages.
READY_FAILURES = 3
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OPTOUT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400)


class Metrics(Events):
    """Counters fed by the hooks, live gauges read at scrape time, and the health state."""

    def __init__(self, *, interval: float = 15.0, clock: Callable[[], float] = time.monotonic,
                 process_metrics: bool = True) -> None:
        self.interval = interval
        self.clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("keyrouter_messages", "Messages by rule and outcome (not attempts)",
                                ["rule", "outcome"], registry=r)
        self.handler_duration = Histogram("keyrouter_handler_duration_seconds",
                                          "Handler entry call time", ["handler"],
                                          buckets=_DURATION_BUCKETS, registry=r)
        self.handler_failures = Counter("keyrouter_handler_failures",
                                        "Handler entry calls that raised or timed out", ["handler"],
                                        registry=r)
        self.handlers_abandoned = Counter("keyrouter_handlers_abandoned",
                                          "Sync handler threads left running past their time limit",
                                          ["handler"], registry=r)
        self.polls = Counter("keyrouter_polls", "get-inbox polls by result", ["result"], registry=r)
        self.optout_delay = Histogram("keyrouter_optout_delay_seconds",
                                      "Opt-out received to blacklisted", buckets=_OPTOUT_BUCKETS,
                                      registry=r)
        self.takeovers = Counter("keyrouter_lease_takeovers",
                                 "Messages claimed after another worker's lease expired", registry=r)
        self.optional_failures = Counter(
            "keyrouter_optional_failures", "Optional entries (e.g. confirmation SMS) that failed "
            "while their rule went on; final: given up for good", ["rule", "handler", "final"],
            registry=r)
        self.stale_claims = Counter("keyrouter_stale_claims", "Entries stopped before a provider "
                                    "call because another worker took the message over",
                                    ["handler"], registry=r)
        self.reloads = Counter("keyrouter_rules_reloads", "Rules reloads by result", ["result"],
                               registry=r)
        self.duplicate_ids = Counter("keyrouter_duplicate_ids",
                                     "Rows with an id already seen and different content (not run)",
                                     registry=r)
        self.drift = Counter("keyrouter_blacklist_drift", "Disagreements between the provider's "
                             "blacklist and the ledger found by reconciliation, by kind", ["kind"],
                             registry=r)
        self.reconciles = Counter("keyrouter_reconcile_runs", "Blacklist reconciliations by result",
                                  ["result"], registry=r)
        for kind in DRIFT_KINDS:
            self.drift.labels(kind)
        for result in RECONCILE_RESULTS:
            self.reconciles.labels(result)
        #: epoch seconds of the last reconciliation (this process's, or any, read from the store)
        self.last_reconcile: float | None = None
        for result in POLL_RESULTS:
            self.polls.labels(result)
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)
        # plain attributes written on the event loop, read by the listener's thread
        self.inbox_rows: int | None = None
        self.inbox_total_rows: int | None = None
        self.last_tick: float | None = None
        self.last_poll: str | None = None
        self.poll_failures = 0
        self.store_error: str | None = None  # None: the last store read succeeded
        self.dead_letters: int | None = None
        #: effect -> {"pending": n, "overdue": n} (keyrouter.compliance.overdue), from the refresher
        self.optouts: dict[str, dict[str, int]] | None = None
        self.rules_version: str | None = None
        self.dispatcher: Any = None
        self.worker: Any = None
        r.register(_Live(self))
        if process_metrics:
            ProcessCollector(registry=r)

    # ------------------------------------------------------------------ wiring
    def bind(self, dispatcher: Any = None, worker: Any = None, rules: Iterable[str] = (),
             version: str | None = None) -> None:
        """Where the live gauges read from (`worker` may be a function returning it, for a worker
        made later); `rules` names pre-create the message series at 0."""
        self.dispatcher = dispatcher
        self.worker = worker
        self.rules_loaded(rules, version)

    def rules_loaded(self, rules: Iterable[str], version: str | None) -> None:
        for rule in rules:
            for outcome in OUTCOMES:
                self.messages.labels(rule, outcome)
        self.rules_version = version

    # ------------------------------------------------------------------ hooks (event loop)
    def message_finished(self, rule: str, outcome: str) -> None:
        self.messages.labels(rule, outcome).inc()

    def handler_finished(self, handler: str, seconds: float, ok: bool) -> None:
        self.handler_duration.labels(handler).observe(seconds)
        if not ok:
            self.handler_failures.labels(handler).inc()

    def handler_abandoned(self, handler: str) -> None:
        self.handlers_abandoned.labels(handler).inc()

    def poll_finished(self, result: str, rows: int | None = None, total_rows: int | None = None) -> None:
        self.polls.labels(result).inc()
        self.last_poll = result
        if result == "ok":
            self.poll_failures = 0
            self.store_error = None
            self.inbox_rows = rows
            self.inbox_total_rows = total_rows
        else:
            self.poll_failures += 1
            if result == "store":
                self.store_error = "the last poll could not use the store"

    def lease_taken_over(self, count: int = 1) -> None:
        self.takeovers.inc(count)

    def optout_applied(self, received_at: float, handled_at: float) -> None:
        self.optout_delay.observe(max(0.0, handled_at - received_at))

    def optional_failed(self, rule: str, handler: str, gave_up: bool) -> None:
        self.optional_failures.labels(rule, handler, "true" if gave_up else "false").inc()

    def stale_claim(self, handler: str) -> None:
        self.stale_claims.labels(handler).inc()

    def loop_ticked(self, now: float) -> None:
        self.last_tick = self.clock()

    def duplicate_id(self) -> None:
        self.duplicate_ids.inc()
    def reconcile_finished(self, result: str, drift: dict[str, int], at: float) -> None:
        self.reconciles.labels(result).inc()
        for kind, n in drift.items():
            if n:
                self.drift.labels(kind).inc(n)
        if result != "failed":
            self.last_reconcile = max(at, self.last_reconcile or 0.0)

    def rules_reloaded(self, result: str, version: str | None = None) -> None:
        self.reloads.labels(result).inc()
        if result == "ok":
            self.rules_version = version

    # ------------------------------------------------------------------ health (any thread)
    def health(self) -> tuple[bool, str]:
        """Alive: the worker's loop ticked within three intervals."""
        if self.last_tick is None:
            return False, "the worker loop has not started"
        age = self.clock() - self.last_tick
        if age > 3 * self.interval:
            return False, f"the worker loop last ticked {age:.0f}s ago (interval {self.interval:g}s)"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Ready: rules loaded, store reachable, and (for the worker that polls get-inbox) the
        last poll ok or within its normal backoff."""
        if self.rules_version is None:
            return False, "rules not loaded"
        if self.store_error is not None:
            return False, f"store unreachable: {self.store_error}"
        if self.fetch_leader() is False:  # another worker polls; this one reads the shared rows
            return (True, "ok") if self.dead_letters is not None else (False, "store not read yet")
        if self.last_poll is None:
            return False, "no poll has finished yet"
        if self.last_poll == "auth":
            return False, "get-inbox refused the credentials"
        if self.poll_failures >= READY_FAILURES:
            return False, f"get-inbox failed {self.poll_failures} times in a row ({self.last_poll})"
        return True, "ok"

    def fetch_leader(self) -> bool | None:
        """Whether this worker polls get-inbox (None: a worker without a fetch lease)."""
        worker = self.worker() if callable(self.worker) else self.worker
        leader = _read(worker, "is_fetch_leader")
        return None if leader is None else bool(leader)

    # ------------------------------------------------------------------ store reads (event loop)
    async def refresh(self, store: Store, timeout: float = 5.0) -> None:
        """One store read: dead letters held, and whether the store answers."""
        try:
            held = int(await asyncio.wait_for(store.dead_letter_count(), timeout))
        except Exception as exc:  # any failure means "unreachable" for readiness
            self.store_error = type(exc).__name__
            return
        self.dead_letters = held
        self.store_error = None
        try:  # pending opt-outs against their deadline; the rules say which dead letters count

            router = getattr(self.dispatcher, "router", None)  # the rules in force, after reloads
            self.optouts = await asyncio.wait_for(pending_counts(store, router), timeout)
        except Exception as exc:  # keep the last figures; readiness follows the read above
            logger.debug("opt-out counts not refreshed: %s", type(exc).__name__)
        try:  # the last reconciliation, whoever ran it (a worker or `optouts reconcile`)
            state = await asyncio.wait_for(store.reconcile_state(), timeout) or {}
            at = (state.get("last") or {}).get("at")
            if at is not None:
                self.last_reconcile = max(float(at), self.last_reconcile or 0.0)
        except Exception as exc:
            logger.debug("last reconcile not refreshed: %s", type(exc).__name__)

    async def refresher(self, store: Store, stopping: asyncio.Event, period: float) -> None:
        while not stopping.is_set():
            await self.refresh(store)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), period)


class _Live(Collector):
    """Gauges computed at scrape time from the dispatcher and worker (never from the store)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m, d = self.m, self.m.dispatcher
        yield _gauge("keyrouter_inflight", "Handler entries running now", _read(d, "inflight"))
        queued = GaugeMetricFamily("keyrouter_queued", "Messages waiting to start, by priority",
                                   labels=["priority"])
        waiting = _call(d, "queued") or {}
        for priority in PRIORITIES:
            queued.add_metric([priority], float(waiting.get(priority, 0)))
        yield queued
        yield _gauge("keyrouter_inbox_lag_seconds", "Age of the oldest unfinished message",
                     _call(d, "oldest_waiting_age", time.time()) or 0.0)
        yield _gauge("keyrouter_inbox_rows", "Rows the last get-inbox returned", m.inbox_rows)
        yield _gauge("keyrouter_inbox_total_rows", "totalRows the last get-inbox reported",
                     m.inbox_total_rows)
        yield _gauge("keyrouter_dead_letters", "Dead letters held in the store now", m.dead_letters)
        for name, doc in (("pending", "Opt-outs not yet applied, by effect (blacklist, iys_ret)"),
                          ("overdue", "Pending opt-outs past their three-business-day deadline")):
            family = GaugeMetricFamily(f"keyrouter_optouts_{name}", doc, labels=["effect"])
            for effect, counts in (m.optouts or {}).items():
                family.add_metric([effect], float(counts[name]))
            yield family
        leader = m.fetch_leader()
        if leader is None:  # a worker without a fetch lease polls get-inbox itself
            leader = m.last_poll is not None
        yield _gauge("keyrouter_fetch_leader", "1 when this process polls get-inbox", float(bool(leader)))
        info = GaugeMetricFamily("keyrouter_rules_info", "The loaded rules (version: their hash)",
                                 labels=["version"])
        if m.rules_version is not None:
            info.add_metric([m.rules_version], 1.0)
        yield info
        yield _gauge("keyrouter_reconcile_last_run_timestamp_seconds",
                     "When the last blacklist reconciliation ran (epoch seconds)", m.last_reconcile)
        tick = m.last_tick
        yield _gauge("keyrouter_loop_tick_age_seconds", "Seconds since the worker loop last ticked",
                     None if tick is None else max(0.0, m.clock() - tick))


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], float(value))
    return family


def _read(obj: Any, name: str) -> Any:
    return None if obj is None else getattr(obj, name, None)


def _call(obj: Any, name: str, *args: Any) -> Any:
    """A read from another thread may meet a dict changing size: try again, then give up."""
    method = _read(obj, name)
    if method is None:
        return None
    for _ in range(3):
        try:
            return method(*args)
        except RuntimeError:
            continue
    return None
