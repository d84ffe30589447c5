"""End to end with several real worker processes on one real Redis and the fake provider (helpers
and fixtures of tests/test_e2e_worker.py): one fetcher per namespace, a fetch leader killed with
SIGKILL, workers killed at random while a load runs."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

import pytest
import test_e2e_worker as e2e
from test_e2e_worker import (
    Harness,
    assert_every_start_ended,
    count,
    get_inbox_calls,
    mobile,
    store_call,
    unfinished,
    wait_started,
    wait_until,
)

pytestmark = pytest.mark.slow
fake, h, redis_client, redis_namespace = e2e.fake, e2e.h, e2e.redis_client, e2e.redis_namespace


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_get_inbox_is_called_about_once_per_interval_with_several_workers(h: Harness,
                                                                          backend: str) -> None:
    h.rules("- recording:to_file: {tag: a}")
    interval = 0.5
    ids = [h.fake.add_message(f"mesaj {i}", sender=mobile(i))["id"] for i in range(20)]
    env = {"KEYROUTER_STORE": f"sqlite:///{h.tmp / 'state.sqlite3'}"} if backend == "sqlite" else {}
    workers = [h.start("run", "--interval", str(interval), **env) for _ in range(3)]
    wait_until(lambda: h.ended(ids, ("a",)), 30, "the first messages", tuple(workers))
    before, started = get_inbox_calls(h), time.monotonic()
    time.sleep(5)
    calls, took = get_inbox_calls(h) - before, time.monotonic() - started
    for w in workers:
        assert w.terminate() == 0, w.stderr()
    # one fetcher: about took / interval calls (jitter +-10 %); three pollers would make 3x that
    assert calls <= 1.5 * took / interval, f"{calls} get-inbox calls in {took:.1f}s"
    assert calls >= 0.5 * took / interval, f"only {calls} get-inbox calls in {took:.1f}s"
    assert count(h.lines(), "start") == {(i, "a"): 1 for i in ids}


def test_kill_9_of_the_fetch_leader_a_new_leader_polls_within_one_lease(
        h: Harness, redis_client: e2e.redis.Redis) -> None:
    h.rules("- recording:to_file: {tag: a, sleep: 0.02}")
    lease = 2.0
    env = {"KEYROUTER_LEASE": str(lease)}
    workers = [h.run_worker(**env) for _ in range(3)]
    ids = [h.fake.add_message(f"ilk {i}", sender=mobile(i))["id"] for i in range(30)]
    wait_until(lambda: h.ended(ids, ("a",)), 30, "the first messages", tuple(workers))

    def leader() -> int:  # the pid whose log says it fetches now (the latest such line wins)
        found = [(w.stderr().rfind("now fetches for namespace"), w) for w in workers]
        at, w = max(found, key=lambda pair: pair[0])
        assert at >= 0, "no worker says it fetches"
        return w.proc.pid

    victim = next(w for w in workers if w.proc.pid == leader())
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    killed_at = time.monotonic()
    # entries the victim started whose success the store had not recorded: these may run again
    in_flight = {(x.id, x.tag) for x in h.lines() if x.kind == "start" and x.pid == victim.proc.pid} \
        - e2e.recorded(redis_client, h.namespace, ids)
    polls_at_kill = get_inbox_calls(h)
    rest = tuple(w for w in workers if w is not victim)
    wait_until(lambda: get_inbox_calls(h) > polls_at_kill, 30, "a poll by a new leader", rest,
               step=0.01)
    # the lease (2 s), plus one interval for the next try, plus a loaded machine's slack
    assert time.monotonic() - killed_at < lease + 4.0
    assert sum("now fetches for namespace" in w.stderr() for w in rest) >= 1
    more = [h.fake.add_message(f"sonra {i}", sender=mobile(100 + i))["id"] for i in range(30)]
    wait_until(lambda: not unfinished(h.namespace, ids + more), 30, "every message done", rest)
    for w in rest:
        assert w.terminate() == 0, w.stderr()
    lines = h.lines()
    assert {(x.id, x.tag) for x in lines if x.kind == "end"} == {(i, "a") for i in ids + more}
    assert store_call(h.namespace, "dead_letters") == []
    # nothing ran twice unless it was in flight in the killed process
    again = {e for e, n in count(lines, "start").items() if n > 1}
    assert again <= in_flight, f"repeated without a kill: {again - in_flight}"
    assert all(len({x.key for x in found}) == 1 for found in e2e.by_entry(lines).values())
    assert_every_start_ended([x for x in lines if x.pid != victim.proc.pid])
    assert Counter(x.pid for x in lines)  # the log is readable


def test_four_workers_with_random_kills_lose_nothing_over_500_messages(
        h: Harness, redis_client: e2e.redis.Redis) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    h.rules("""
        - recording:to_file: {tag: a, sleep: 0.03}
        - recording:to_file: {tag: b, sleep: 0.03}
    """)
    # a lease long enough that a worker slowed down by a loaded machine keeps its claims: a
    # repeat here must come from a kill
    env = {"KEYROUTER_LEASE": "3", "KEYROUTER_CONCURRENCY": "8"}
    workers = [h.run_worker(**env) for _ in range(4)]
    ids: list[str] = []
    in_flight: dict[int, set[tuple[str, str]]] = {}  # killed pid -> entries started, not recorded
    for batch in range(10):  # 500 messages arrive over a few seconds while workers die
        ids += [h.fake.add_message(f"mesaj {n}", sender=mobile(n % 150))["id"]
                for n in range(batch * 50, batch * 50 + 50)]
        time.sleep(rng.uniform(0.2, 0.6))
        if batch % 2 == 1:
            victim = workers.pop(rng.randrange(len(workers)))
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            done_now = e2e.recorded(redis_client, h.namespace, ids)
            started = {(x.id, x.tag) for x in h.lines() if x.kind == "start" and x.pid == victim.proc.pid}
            in_flight[victim.proc.pid] = started - done_now
            workers.append(h.run_worker(**env))
    wait_until(lambda: not unfinished(h.namespace, ids), 120, f"500 messages done (seed {seed})",
               tuple(workers))
    wait_started(*workers)  # the last one may have been started just before the end
    for w in workers:
        assert w.terminate() == 0, w.stderr()
    assert store_call(h.namespace, "dead_letters") == []
    lines = h.lines()
    entries = e2e.by_entry(lines)
    expected = {(i, t) for i in ids for t in "ab"}
    assert set(entries) == expected, f"never started (seed {seed}): {sorted(expected - set(entries))[:5]}"
    assert all(len({x.key for x in found}) == 1 for found in entries.values()), \
        f"a repeat with another key (seed {seed})"
    for entry, found in entries.items():
        starts = [x.pid for x in found if x.kind == "start"]
        assert any(x.kind == "end" for x in found), f"lost: {entry} never ended (seed {seed})"
        for pid in starts[:-1]:  # every run but the last was in flight in a killed process
            assert entry in in_flight.get(pid, set()), \
                f"{entry} repeated after a run in {pid} not in flight at a kill (seed {seed})"
    assert_every_start_ended([x for x in lines if x.pid not in in_flight])
    assert len(Counter(x.pid for x in lines if x.kind == "end")) >= 2, "the work was not shared"
