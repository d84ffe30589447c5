"""The streaming dispatcher: offer/run, per-sender order under concurrency, no head-of-line
blocking, priority, claims sized to capacity, what metrics read, hot reload, operator events."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import recording

from keyrouter.dispatch import Dispatcher
from keyrouter.events import Events
from keyrouter.message import TURKEY, Message, parse_row
from keyrouter.retries import RetryPolicy
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.store.memory import MemoryStore

pytestmark = pytest.mark.anyio


def msg(id: str, text: str, sender: str, seconds_ago: float = 60) -> Message:
    when = datetime.now(TURKEY) - timedelta(seconds=seconds_ago)
    return parse_row({"id": id, "text": text, "sender": sender, "number": "+908505550000",
                      "date": when.strftime("%Y-%m-%d %H:%M:%S")})


def router_of(write_rules: Callable[[str], Any], text: str) -> Router:
    return Router(load_rules(write_rules(text)))


async def until(predicate: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout: float,
                what: str) -> None:
    """Wait for a condition; a generous bound, failing the test when it passes."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Running:
    """A dispatcher's run() loop as a background task."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(dispatcher.run(self.stopping))

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 30)
        await self.dispatcher.aclose()


async def test_offer_and_run_stream_messages_and_offer_dedups(write_rules) -> None:
    router = router_of(write_rules, """
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [{recording:arecord: {tag: a}}]}
    """)
    store = MemoryStore()
    d = Dispatcher(router, store)
    first = [msg(str(i), "x", f"+90555{i:07d}") for i in range(30)]
    assert d.offer(first) == 30
    assert d.offer(first[:10]) == 0  # already queued
    running = Running(d)
    await until(lambda: len(recording.CALLS) == 30, 10, "the first messages")

    async def first_done() -> bool:
        return await store.unfinished([m.id for m in first]) == [] and d.inflight == 0

    await until(first_done, 10, "their done markers")
    later = [msg(str(i), "x", f"+90555{i:07d}") for i in range(30, 40)]
    # finished messages left the queue: offered again, the store says they are done, and they
    # never run again
    assert d.offer(later + first) == 40
    await until(lambda: len(recording.CALLS) == 40, 10, "the later messages")
    assert await store.unfinished([str(i) for i in range(40)]) == []
    await running.stop()
    assert Counter(c["id"] for c in recording.CALLS) == Counter({str(i): 1 for i in range(40)})


@pytest.mark.parametrize("mode", ["run", "process"])
async def test_a_senders_ten_messages_reach_the_handler_in_order_while_a_thousand_others_run(
        write_rules, mode: str) -> None:
    router = router_of(write_rules, """
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [recording:jitter, recording:jitter]}
    """)
    store = MemoryStore()
    d = Dispatcher(router, store, concurrency=50)
    others = [msg(f"o{i}", "x", f"+90555{i:07d}", seconds_ago=random.uniform(0, 100)) for i in range(1000)]
    # ten messages of one person, received one second apart, arriving in a shuffled order
    mine = [msg(f"m{k}", f"mesaj {k}", "+905321112233", seconds_ago=50 - k) for k in range(10)]
    inbox = others + mine
    random.shuffle(inbox)
    if mode == "process":
        report = await d.process(inbox)
        assert report.done == 1010
    else:
        running = Running(d)
        # polls while earlier ones run: each returns the inbox so far (what was received up to
        # then), its rows in any order
        inbox.sort(key=lambda m: m.received_at)
        for end in range(101, len(inbox) + 101, 101):
            poll = inbox[:end]
            random.shuffle(poll)
            d.offer(poll)
            await asyncio.sleep(0.01)
        await until(lambda: len(recording.CALLS) == 2020, 60, "every message")
        await running.stop()
    order = [c["id"] for c in recording.CALLS if c["id"].startswith("m")]
    assert order == [f"m{k}" for k in range(10) for _ in (0, 1)]
    assert await store.unfinished([m.id for m in inbox]) == []


async def test_a_hung_handler_does_not_delay_another_sender(write_rules) -> None:
    router = router_of(write_rules, """
        version: 1
        rules:
          - {name: stuck, keywords: [HANG], handlers: [recording:hang]}
        default: {handlers: [{recording:arecord: {tag: ok}}]}
    """)
    store = MemoryStore()
    d = Dispatcher(router, store, concurrency=4, handler_timeout=120, shutdown_grace=0.2)
    running = Running(d)
    d.offer([msg("hung", "hang", "+905550000001", seconds_ago=100)])
    await until(lambda: any(c["id"] == "hung" for c in recording.CALLS), 10, "the hung handler")
    others = [msg(f"o{i}", "merhaba", f"+90556{i:07d}") for i in range(200)]
    d.offer(others)
    await until(lambda: len(recording.CALLS) == 201, 20, "the other senders' messages")
    ids = [m.id for m in others]

    async def all_done() -> bool:
        return await store.unfinished(ids) == []

    await until(all_done, 5, "their done markers")  # written in batches, ~100 ms apart
    assert d.inflight == 1  # the hung one still holds its slot, and only its slot
    await running.stop()
    assert await store.unfinished(["hung"]) == ["hung"]


async def test_waiting_high_priority_messages_start_before_normal_ones(write_rules) -> None:
    router = router_of(write_rules, """
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            priority: high
            handlers: [{recording:slow: {seconds: 0.02, tag: ret}}]
        default: {handlers: [{recording:slow: {seconds: 0.02, tag: survey}}]}
    """)
    store = MemoryStore()
    d = Dispatcher(router, store, concurrency=1, prefetch=1)
    # a campaign's survey answers, the opt-outs received later
    surveys = [msg(f"s{i}", "anket a", f"+90555{i:07d}", seconds_ago=100 - i) for i in range(20)]
    optouts = [msg(f"r{i}", "RET", f"+90556{i:07d}", seconds_ago=10 - i) for i in range(3)]
    await d.process(surveys + optouts)
    tags = [c["tag"] for c in recording.CALLS]
    assert tags == ["ret"] * 3 + ["survey"] * 20
    # and while a burst runs: a RET offered later overtakes every survey answer still waiting
    recording.CALLS.clear()
    running = Running(d)
    d.offer([msg(f"t{i}", "anket b", f"+90557{i:07d}", seconds_ago=100 - i) for i in range(20)])
    await until(lambda: len(recording.CALLS) >= 3, 10, "the burst to start")
    before = len(recording.CALLS)
    d.offer([msg("late-ret", "ret", "+905580000000", seconds_ago=0)])
    await until(lambda: len(recording.CALLS) == 21, 20, "the burst")
    await running.stop()
    position = [c["id"] for c in recording.CALLS].index("late-ret")
    # it started next, after at most the running one and those claimed ahead (at this pace of ~50
    # a second: about 5), ahead of every survey answer still waiting
    assert position <= before + 1 + 6, (before, position)
    assert position < 15


class CountingStore(MemoryStore):
    """Records how many ids each claim took."""

    def __init__(self) -> None:
        super().__init__()
        self.claimed: dict[str, int] = Counter()
        self.sizes: list[int] = []

    async def claim(self, ids, owner, lease, now, **kwargs):  # type: ignore[override]
        got = await super().claim(ids, owner, lease, now, **kwargs)
        self.sizes.append(len(got))
        self.claimed[owner] += len(got)
        return got


async def test_claims_are_sized_to_capacity_so_workers_share_a_burst(write_rules) -> None:
    router = router_of(write_rules, """
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [{recording:slow: {seconds: 0.05}}]}
    """)
    store = CountingStore()
    one = Dispatcher(router, store, concurrency=4, prefetch=2)
    inbox = [msg(str(i), "x", f"+90555{i:07d}") for i in range(100)]
    running = Running(one)
    one.offer(inbox)
    await until(lambda: store.sizes, 10, "a first claim")
    assert store.sizes[0] == 6  # 4 free slots and 2 ahead, of 100 waiting
    # a second worker joining the burst gets its share: nobody took everything
    two = Dispatcher(router, store, concurrency=4, prefetch=2)
    other = Running(two)
    two.offer(inbox)
    await until(lambda: len(recording.CALLS) == 100, 30, "the burst")
    await running.stop()
    await other.stop()
    # at most the free slots plus what a worker starts in ~100 ms at its pace (4 slots of 50 ms
    # handlers: about 8), never a big share of the 100
    assert max(store.sizes) <= 4 + 10, store.sizes
    assert store.claimed[one.owner] >= 20 and store.claimed[two.owner] >= 20, store.claimed
    assert Counter(c["id"] for c in recording.CALLS) == Counter({str(i): 1 for i in range(100)})


async def test_queue_depth_inflight_and_oldest_waiting_age(write_rules) -> None:
    router = router_of(write_rules, """
        version: 1
        rules:
          - {name: optout, keywords: [RET], priority: high, handlers: [recording:hang]}
          - {name: survey, keywords: [ANKET], handlers: [recording:hang]}
    """)
    d = Dispatcher(router, MemoryStore(), concurrency=1, prefetch=1, shutdown_grace=0.1)
    assert d.inflight == 0 and d.queued() == {"high": 0, "normal": 0}
    assert d.oldest_waiting_age(time.time()) is None
    running = Running(d)
    d.offer([msg("a", "anket", "+905550000001", seconds_ago=300),
             msg("b", "anket", "+905550000002", seconds_ago=200),
             msg("c", "ret", "+905550000003", seconds_ago=100),
             msg("d", "ret", "+905550000004", seconds_ago=50)])
    await until(lambda: d.inflight == 1, 10, "one running")
    assert [c["id"] for c in recording.CALLS] == ["c"]  # the oldest high one
    assert d.queued() == {"high": 1, "normal": 2}
    age = d.oldest_waiting_age(time.time())
    assert age is not None and 299 <= age <= 330  # "a", received 300 s ago, waits
    await running.stop()


async def test_use_router_routes_waiting_messages_with_the_new_rules(write_rules) -> None:
    old = router_of(write_rules, """
        version: 1
        rules:
          - {name: r, keywords: [RET], handlers: [{recording:arecord: {tag: old}}]}
    """)
    new = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: r, keywords: [RET], handlers: [{recording:arecord: {tag: new}}]}
    """, name="new.yaml")))
    d = Dispatcher(old, MemoryStore())
    d.offer([msg("1", "RET", "+905550000001")])
    d.use_router(new)
    await d.process([msg("1", "RET", "+905550000001")])
    assert [c["tag"] for c in recording.CALLS] == ["new"]
    assert d.router is new
    await d.aclose()


class Recorded(Events):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def message_finished(self, rule: str, outcome: str) -> None:
        self.calls.append(("message", rule, outcome))

    def handler_finished(self, handler: str, seconds: float, ok: bool) -> None:
        assert seconds >= 0
        self.calls.append(("handler", handler, ok))


async def test_operator_events_once_per_outcome(write_rules) -> None:
    router = router_of(write_rules, """
        version: 1
        rules:
          - {name: optout, keywords: [RET], handlers: [{recording:record: {tag: r}}]}
          - {name: broken, keywords: [BOZUK], handlers: [recording:permanent]}
          - {name: old, keywords: [ESKI], max_age: 1m, handlers: [recording:record]}
    """)
    events = Recorded()
    d = Dispatcher(router, MemoryStore(), events=events,
                   policy=RetryPolicy(max_attempts=3, base_delay=60, jitter=0))
    recording.FAILS[("f", "r")] = 1
    await d.process([msg("ok", "RET", "+905550000001"), msg("f", "RET", "+905550000002"),
                     msg("x", "bozuk", "+905550000003"), msg("o", "eski", "+905550000004", 3600)])
    messages = Counter(c for c in events.calls if c[0] == "message")
    assert messages == Counter({("message", "optout", "done"): 1, ("message", "optout", "retrying"): 1,
                                ("message", "broken", "dead"): 1, ("message", "old", "skipped"): 1})
    handlers = Counter(c for c in events.calls if c[0] == "handler")
    assert handlers == Counter({("handler", "recording:record", True): 1,
                                ("handler", "recording:record", False): 1,
                                ("handler", "recording:permanent", False): 1})
    await d.aclose()


class TakeOvers(Events):
    def __init__(self) -> None:
        self.taken = 0

    def lease_taken_over(self, count: int = 1) -> None:
        self.taken += count


async def test_claims_of_a_dead_worker_are_taken_over_when_their_lease_expires(write_rules) -> None:
    router = router_of(write_rules, """
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [{recording:arecord: {tag: a}}]}
    """)
    store = MemoryStore()
    inbox = [msg(str(i), "x", f"+90555{i:07d}") for i in range(5)]
    await store.claim(["0", "1"], "dead-worker", 0.3, time.time())  # then it was killed
    events = TakeOvers()
    d = Dispatcher(router, store, events=events)
    first = await d.process(inbox)
    assert first.done == 3 and first.deferred == 2 and events.taken == 0
    await asyncio.sleep(0.35)
    second = await d.process(inbox)
    assert second.done == 2 and events.taken == 2
    assert Counter(c["id"] for c in recording.CALLS) == Counter({str(i): 1 for i in range(5)})
    await d.aclose()
