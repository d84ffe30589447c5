from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
import recording

from keyrouter.dispatch import Dispatcher
from keyrouter.message import TURKEY, Message, parse_row
from keyrouter.retries import RetryPolicy
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.store.memory import MemoryStore

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(max_attempts=3, base_delay=0.0, jitter=0.0)
RULES = """
version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers:
      - recording:record: {tag: reply}
      - recording:arecord: {tag: block}
  - name: old
    keywords: [ESKI]
    max_age: 1h
    handlers: [recording:record]
  - name: broken
    keywords: [BOZUK]
    handlers: [recording:permanent]
  - name: slow
    keywords: [YAVAS]
    handlers: [{recording:slow: {seconds: 0.3, tag: slow}}]
default:
  handlers: [{recording:record: {tag: default}}]
"""


@pytest.fixture
def router(write_rules) -> Router:
    return Router(load_rules(write_rules(RULES)))


def msg(id: str, text: str, sender: str = "+905354104818", minutes_ago: float = 1) -> Message:
    when = datetime.now(TURKEY) - timedelta(minutes=minutes_ago)
    return parse_row({"id": id, "text": text, "sender": sender, "number": "+908505550000",
                      "date": when.strftime("%Y-%m-%d %H:%M:%S")})


def tags() -> Counter[tuple[str, str]]:
    return Counter((c["id"], c["tag"]) for c in recording.CALLS)


async def test_every_entry_runs_once_over_repeated_polls(router) -> None:
    store = MemoryStore()
    d = Dispatcher(router, store, policy=FAST)
    inbox = [msg("1", "RET", "+905550000001"), msg("2", "merhaba", "+905550000002")]
    for _ in range(3):
        await d.process(inbox)
    inbox.append(msg("3", "ret!", "+905550000003"))
    report = await d.process(inbox)
    assert report.done == 1 and report.seen == 3
    assert tags() == Counter({("1", "reply"): 1, ("1", "block"): 1, ("2", "default"): 1,
                              ("3", "reply"): 1, ("3", "block"): 1})
    assert await store.unfinished(["1", "2", "3"]) == []
    assert (await store.counts())["done"] == 3
    await d.aclose()


async def test_handlers_receive_message_match_and_context(router) -> None:
    d = Dispatcher(router, MemoryStore(), namespace="acme")
    await d.process([msg("7", "Ret.")])
    reply, block = recording.CALLS
    assert reply["kind"] == "sync" and reply["thread"].startswith("keyrouter-handler")
    assert block["kind"] == "async"
    assert reply["match"].rule == "optout" and reply["match"].keyword == "RET"
    assert reply["normalized"] == "ret"
    assert reply["key"] != block["key"] and reply["key"].startswith("kr-")
    other = Dispatcher(router, MemoryStore(), namespace="other")
    await other.process([msg("7", "RET")])
    assert recording.CALLS[2]["key"] != reply["key"]  # namespaces never share keys
    await d.aclose()
    await other.aclose()


async def test_a_failing_entry_is_retried_and_earlier_entries_do_not_repeat(router) -> None:
    store = MemoryStore()
    d = Dispatcher(router, store, policy=FAST)
    recording.FAILS[("1", "block")] = 2
    reports = [await d.process([msg("1", "RET")]) for _ in range(4)]
    assert [r.retrying for r in reports] == [1, 1, 0, 0]
    assert reports[2].done == 1
    assert tags() == Counter({("1", "reply"): 1, ("1", "block"): 1})
    block = next(c for c in recording.CALLS if c["tag"] == "block")
    assert block["attempt"] == 3
    assert (await store.counts())["failed"] == 2
    await d.aclose()


async def test_retries_wait_for_their_backoff(router) -> None:
    store = MemoryStore()
    d = Dispatcher(router, store, policy=RetryPolicy(base_delay=60, jitter=0))
    recording.FAILS[("1", "reply")] = 1
    await d.process([msg("1", "RET")])
    report = await d.process([msg("1", "RET")])
    assert report.deferred == 1 and tags() == Counter()
    await d.aclose()


async def test_after_the_last_attempt_the_message_is_a_dead_letter(router) -> None:
    store = MemoryStore()
    d = Dispatcher(router, store, policy=FAST)
    recording.FAILS[("1", "block")] = 99
    for _ in range(5):
        await d.process([msg("1", "RET")])
    (dead,) = await store.dead_letters()
    assert dead.id == "1" and dead.rule == "optout" and dead.attempts == 3
    assert "planned failure of block" in dead.error
    assert dead.row["text"] == "RET"
    assert tags() == Counter({("1", "reply"): 1})
    # retried by hand: the reply that succeeded is not sent again
    recording.FAILS.clear()
    assert await store.retry_dead("1")
    await d.process([msg("1", "RET")])
    assert tags() == Counter({("1", "reply"): 1, ("1", "block"): 1})
    assert await store.dead_letters() == []
    await d.aclose()


async def test_permanent_errors_skip_the_retries(router) -> None:
    store = MemoryStore()
    d = Dispatcher(router, store, policy=FAST)
    report = await d.process([msg("9", "bozuk")])
    assert report.dead == 1
    (dead,) = await store.dead_letters()
    assert dead.attempts == 1 and "PermanentError: this number can never be handled" in dead.error
    await d.aclose()


async def test_messages_older_than_max_age_are_skipped(router) -> None:
    store = MemoryStore()
    d = Dispatcher(router, store)
    report = await d.process([msg("1", "ESKI", minutes_ago=90), msg("2", "ESKI", "+905550000009")])
    assert report.skipped == 1 and report.done == 1
    assert tags() == Counter({("2", ""): 1})
    assert (await store.counts())["skipped"] == 1
    assert await store.unfinished(["1"]) == []
    await d.aclose()


async def test_horizon_and_duplicates_are_ignored(router) -> None:
    d = Dispatcher(router, MemoryStore(), horizon=timedelta(days=1))
    report = await d.process([msg("1", "RET", minutes_ago=2 * 24 * 60), msg("2", "x"), msg("2", "x")])
    assert report.ignored == 2 and report.done == 1
    assert tags() == Counter({("2", "default"): 1})
    await d.aclose()


async def test_one_senders_messages_run_in_order_and_wait_for_a_failed_one(router) -> None:
    store = MemoryStore()
    d = Dispatcher(router, store, policy=RetryPolicy(base_delay=60, jitter=0))
    first = msg("b-first", "RET", minutes_ago=5)
    second = msg("a-second", "merhaba", minutes_ago=1)
    other = msg("c-other", "merhaba", sender="+905559999999", minutes_ago=1)
    recording.FAILS[("b-first", "reply")] = 1
    report = await d.process([second, other, first])
    assert report.retrying == 1 and report.deferred == 1 and report.done == 1
    assert tags() == Counter({("c-other", "default"): 1})  # a-second waits for b-first


async def test_order_within_a_sender_is_by_received_time(router) -> None:
    d = Dispatcher(router, MemoryStore())
    await d.process([msg("z", "merhaba", minutes_ago=1), msg("y", "RET", minutes_ago=3),
                     msg("x", "hello", minutes_ago=2)])
    assert [c["id"] for c in recording.CALLS] == ["y", "y", "x", "z"]
    await d.aclose()


async def test_a_stop_between_entries_releases_the_rest(write_rules) -> None:
    store = MemoryStore()
    stopping = asyncio.Event()

    async def stop_soon() -> None:
        await asyncio.sleep(0.1)
        stopping.set()

    slow_rules = Router(load_rules(write_rules("""
        version: 1
        rules:
          - name: two
            keywords: [RET]
            handlers: [{recording:slow: {seconds: 0.3, tag: a}}, {recording:record: {tag: b}}]
    """)))
    d = Dispatcher(slow_rules, store, stopping=stopping)
    await asyncio.gather(d.process([msg("1", "RET")]), stop_soon())
    assert tags() == Counter({("1", "a"): 1})  # the running handler finished; b did not start
    other = Dispatcher(slow_rules, store)  # another worker can take it at once: the lease is free
    await other.process([msg("1", "RET")])
    assert tags() == Counter({("1", "a"): 1, ("1", "b"): 1})
    await d.aclose()
    await other.aclose()


async def test_handler_time_limit_is_a_failure(router) -> None:
    store = MemoryStore()
    d = Dispatcher(router, store, policy=FAST, handler_timeout=0.05)
    report = await d.process([msg("1", "yavas")])
    assert report.retrying == 1
    await d.aclose()


async def test_two_dispatchers_share_the_work_without_repeats(router) -> None:
    store = MemoryStore()
    one, two = Dispatcher(router, store), Dispatcher(router, store)
    inbox = [msg(str(i), "RET" if i % 2 else "merhaba", sender=f"+90555{i:07d}") for i in range(200)]
    await asyncio.gather(one.process(inbox), two.process(inbox), one.process(inbox))
    counts = tags()
    assert len(counts) == 300 and set(counts.values()) == {1}
    await one.aclose()
    await two.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_max_age_decides_once_so_retries_are_never_skipped(write_rules) -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    rules = Router(load_rules(write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            max_age: 1h
            handlers: [{recording:record: {tag: reply}}, {recording:record: {tag: block}}]
    """)))
    d = Dispatcher(rules, store, policy=RetryPolicy(max_attempts=2, base_delay=60, jitter=0), clock=clock)
    message = msg("1", "RET", minutes_ago=59)
    recording.FAILS[("1", "block")] = 5
    await d.process([message])  # reply done, block fails: retry in 60 s
    clock.now += 2 * 3600  # now far older than max_age
    await d.process([message])  # second and last attempt fails: dead letter
    assert tags() == Counter({("1", "reply"): 1})
    assert [d.id for d in await store.dead_letters()] == ["1"]
    recording.FAILS.clear()
    clock.now += 24 * 3600
    assert await store.retry_dead("1")  # retried by hand a day later
    report = await d.process([message])
    assert report.done == 1 and report.skipped == 0
    assert tags() == Counter({("1", "reply"): 1, ("1", "block"): 1})


async def test_a_dead_letter_on_the_first_entry_retried_late_is_not_skipped(write_rules) -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    rules = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: optout, keywords: [RET], max_age: 1h, handlers: [recording:permanent]}
    """)))
    d = Dispatcher(rules, store, clock=clock)
    await d.process([msg("1", "RET", minutes_ago=30)])
    assert len(await store.dead_letters()) == 1
    clock.now += 3 * 3600
    await store.retry_dead("1")
    report = await d.process([msg("1", "RET", minutes_ago=30)])
    assert report.skipped == 0 and report.dead == 1  # it ran again (and failed again)


async def test_a_stop_starts_no_new_message_in_the_running_stage(write_rules) -> None:
    store = MemoryStore()
    stopping = asyncio.Event()
    rules = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [{recording:slow: {seconds: 0.2, tag: s}}]}
    """)))
    d = Dispatcher(rules, store, stopping=stopping, concurrency=2)
    inbox = [msg(str(i), "x", sender=f"+90555{i:07d}") for i in range(20)]

    async def stop_soon() -> None:
        await asyncio.sleep(0.1)
        stopping.set()

    report = (await asyncio.gather(d.process(inbox), stop_soon()))[0]
    assert len(recording.CALLS) == 2  # the two running handlers finished; nothing else started
    assert report.done == 2 and report.deferred == 18
    other = Dispatcher(rules, store)  # the rest were released: another worker takes them at once
    assert (await other.process(inbox)).done == 18


async def test_a_failed_lease_renewal_is_retried(write_rules) -> None:
    class Flaky(MemoryStore):
        failures = 1

        async def renew(self, ids, owner, lease):
            if self.failures:
                self.failures -= 1
                raise ConnectionError("store blip")
            return await super().renew(ids, owner, lease)

    store = Flaky()
    rules = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [{recording:slow: {seconds: 0.7, tag: s}}]}
    """)))
    d = Dispatcher(rules, store, lease=0.3)
    other = Dispatcher(rules, store, lease=0.3)

    async def compete() -> int:
        taken = 0
        for _ in range(6):
            await asyncio.sleep(0.1)
            taken += (await other.process([msg("1", "x")])).done
        return taken

    first, taken = await asyncio.gather(d.process([msg("1", "x")]), compete())
    assert first.done == 1 and taken == 0
    assert len(recording.CALLS) == 1


async def test_a_thread_past_its_time_limit_is_abandoned_and_the_retry_keeps_the_key(write_rules) -> None:
    recording.MAX_RUNNING[0] = 0
    rules = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [{recording:sync_slow: {seconds: 0.6}}]}
    """)))
    store = MemoryStore()
    d = Dispatcher(rules, store, policy=FAST, handler_timeout=0.1)
    first = await d.process([msg("1", "x")])
    # failed at the limit, without waiting for the thread: it still runs, abandoned
    assert first.retrying == 1 and recording.RUNNING[0] == 1
    assert d.abandoned_threads == 1
    while recording.RUNNING[0]:
        await asyncio.sleep(0.05)
    assert d.abandoned_threads == 0  # it returned in the end
    d.handler_timeout = 5
    assert (await d.process([msg("1", "x")])).done == 1
    keys = {c["key"] for c in recording.CALLS}
    assert len(recording.CALLS) == 2 and len(keys) == 1  # the abandoned call and the retry: one key
    await d.aclose()


async def test_undated_messages_are_remembered_past_the_horizon(router) -> None:
    clock = Clock()
    store = MemoryStore(horizon=timedelta(days=1), clock=clock)
    d = Dispatcher(router, store, horizon=timedelta(days=1), clock=clock)
    undated = parse_row({"id": "u1", "text": "merhaba", "sender": "+905550000001"})
    assert not undated.date_known
    assert (await d.process([undated])).done == 1
    clock.now += 30 * 24 * 3600
    later = parse_row({"id": "u1", "text": "merhaba", "sender": "+905550000001"})
    assert (await d.process([later])).done == 0
    assert tags() == Counter({("u1", "default"): 1})


async def test_a_slow_handler_does_not_hold_back_its_batch_mates_records(write_rules) -> None:
    store = MemoryStore()
    rules = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: slow, keywords: [YAVAS], handlers: [{recording:slow: {seconds: 0.8, tag: s}}]}
        default: {handlers: [recording:arecord]}
    """)))
    d = Dispatcher(rules, store, flush_interval=0.05)
    running = asyncio.create_task(d.process([msg("slow", "yavas", "+905550000001"),
                                             msg("fast", "merhaba", "+905550000002")]))
    await asyncio.sleep(0.4)
    assert not running.done()
    assert await store.unfinished(["slow", "fast"]) == ["slow"]  # fast is written down already
    report = await running
    assert report.done == 2


async def test_done_markers_share_a_write_while_others_wait_and_go_at_once_when_none_does(
        write_rules) -> None:
    """One slot, three senders, a flush interval far longer than the test: while a claimed
    message waits for the slot the first marker waits to share a round trip; once nothing waits
    to start, the markers are written at once, not at the interval."""
    store = MemoryStore()
    rules = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: slow, pattern: '.*', handlers: [{recording:slow: {seconds: 0.4, tag: s}}]}
    """)))
    d = Dispatcher(rules, store, flush_interval=60, concurrency=1)
    ids = ["a", "b", "c"]
    running = asyncio.create_task(d.process([msg(i, "x", f"+90555000000{n}")
                                             for n, i in enumerate(ids)]))

    async def when_started(n: int) -> list[str]:
        while len(recording.STARTED) < n:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # well inside the running message's 0.4 s
        return await store.unfinished(ids)

    assert await when_started(2) == ["a", "b", "c"]  # "c" waits to start: "a" waits to share
    assert await when_started(3) == ["c"]  # nothing waits: "a" and "b" are written
    assert (await asyncio.wait_for(running, 10)).done == 3  # the last, long before the interval


async def test_queued_thread_calls_do_not_start_after_a_stop(write_rules) -> None:
    stopping = asyncio.Event()
    rules = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [{recording:sync_slow: {seconds: 0.2}}]}
    """)))
    d = Dispatcher(rules, MemoryStore(), stopping=stopping, concurrency=8, threads=2)
    inbox = [msg(str(i), "x", sender=f"+90555{i:07d}") for i in range(8)]

    async def stop_soon() -> None:
        await asyncio.sleep(0.05)
        stopping.set()

    report = (await asyncio.gather(d.process(inbox), stop_soon()))[0]
    assert len(recording.CALLS) == 2 and report.done == 2 and report.deferred == 6
    await d.aclose()
