"""The store contract (keyrouter/store/base.py), as one suite every backend runs.

A backend's test module subclasses `StoreContract` and provides the `make_store` fixture: a factory
of stores over ONE shared backend (same dicts, file or Redis), each call with a fresh namespace
unless one is given, and with an optional horizon and clock.  The factory's fixture closes and
cleans up what it made.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

import pytest

from keyrouter.store import HORIZON_MARGIN, Store

LEASE = 30.0
SHORT = 0.2  # a lease the tests outlive by sleeping
DAY = 86400.0


class MakeStore(Protocol):
    def __call__(
        self,
        namespace: str | None = None,
        *,
        horizon: timedelta | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Store: ...


class FakeClock:
    """Epoch seconds that only move when told to."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def ids_of(claimed: list) -> list[str]:
    return [c.id for c in claimed]


class StoreContract:
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def make_store(self) -> MakeStore:
        raise NotImplementedError("a backend's test class provides make_store")

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Store:
        return make_store()

    # -- unfinished -----------------------------------------------------------------------------

    async def test_unfinished_keeps_input_order_and_drops_finished(self, store: Store) -> None:
        ids = ["m5", "m1", "m4", "m2", "m3", "m6"]
        await store.finish(["m1"], "w")
        await store.finish([], "w", skipped=["m2"])
        await store.dead_letter("m3", "w", "boom", rule=None, row={}, now=time.time())
        assert await store.unfinished(ids) == ["m5", "m4", "m6"]
        assert await store.unfinished([]) == []

    async def test_empty_batches_are_no_ops(self, store: Store) -> None:
        assert await store.claim([], "w", LEASE, time.time()) == []
        assert await store.renew([], "w", LEASE) == []
        assert await store.record_success([], "w") == []
        await store.finish([], "w")
        assert await store.counts() == {"done": 0, "skipped": 0, "dead": 0, "failed": 0}

    # -- claim ----------------------------------------------------------------------------------

    async def test_claim_is_exclusive_between_owners(self, store: Store) -> None:
        now = time.time()
        first = await store.claim(["a", "b"], "A", LEASE, now)
        assert ids_of(first) == ["a", "b"]
        assert all(c.attempts == 0 and c.succeeded == frozenset() for c in first)
        assert ids_of(await store.claim(["c", "a", "b"], "B", LEASE, now)) == ["c"]

    async def test_claim_returns_input_order_once_per_id(self, store: Store) -> None:
        got = await store.claim(["z", "y", "z", "x", "y"], "A", LEASE, time.time())
        assert ids_of(got) == ["z", "y", "x"]

    async def test_claim_skips_finished_ids(self, store: Store) -> None:
        await store.finish(["done"], "w", skipped=["skip"])
        await store.dead_letter("dead", "w", "e", rule=None, row={}, now=time.time())
        got = await store.claim(["done", "skip", "dead", "new"], "A", LEASE, time.time())
        assert ids_of(got) == ["new"]

    async def test_expired_lease_is_claimable(self, store: Store) -> None:
        assert ids_of(await store.claim(["a"], "A", SHORT, time.time())) == ["a"]
        assert await store.claim(["a"], "B", LEASE, time.time()) == []
        await asyncio.sleep(SHORT + 0.1)
        assert ids_of(await store.claim(["a"], "B", LEASE, time.time())) == ["a"]
        assert await store.renew(["a"], "A", LEASE) == []
        assert await store.claim(["a"], "A", LEASE, time.time()) == []

    async def test_reclaim_by_same_owner_renews(self, store: Store) -> None:
        await store.claim(["a"], "A", 0.4, time.time())
        await asyncio.sleep(0.25)
        assert ids_of(await store.claim(["a"], "A", 0.4, time.time())) == ["a"]
        await asyncio.sleep(0.25)  # past the first lease, inside the renewed one
        assert await store.claim(["a"], "B", LEASE, time.time()) == []

    async def test_renew_extends_only_held_leases(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a", "b"], "A", 0.4, now)
        await store.claim(["c"], "B", LEASE, now)
        assert await store.renew(["a", "c", "nobody", "b"], "A", 0.4) == ["a", "b"]
        await asyncio.sleep(0.25)
        assert await store.renew(["b"], "A", 0.4) == ["b"]
        await asyncio.sleep(0.25)  # a's renewed lease is over, b's is not
        assert ids_of(await store.claim(["a", "b"], "C", LEASE, time.time())) == ["a"]

    async def test_retry_time_is_respected(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        assert await store.fail("a", "A", "timeout", retry_at=now + 100) == 1
        assert await store.claim(["a"], "B", LEASE, now) == []
        assert await store.claim(["a"], "B", LEASE, now + 99.5) == []
        got = await store.claim(["a"], "B", LEASE, now + 100)  # retry_at <= now: claimable
        assert [(c.id, c.attempts) for c in got] == [("a", 1)]

    async def test_concurrent_claims_take_each_id_exactly_once(self, store: Store) -> None:
        ids = [f"msg-{i}" for i in range(200)]
        owners = [f"owner-{n}" for n in range(12)]

        async def worker(owner: str) -> list[str]:
            order = ids[:]
            random.Random(owner).shuffle(order)
            got: list[str] = []
            for i in range(0, len(order), 17):
                got += ids_of(await store.claim(order[i : i + 17], owner, LEASE, time.time()))
            return got

        results = await asyncio.gather(*(worker(o) for o in owners))
        counts = Counter(id for got in results for id in got)
        assert set(counts) == set(ids)
        assert set(counts.values()) == {1}

    # -- progress and failures ------------------------------------------------------------------

    async def test_fail_counts_attempts_and_keeps_progress(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        assert await store.record_success([("a", "h1")], "A") == []
        assert await store.fail("a", "A", "e1", retry_at=now) == 1
        (c,) = await store.claim(["a"], "B", LEASE, now)  # the failure released A's lease
        assert (c.attempts, c.succeeded) == (1, frozenset({"h1"}))
        assert await store.record_success([("a", "h2"), ("a", "h1")], "B") == []
        assert await store.fail("a", "B", "e2", retry_at=now) == 2
        (c,) = await store.claim(["a"], "C", LEASE, now)
        assert (c.attempts, c.succeeded) == (2, frozenset({"h1", "h2"}))
        assert (await store.counts())["failed"] == 2

    async def test_fail_by_a_non_holder_leaves_the_lease(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        assert await store.fail("a", "B", "late", retry_at=now) == 1
        assert await store.claim(["a"], "C", LEASE, now) == []
        assert ids_of(await store.claim(["a"], "A", LEASE, now)) == ["a"]

    async def test_record_success_is_fenced_by_the_lease(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", SHORT, now)
        await store.claim(["b"], "A", LEASE, now)
        await asyncio.sleep(SHORT + 0.1)
        await store.claim(["a"], "B", LEASE, time.time())
        lost = await store.record_success([("a", "x"), ("b", "y"), ("a", "z"), ("c", "w")], "A")
        assert lost == ["a", "c"]
        assert await store.record_success([("a", "mine")], "B") == []
        await store.fail("a", "B", "e", retry_at=now)
        await store.fail("b", "A", "e", retry_at=now)
        got = {c.id: c.succeeded for c in await store.claim(["a", "b", "c"], "C", LEASE, now)}
        assert got == {"a": frozenset({"mine"}), "b": frozenset({"y"}), "c": frozenset()}

    # -- finishing ------------------------------------------------------------------------------

    async def test_finish_is_idempotent(self, store: Store) -> None:
        await store.claim(["a", "b"], "A", LEASE, time.time())
        await store.finish(["a", "b"], "A")
        await store.finish(["a", "b", "a"], "A")
        await store.finish(["b"], "someone else")
        assert await store.unfinished(["a", "b"]) == []
        assert await store.claim(["a", "b"], "A", LEASE, time.time()) == []
        assert (await store.counts())["done"] == 2

    async def test_finish_drops_progress_retry_and_lease(self, make_store: MakeStore) -> None:
        clock = FakeClock()
        store = make_store(horizon=timedelta(days=1), clock=clock)
        await store.claim(["a"], "A", LEASE, clock())
        await store.record_success([("a", "h1")], "A")
        await store.fail("a", "A", "e", retry_at=clock() + 50)
        await store.claim(["a"], "A", LEASE, clock() + 50)
        await store.finish(["a"], "A")
        clock.advance((timedelta(days=2) + HORIZON_MARGIN).total_seconds())  # marker forgotten
        assert await store.unfinished(["a"]) == ["a"]
        (c,) = await store.claim(["a"], "B", LEASE, clock())
        assert (c.attempts, c.succeeded) == (0, frozenset())

    async def test_skipped_ids_are_finished_and_counted(self, store: Store) -> None:
        await store.finish(["a"], "w", skipped=["s1", "s2"])
        await store.finish([], "w", skipped=["s1"])
        assert await store.unfinished(["s1", "a", "s2", "x"]) == ["x"]
        assert await store.counts() == {"done": 1, "skipped": 2, "dead": 0, "failed": 0}

    # -- dead letters ---------------------------------------------------------------------------

    async def test_dead_letter_finishes_and_records(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        await store.record_success([("a", "h1")], "A")
        await store.fail("a", "A", "first", retry_at=now)
        await store.claim(["a"], "A", LEASE, now)
        row = {"id": "a", "body": "KAYIT Ayşe", "nested": {"n": [1, 2.5, None]}}
        await store.dead_letter("a", "A", "second", rule="kayit", row=row, now=1000.5)
        assert await store.unfinished(["a"]) == []
        assert await store.claim(["a"], "B", LEASE, now) == []
        (d,) = await store.dead_letters()
        assert (d.id, d.error, d.attempts, d.failed_at, d.rule) == ("a", "second", 2, 1000.5, "kayit")
        assert dict(d.row) == row
        assert await store.counts() == {"done": 0, "skipped": 0, "dead": 1, "failed": 2}

    async def test_dead_letters_oldest_first(self, store: Store) -> None:
        for id, at in (("c", 3000.0), ("a", 1000.0), ("b", 2000.0)):
            await store.dead_letter(id, "w", f"err {id}", rule=None, row={}, now=at)
        letters = await store.dead_letters()
        assert [(d.id, d.failed_at, d.rule, d.attempts) for d in letters] == [
            ("a", 1000.0, None, 1),
            ("b", 2000.0, None, 1),
            ("c", 3000.0, None, 1),
        ]

    async def test_retry_dead_makes_it_unfinished_with_progress(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        await store.record_success([("a", "h1")], "A")
        await store.fail("a", "A", "e", retry_at=now + 500)
        await store.dead_letter("a", "A", "e", rule=None, row={}, now=now)
        assert await store.retry_dead("a") is True
        assert await store.dead_letters() == []
        assert await store.unfinished(["a"]) == ["a"]
        (c,) = await store.claim(["a"], "B", LEASE, now)
        assert (c.attempts, c.succeeded) == (0, frozenset({"h1"}))
        assert await store.retry_dead("a") is False
        assert await store.retry_dead("never") is False

    async def test_drop_dead_marks_done(self, store: Store) -> None:
        await store.dead_letter("a", "w", "e", rule=None, row={}, now=time.time())
        assert await store.drop_dead("a") is True
        assert await store.dead_letters() == []
        assert await store.unfinished(["a"]) == []
        assert await store.claim(["a"], "A", LEASE, time.time()) == []
        assert await store.drop_dead("a") is False
        assert await store.drop_dead("never") is False
        assert await store.retry_dead("a") is False

    # -- bookkeeping ----------------------------------------------------------------------------

    async def test_counts_start_at_zero_and_add_up(self, store: Store) -> None:
        assert await store.counts() == {"done": 0, "skipped": 0, "dead": 0, "failed": 0}
        now = time.time()
        await store.fail("f", "w", "e", retry_at=now)
        await store.finish(["d1", "d2"], "w", skipped=["s"])
        await store.dead_letter("x", "w", "e", rule=None, row={}, now=now)
        assert await store.counts() == {"done": 2, "skipped": 1, "dead": 1, "failed": 2}

    async def test_namespaces_are_isolated(self, make_store: MakeStore) -> None:
        one, two = make_store(), make_store()
        now = time.time()
        await one.finish(["a"], "w")
        await one.claim(["b"], "A", LEASE, now)
        await one.dead_letter("c", "w", "e", rule=None, row={}, now=now)
        assert await two.unfinished(["a", "b", "c"]) == ["a", "b", "c"]
        assert ids_of(await two.claim(["a", "b", "c"], "B", LEASE, now)) == ["a", "b", "c"]
        assert await two.dead_letters() == []
        assert await two.counts() == {"done": 0, "skipped": 0, "dead": 0, "failed": 0}
        assert (await one.counts())["done"] == 1

    async def test_odd_ids_round_trip(self, store: Store) -> None:
        odd = [
            "with space",
            "colon:claim:x",
            "ünïcödé ğüşıöç İ",
            "emoji 📩",
            "L" * 5000,
            "*",
            "{tag}",
            "new\nline",
            'quote"\'',
            "123",
            "0123",
            "1e3",
        ]
        now = time.time()
        assert await store.unfinished(odd) == odd
        assert ids_of(await store.claim(odd, "A", LEASE, now)) == odd
        assert await store.renew(odd, "A", LEASE) == odd
        assert await store.record_success([(id, f"h:{id}") for id in odd], "A") == []
        await store.fail(odd[0], "A", "e", retry_at=now)
        await store.dead_letter(odd[1], "A", "e", rule=None, row={"id": odd[1]}, now=now)
        await store.finish(odd[3:], "A")
        assert await store.unfinished(odd) == [odd[0], odd[2]]
        got = await store.claim(odd, "A", LEASE, now)  # odd[2] is still A's: a renewal
        assert [(c.id, c.succeeded) for c in got] == [
            (odd[0], frozenset({f"h:{odd[0]}"})),
            (odd[2], frozenset({f"h:{odd[2]}"})),
        ]
        assert [d.id for d in await store.dead_letters()] == [odd[1]]

    # -- horizon --------------------------------------------------------------------------------

    async def test_done_markers_expire_after_the_horizon(self, make_store: MakeStore) -> None:
        clock = FakeClock()
        horizon = timedelta(days=1)
        store = make_store(horizon=horizon, clock=clock)
        await store.finish(["a"], "w", skipped=["s"])
        window = (horizon + HORIZON_MARGIN).total_seconds()
        clock.advance(window - 3600)
        assert await store.unfinished(["a", "s"]) == []
        clock.advance(3600 + DAY + 1)  # past the window, whatever the time of day
        assert await store.unfinished(["a", "s"]) == ["a", "s"]
        assert ids_of(await store.claim(["a"], "A", LEASE, clock())) == ["a"]
        await store.finish(["a"], "A")
        assert await store.unfinished(["a", "s"]) == ["s"]
        assert (await store.counts())["done"] == 2

    async def test_without_horizon_markers_never_expire(self, make_store: MakeStore) -> None:
        clock = FakeClock()
        store = make_store(clock=clock)
        await store.finish(["a"], "w")
        clock.advance(1000 * DAY)
        assert await store.unfinished(["a"]) == []

    async def test_dead_letters_outlive_the_horizon(self, make_store: MakeStore) -> None:
        clock = FakeClock()
        store = make_store(horizon=timedelta(hours=1), clock=clock)
        await store.dead_letter("a", "w", "e", rule=None, row={}, now=clock())
        clock.advance(30 * DAY)
        assert await store.unfinished(["a"]) == []
        assert [d.id for d in await store.dead_letters()] == ["a"]
