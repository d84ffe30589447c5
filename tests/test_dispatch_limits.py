"""Time limits that hold: handlers that never return, abandoned threads and
their bound, the shutdown grace period."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import recording
from test_dispatch_stream import Running, msg, router_of, until

from keyrouter.dispatch import Dispatcher
from keyrouter.events import Events
from keyrouter.retries import RetryPolicy
from keyrouter.store.memory import MemoryStore

pytestmark = pytest.mark.anyio
STUCK_RULES = """
    version: 1
    rules:
      - {name: sync_stuck, keywords: [TAKILDI], handlers: [recording:sync_hang]}
      - {name: async_stuck, keywords: [ASILI], handlers: [recording:hang]}
    default: {handlers: [{recording:arecord: {tag: ok}}]}
"""


@pytest.fixture(autouse=True)
def clean_recording():
    recording.reset()
    recording.RELEASE.clear()
    yield
    recording.RELEASE.set()  # let the abandoned threads end
    recording.reset()


class Abandons(Events):
    def __init__(self) -> None:
        self.abandoned: list[str] = []
        self.outcomes: Counter[tuple[str, str]] = Counter()

    def handler_abandoned(self, handler: str) -> None:
        self.abandoned.append(handler)

    def message_finished(self, rule: str, outcome: str) -> None:
        self.outcomes[(rule, outcome)] += 1


async def test_handlers_that_never_return_fail_at_the_limit_retry_then_dead_letter(write_rules) -> None:
    store = MemoryStore()
    events = Abandons()
    d = Dispatcher(router_of(write_rules, STUCK_RULES), store, handler_timeout=1.0, concurrency=4,
                   policy=RetryPolicy(max_attempts=2, base_delay=0.1, jitter=0), events=events)
    running = Running(d)
    stuck = [msg("sync", "takildi", "+905550000001", 100), msg("async", "asili", "+905550000002", 100)]
    others = [msg(f"o{i}", "merhaba", f"+90556{i:07d}", 50) for i in range(20)]
    d.offer(stuck + others)
    started = time.monotonic()
    await until(lambda: sum(c["tag"] == "ok" for c in recording.CALLS) == 20, 10, "the other senders")
    assert time.monotonic() - started < 1.0  # they did not wait for the stuck ones' limit

    async def dead() -> set[str]:
        return {x.id for x in await store.dead_letters()}

    async def both_dead() -> bool:
        return await dead() == {"sync", "async"}

    await until(both_dead, 20, "both stuck messages in the dead letters")
    letters = {x.id: x for x in await store.dead_letters()}
    assert letters["sync"].attempts == 2 and "1s time limit" in letters["sync"].error
    assert "thread was abandoned" in letters["sync"].error
    assert letters["async"].attempts == 2 and "cancelled" in letters["async"].error
    calls = Counter(c["id"] for c in recording.CALLS if c["id"] in ("sync", "async"))
    assert calls == {"sync": 2, "async": 2}
    assert events.abandoned == ["recording:sync_hang"] * 2
    assert events.outcomes[("sync_stuck", "retrying")] == 1 and events.outcomes[("sync_stuck", "dead")] == 1
    assert d.abandoned_threads == 2 and not d.restart_needed
    assert await store.unfinished([m.id for m in others]) == []
    await running.stop()


async def test_an_entrys_own_timeout_beats_the_setting(write_rules) -> None:
    router = router_of(write_rules, """
        version: 1
        rules:
          - name: slow
            keywords: [YAVAS]
            timeout: 30s
            handlers:
              - recording:hang:
                timeout: 0.2
    """)
    d = Dispatcher(router, MemoryStore(), handler_timeout=60, policy=RetryPolicy(base_delay=60, jitter=0))
    started = time.monotonic()
    report = await d.process([msg("1", "yavas", "+905550000001")])
    assert report.retrying == 1 and time.monotonic() - started < 10
    await d.aclose()


async def test_past_the_bound_of_abandoned_threads_the_worker_stops_for_a_restart(write_rules) -> None:
    d = Dispatcher(router_of(write_rules, STUCK_RULES), MemoryStore(), handler_timeout=0.2,
                   max_abandoned=1, shutdown_grace=0.5, policy=RetryPolicy(base_delay=60, jitter=0))
    running = Running(d)
    d.offer([msg(str(i), "takildi", f"+90555{i:07d}") for i in range(2)])
    await asyncio.wait_for(running.task, 20)  # the loop stopped by itself
    assert d.restart_needed and d.abandoned_threads == 2
    assert running.stopping.is_set()  # so the worker's own loop ends too (exit 5)
    await d.aclose()


async def test_a_stop_waits_at_most_the_grace_period_and_leaves_the_rest_to_lease_expiry(write_rules) -> None:
    store = MemoryStore()
    router = router_of(write_rules, STUCK_RULES)
    d = Dispatcher(router, store, handler_timeout=60, shutdown_grace=0.5, lease=1.0)
    running = Running(d)
    d.offer([msg("a", "asili", "+905550000001"), msg("s", "takildi", "+905550000002")])
    await until(lambda: len(recording.CALLS) == 2, 10, "both handlers to start")
    sent = time.monotonic()
    running.stopping.set()
    await asyncio.wait_for(running.task, 10)
    took = time.monotonic() - sent
    assert 0.4 <= took < 3, took
    assert sorted(await store.unfinished(["a", "s"])) == ["a", "s"]
    other = Dispatcher(router, store, handler_timeout=0.3, policy=RetryPolicy(base_delay=60, jitter=0))
    assert (await other.process([msg("a", "asili", "+905550000001")])).deferred == 1  # still leased
    await asyncio.sleep(1.1)  # the lease runs out: the entry runs again, with the same key
    assert (await other.process([msg("a", "asili", "+905550000001")])).retrying == 1
    keys = [c["key"] for c in recording.CALLS if c["id"] == "a"]
    assert len(keys) == 2 and len(set(keys)) == 1
    await d.aclose()
    await other.aclose()
