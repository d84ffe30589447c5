"""The opt-out path under adversarial inputs and timings: each test holds one way it once failed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime

import pytest
import recording
from test_dispatch_stream import Running

from keyrouter.dispatch import Dispatcher
from keyrouter.message import TURKEY, Message, parse_row
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.retries import RetryPolicy
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.store.memory import MemoryStore
from keyrouter.testing import FakeIletiMerkezi
from keyrouter.worker.intake import Intake

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(TURKEY).timestamp()

    def __call__(self) -> float:
        return self.now


def msg(id: str, text: str, received: float, sender: str = "+905354104818") -> Message:
    when = datetime.fromtimestamp(received, TURKEY)
    return parse_row({"id": id, "text": text, "sender": sender, "number": "+908505550000",
                      "date": when.strftime("%Y-%m-%d %H:%M:%S")})


async def test_a_message_taken_over_from_a_dead_worker_is_not_skipped_by_max_age(
        write_rules) -> None:
    """The first owner was killed inside the first entry (its effect may be out: a blacklist
    call sent) before any progress or failure was written.  The message was young enough when
    it first started; by the time its lease expired it is older than max_age.  Skipping it now
    would leave it half-done: max_age is decided once, at the first attempt.  (A taken-over claim
    cannot tell a started message from one the dead worker only prefetched: it runs either way,
    the safe side for an opt-out.)"""
    clock = Clock()
    store = MemoryStore(clock=clock)
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            max_age: 1h
            handlers: [{recording:record: {tag: block}}, {recording:record: {tag: reply}}]
    """)))
    message = msg("1", "RET", clock.now - 3590)  # ten seconds younger than max_age
    # the first worker claimed it and was killed inside `block`
    assert [c.id for c in await store.claim(["1"], "killed", 60, clock.now)] == ["1"]
    clock.now += 120  # its lease ran out; the message is now older than max_age
    d = Dispatcher(router, store, clock=clock)
    report = await d.process([message])
    await d.aclose()
    assert report.skipped == 0 and report.done == 1
    assert Counter((c["id"], c["tag"]) for c in recording.CALLS) == Counter(
        {("1", "block"): 1, ("1", "reply"): 1})


async def test_a_dead_letter_retried_by_hand_before_the_next_poll_is_published_again(
        fake: FakeIletiMerkezi, client: IletiMerkezi) -> None:
    """Dead-lettering drops the shared row.  Retried by hand before the leader's next poll, the
    message is unfinished again and still in the inbox: the leader must share it again, or no
    worker ever runs it while that leader keeps the fetch lease."""
    clock = Clock()
    store = MemoryStore("ns", clock=clock)
    leader = Intake(store, client, owner="a", lease=60.0)
    assert await leader.acquire(clock.now)
    msg_id = fake.add_message("RET", sender="+905354104818")["id"]
    await leader.fetch()
    assert [m.id for m in await leader.read(full=True)] == [msg_id]
    assert await store.claim([msg_id], "a", 60, clock.now)
    assert await store.dead_letter(msg_id, "a", "boom", rule="optout", row={}, now=clock.now)
    assert await store.retry_dead(msg_id)  # by hand, within the same poll interval
    for _ in range(3):  # the next polls and reads, every worker's full resync included
        await leader.fetch()
        await leader.read(full=True)
    assert [m.id for m in await leader.read(full=True)] == [msg_id]


async def test_a_stale_worker_never_dead_letters_a_message_another_worker_finished(
        write_rules) -> None:
    """Worker A's lease ran out mid-entry (paused, or cut off from the store); B took the message
    over and finished it.  A's entry then fails for the last time: A must not turn B's done
    message into a dead letter (a retry by hand would run every entry again)."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: optout, keywords: [RET], handlers: [{recording:slow: {seconds: 0.5, tag: s}}]}
    """)))
    recording.FAILS[("1", "s")] = 1
    a = Dispatcher(router, store, clock=clock, policy=RetryPolicy(max_attempts=1))
    running = asyncio.create_task(a.process([msg("1", "RET", clock.now - 60)]))
    while not recording.STARTED:  # A claimed it and its handler is running
        await asyncio.sleep(0.01)
    clock.now += 120  # A's lease ran out
    [claim] = await store.claim(["1"], "b", 60, clock.now)
    assert claim.taken_over
    assert await store.finish(["1"], "b") == []  # B ran it and marked it done
    await running
    await a.aclose()
    assert await store.dead_letters() == []
    assert await store.unfinished(["1"]) == []
    assert (await store.counts())["dead"] == 0


async def test_a_message_whose_own_lease_ran_out_mid_message_is_not_skipped_by_max_age(
        write_rules) -> None:
    """This worker's lease ran out while its first entry ran (the store unreachable, the process
    paused) and nobody took the message over: the progress write is refused, and the message is
    claimed again by the same worker, with no progress and no attempt on record.  It started
    young enough; it must not be skipped half-done now that it is older than max_age."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            max_age: 1h
            handlers: [{recording:slow: {seconds: 0.3, tag: block}}, {recording:record: {tag: reply}}]
    """)))
    d = Dispatcher(router, store, clock=clock)
    running = Running(d)
    d.offer([msg("1", "RET", clock.now - 3590)])
    while not recording.STARTED:  # its first entry runs: max_age was decided
        await asyncio.sleep(0.01)
    clock.now += 120  # the lease ran out under the running entry; now older than max_age
    deadline = time.monotonic() + 20
    while await store.unfinished(["1"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await running.stop()
    assert (await store.counts())["skipped"] == 0
    assert {c["tag"] for c in recording.CALLS} == {"block", "reply"}


async def test_a_dead_letter_does_not_hold_its_senders_later_messages_on_any_worker(
        write_rules) -> None:
    """A sender's earlier message that fails for good goes to the dead letters; the sender's
    later messages then run, in order, on whichever worker (they are not held for ever)."""
    store = MemoryStore()
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - name: broken
            keywords: [BOZUK]
            handlers: [{recording:record: {tag: first}}, recording:permanent]
          - {name: optout, keywords: [RET], handlers: [{recording:arecord: {tag: ret}}]}
    """)))
    now = time.time()
    inbox = [msg("1", "BOZUK", now - 30), msg("2", "RET", now - 20), msg("3", "RET", now - 10)]
    workers = [Running(Dispatcher(router, store, owner=name)) for name in ("a", "b")]
    for w in workers:
        w.dispatcher.offer(inbox)
    deadline = time.monotonic() + 20
    while await store.unfinished(["1", "2", "3"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for w in workers:
        await w.stop()
    assert [d.id for d in await store.dead_letters()] == ["1"]
    assert [(c["id"], c["tag"]) for c in recording.CALLS] == [
        ("1", "first"), ("2", "ret"), ("3", "ret")]


async def test_a_late_earlier_message_waits_for_a_later_one_running_on_another_worker(
        write_rules) -> None:
    """Worker A runs the sender's BASLA; B tried it (held by A).  Then a RET dated earlier
    arrives late at both: B must not start it beside A's BASLA (one message of a sender at a
    time, across workers); both put it behind, as A does for the message it runs."""
    store = MemoryStore()
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [{recording:slow: {seconds: 1.0, tag: s}}]}
    """)))
    now = time.time()
    a = Running(Dispatcher(router, store, owner="a"))
    b = Running(Dispatcher(router, store, owner="b"))
    a.dispatcher.offer([msg("m1", "BASLA", now - 10)])
    while not recording.STARTED:
        await asyncio.sleep(0.01)
    b.dispatcher.offer([msg("m1", "BASLA", now - 10)])
    while b.dispatcher._queue.items["m1"].not_before == 0:
        await asyncio.sleep(0.01)  # B tried to claim m1 and was refused
    late = msg("m0", "RET", now - 20)
    a.dispatcher.offer([late])
    b.dispatcher.offer([late])
    deadline = time.monotonic() + 20
    while await store.unfinished(["m0", "m1"]) and time.monotonic() < deadline:
        assert not (recording.STARTED == ["m1", "m0"] and not recording.CALLS), \
            "m0 started on B while m1 still ran on A"
        await asyncio.sleep(0.01)
    await a.stop()
    await b.stop()
    assert [c["id"] for c in recording.CALLS] == ["m1", "m0"]


async def test_a_ret_behind_its_senders_own_survey_answer_is_not_queued_behind_the_campaign(
        write_rules) -> None:
    """The usual campaign pattern: a person answers the survey, then writes RET.  The RET waits
    for that answer (one sender's messages in order), and the answer must therefore be
    scheduled as urgently as the RET behind it, not behind 200 other survey answers."""
    store = MemoryStore()
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            priority: high
            handlers: [{recording:arecord: {tag: ret}}]
          - {name: any, pattern: '.*', handlers: [{recording:slow: {seconds: 0.01, tag: n}}]}
    """)))
    now = time.time()
    campaign = [msg(f"b{i}", "ANKET 1", now - 100 + i * 0.01, sender=f"+90555{i:07d}")
                for i in range(200)]
    person = [msg("s1", "ANKET 2", now - 5), msg("s2", "RET", now - 4)]
    d = Dispatcher(router, store, concurrency=2)
    d.offer(campaign + person)
    running = Running(d)
    deadline = time.monotonic() + 60
    while await store.unfinished(["s2"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await running.stop()
    ids = [c["id"] for c in recording.CALLS]
    assert ids.index("s1") < ids.index("s2")  # the person's own order holds
    # before: after all 200; now after the few that run while the answer's done marker waits
    # for its batch (about 100 ms)
    assert ids.index("s2") < 100, f"the RET ran after {ids.index('s2')} survey answers"


async def test_a_senders_later_messages_wait_for_an_earlier_ones_retry_on_every_worker(
        write_rules) -> None:
    """RET fails once and waits for its retry; two workers hold the sender's later BASLA and
    RET.  Neither starts them before the first RET succeeded, and they run in order."""
    store = MemoryStore()
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: optout, keywords: [RET, BASLA], handlers: [{recording:arecord: {tag: t}}]}
    """)))
    recording.FAILS[("1", "t")] = 2
    now = time.time()
    inbox = [msg("1", "RET", now - 30), msg("2", "BASLA", now - 20), msg("3", "RET", now - 10)]
    policy = RetryPolicy(max_attempts=5, base_delay=0.3, jitter=0)
    workers = [Running(Dispatcher(router, store, owner=name, policy=policy)) for name in "ab"]
    for w in workers:
        w.dispatcher.offer(inbox)
    deadline = time.monotonic() + 30
    while await store.unfinished(["1", "2", "3"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for w in workers:
        await w.stop()
    assert [(c["id"], c["attempt"]) for c in recording.CALLS] == [("1", 3), ("2", 1), ("3", 1)]
