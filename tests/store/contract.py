"""The store contract (keyrouter/store/roles.py, `Store` in base.py), as one suite every backend runs.

A backend's test module subclasses `StoreContract` and provides the `make_store` fixture: a factory
of stores over ONE shared backend (same dicts, file or Redis), each call with a fresh namespace
unless one is given, and with an optional horizon and clock.  The factory's fixture closes and
cleans up what it made.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol

import pytest

from keyrouter.store import HORIZON_MARGIN, OptOut, Store, SurveyResults, ledger_cursor, open_store
from keyrouter.store.retried import RETRIED_KEY, is_retried_row, retried_row_json

from .conversation_contract import ConversationContract
from .decision_contract import DecisionContract
from .info_contract import InfoContract
from .ledger_contract import LedgerContract
from .reconcile_contract import ReconcileContract

LEASE = 30.0
SHORT = 0.2  # a lease the tests outlive by sleeping
DAY = 86400.0
NONE = {"done": 0, "skipped": 0, "dead": 0, "failed": 0}


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


def zeros(survey: str) -> SurveyResults:
    return SurveyResults(survey, {}, 0, None, 0)


def optout(message_id: str, received_at: float, action: str = "blacklist", **kw: Any) -> OptOut:
    fields: dict[str, Any] = {"number": "+905551112233", "keyword": "IPTAL", "handled_at": 9e9}
    return OptOut(**{**fields, **kw}, action=action, message_id=message_id, received_at=received_at)


class StoreContract(ConversationContract, DecisionContract, LedgerContract, ReconcileContract,
                    InfoContract):
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

    async def test_claim_limit_takes_the_first_claimable(self, store: Store) -> None:
        now = time.time()
        await store.finish(["done"], "w")
        await store.claim(["held"], "B", LEASE, now)
        ids = ["done", "a", "held", "a", "b", "c", "d"]
        assert await store.claim(ids, "A", LEASE, now, limit=0) == []
        assert ids_of(await store.claim(ids, "A", LEASE, now, limit=2)) == ["a", "b"]
        # "a" and "b" are A's already: re-claiming renews them and counts toward the limit
        assert ids_of(await store.claim(ids, "A", LEASE, now, limit=3)) == ["a", "b", "c"]
        assert ids_of(await store.claim(ids, "C", LEASE, now, limit=5)) == ["d"]
        assert ids_of(await store.claim(ids, "A", LEASE, now, limit=None)) == ["a", "b", "c"]

    async def test_taken_over_marks_a_claim_over_another_owners_expired_lease(
        self, store: Store
    ) -> None:
        now = time.time()
        fresh = await store.claim(["a", "b", "c", "d"], "A", SHORT, now)
        assert [c.taken_over for c in fresh] == [False] * 4
        await store.release(["c"], "A")  # a clean hand-over
        assert await store.fail("d", "A", "e", retry_at=now) == 1  # released by the failure
        await asyncio.sleep(SHORT + 0.1)
        got = await store.claim(["a", "c", "d"], "B", LEASE, time.time())
        assert [(c.id, c.taken_over) for c in got] == [("a", True), ("c", False), ("d", False)]
        # A's own expired lease, retaken by A: no take-over
        again = await store.claim(["b"], "A", LEASE, time.time())
        assert [(c.id, c.taken_over) for c in again] == [("b", False)]
        # B renewing its own lease: no take-over
        assert [c.taken_over for c in await store.claim(["a"], "B", LEASE, time.time())] == [False]

    # -- fetch lease and published rows ---------------------------------------------------------

    async def test_fetch_lease_is_exclusive_renewable_and_fenced(self, make_store: MakeStore) -> None:
        a = make_store()
        b = make_store(a.namespace)  # another worker on the same namespace
        first = await a.acquire_fetch("A", LEASE, time.time())
        assert isinstance(first, int)
        assert await b.acquire_fetch("B", LEASE, time.time()) is None
        assert await a.acquire_fetch("A", LEASE, time.time()) == first  # renewed, same token
        await b.release_fetch("B")  # not B's: nothing happens
        assert await b.acquire_fetch("B", LEASE, time.time()) is None
        assert await a.acquire_fetch("A", SHORT, time.time()) == first  # a renewal sets the length
        await asyncio.sleep(SHORT + 0.1)  # A died: its lease runs out
        second = await b.acquire_fetch("B", LEASE, time.time())
        assert second is not None and second > first
        assert await a.acquire_fetch("A", LEASE, time.time()) is None
        assert await a.publish([("m1", '{"id": "m1"}')], first) == -1  # the old leader is fenced
        assert await b.publish([("m1", '{"id": "m1"}')], second) == 1
        assert await a.published(0) == (await b.published(0))
        await b.release_fetch("B")  # a clean stop: A takes over at once
        third = await a.acquire_fetch("A", LEASE, time.time())
        assert third is not None and third > second
        assert await b.publish([("m2", "{}")], second) == -1
        assert await a.publish([("m2", "{}")], third) == 1
        assert [id for id, _ in (await b.published(0))[1]] == ["m1", "m2"]

    async def test_fetch_token_grows_when_the_holder_retakes_an_expired_lease(
        self, store: Store
    ) -> None:
        first = await store.acquire_fetch("A", SHORT, time.time())
        await asyncio.sleep(SHORT + 0.1)
        second = await store.acquire_fetch("A", LEASE, time.time())
        assert first is not None and second is not None and second > first
        assert await store.publish([("m", "{}")], first) == -1

    async def test_one_fetch_leader_among_many(self, make_store: MakeStore) -> None:
        namespace = make_store().namespace
        stores = [make_store(namespace) for _ in range(12)]
        tokens = await asyncio.gather(
            *(s.acquire_fetch(f"w{i}", LEASE, time.time()) for i, s in enumerate(stores))
        )
        assert len([t for t in tokens if t is not None]) == 1

    async def test_publish_adds_unfinished_unpublished_rows_in_order(self, store: Store) -> None:
        token = await store.acquire_fetch("L", LEASE, time.time())
        assert token is not None
        assert await store.published(0) == (0, [])
        await store.finish(["done"], "w", skipped=["skipped"])
        await store.dead_letter("dead", "w", "e", rule=None, row={}, now=time.time())
        rows = [("m3", "r3"), ("done", "x"), ("m1", "r1"), ("m3", "again"), ("skipped", "x"),
                ("dead", "x"), ("m2", "r2")]
        assert await store.publish(rows, token) == 3
        cursor, got = await store.published(0)
        assert got == [("m3", "r3"), ("m1", "r1"), ("m2", "r2")]
        assert await store.published(cursor) == (cursor, [])
        # the next poll sees the same inbox plus one: only the new row is added
        assert await store.publish([("m1", "new"), ("m4", "r4"), ("m3", "x")], token) == 1
        later, got = await store.published(cursor)
        assert later > cursor and got == [("m4", "r4")]
        assert await store.publish([], token) == 0
        assert (await store.published(0))[1] == [("m3", "r3"), ("m1", "r1"), ("m2", "r2"), ("m4", "r4")]

    async def test_finishing_drops_the_published_row(self, store: Store) -> None:
        token = await store.acquire_fetch("L", LEASE, time.time())
        assert token is not None
        ids = ["d", "s", "x", "f", "held", "u", "keep"]
        assert await store.publish([(id, f"row {id}") for id in ids], token) == len(ids)
        now = time.time()
        await store.claim(["held"], "B", LEASE, now)
        assert await store.finish(["d", "held"], "A", skipped=["s"]) == ["held"]  # held: fenced
        await store.dead_letter("x", "A", "e", rule=None, row={}, now=now)
        assert await store.fail("f", "A", "e", retry_at=now) == 1  # a failure keeps the row
        await store.unpublish(["u", "never published"])
        await store.unpublish([])
        assert (await store.published(0))[1] == [("f", "row f"), ("held", "row held"), ("keep", "row keep")]
        # a finished id is never published again; an unpublished one can be
        assert await store.publish([("d", "again"), ("u", "again"), ("x", "again")], token) == 1
        assert (await store.published(0))[1][-1] == ("u", "again")
        assert await store.retry_dead("x") is True  # unfinished again, shared from its own row
        assert await store.publish([("x", "again")], token) == 0
        assert (await store.published(0))[1][-1] == ("x", retried_row_json({}))
        assert await store.finish(["f", "held", "keep", "u", "x"], "B") == []
        assert await store.published(0) == ((await store.published(0))[0], [])

    async def test_published_survives_a_lost_cursor(self, store: Store) -> None:
        token = await store.acquire_fetch("L", LEASE, time.time())
        assert token is not None
        await store.publish([("a", "1"), ("b", "2")], token)
        cursor, _ = await store.published(0)
        # a cursor greater than any handed out (the store lost its data): read from the start
        assert await store.published(cursor + 1000) == (cursor, [("a", "1"), ("b", "2")])

    async def test_published_rows_are_per_namespace(self, make_store: MakeStore) -> None:
        one, two = make_store(), make_store()
        t1 = await one.acquire_fetch("L", LEASE, time.time())
        t2 = await two.acquire_fetch("L", LEASE, time.time())
        assert t1 is not None and t2 is not None
        await one.publish([("a", "one")], t1)
        await two.publish([("a", "two")], t2)
        await one.finish(["a"], "w")
        assert (await one.published(0))[1] == []
        assert (await two.published(0))[1] == [("a", "two")]

    # -- activity (the dashboard's last poll and messages per rule) ----------------------------

    async def test_last_poll_keeps_the_latest(self, make_store: MakeStore) -> None:
        store, other = make_store(), make_store()
        assert await store.last_poll() is None
        await store.record_poll(1_700_000_000.25, 12)
        await store.record_poll(1_700_000_060.5, 0)
        assert await store.last_poll() == (1_700_000_060.5, 0)
        assert await other.last_poll() is None  # per namespace

    async def test_touch_is_a_write_that_changes_nothing_else(self, make_store: MakeStore) -> None:
        store = make_store()
        await store.touch(1_700_000_000.25)
        await store.touch(1_700_000_001.5)
        assert await store.last_poll() is None and await store.counts() == {
            "done": 0, "skipped": 0, "dead": 0, "failed": 0}
        assert await store.unfinished(["a"]) == ["a"]

    async def test_routed_counts_add_up_per_rule_and_hour(self, make_store: MakeStore) -> None:
        clock = FakeClock()
        store, other = make_store(clock=clock), make_store(clock=clock)
        now = int(clock() // 3600)
        assert await store.routed_since(now - 24) == {}
        await store.count_routed({("anket", now): 3, ("iptal", now): 1, ("anket", now - 2): 5})
        await store.count_routed({("anket", now): 2, ("kampanya:ö \x00<b>", now - 1): 1})
        assert await store.routed_since(now - 24) == {
            now: {"anket": 5, "iptal": 1}, now - 1: {"kampanya:ö \x00<b>": 1}, now - 2: {"anket": 5}}
        assert await store.routed_since(now - 1) == {
            now: {"anket": 5, "iptal": 1}, now - 1: {"kampanya:ö \x00<b>": 1}}
        assert await other.routed_since(now - 24) == {}
        await store.count_routed({})  # nothing to add: no error

    async def test_routed_counts_are_bounded_to_48_hours(self, make_store: MakeStore) -> None:
        clock = FakeClock()
        store = make_store(clock=clock)
        now = int(clock() // 3600)
        await store.count_routed({("old", now - 60): 7, ("recent", now - 47): 1, ("now", now): 2})
        got = await store.routed_since(now - 100)
        assert got == {now - 47: {"recent": 1}, now: {"now": 2}}
        clock.advance(48 * 3600)  # later writes prune (memory, SQLite); reads never look back
        await store.count_routed({("later", now + 48): 1})  # beyond 48 hours either way
        assert await store.routed_since(now - 100) == {now + 48: {"later": 1}}

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

    async def test_fail_by_a_non_holder_leaves_the_id_alone(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        await store.record_success([("a", "h1")], "A")
        assert await store.fail("a", "B", "late", retry_at=now + 100) == -1
        assert await store.counts() == NONE
        assert await store.claim(["a"], "C", LEASE, now) == []
        assert await store.renew(["a"], "A", LEASE) == ["a"]
        (c,) = await store.claim(["a"], "A", LEASE, now)  # no attempt counted, no retry time set
        assert (c.attempts, c.succeeded) == (0, frozenset({"h1"}))
        assert await store.fail("a", "A", "mine", retry_at=now) == 1

    async def test_dead_letter_by_a_non_holder_leaves_the_id_alone(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        await store.record_success([("a", "h1")], "A")
        assert await store.dead_letter("a", "B", "late", rule="r", row={"id": "a"}, now=now) is False
        assert await store.dead_letters() == []
        assert await store.unfinished(["a"]) == ["a"]
        assert await store.counts() == NONE
        assert await store.claim(["a"], "C", LEASE, now) == []
        assert await store.renew(["a"], "A", LEASE) == ["a"]
        (c,) = await store.claim(["a"], "A", LEASE, now)
        assert (c.attempts, c.succeeded) == (0, frozenset({"h1"}))
        assert await store.dead_letter("a", "A", "mine", rule="r", row={}, now=now) is True
        assert [(d.id, d.error, d.attempts) for d in await store.dead_letters()] == [("a", "mine", 1)]

    async def test_a_stale_worker_is_fenced_after_a_takeover(self, store: Store) -> None:
        """A's lease expires, B claims: A's late finish, fail and dead letter change nothing."""
        now = time.time()
        await store.claim(["a", "b"], "A", SHORT, now)
        await asyncio.sleep(SHORT + 0.1)
        assert ids_of(await store.claim(["a", "b"], "B", LEASE, time.time())) == ["a", "b"]
        assert await store.record_success([("a", "hB")], "B") == []
        assert await store.finish(["a", "b"], "A", skipped=["b", "a"], forever=["a"]) == ["a", "b"]
        assert await store.fail("a", "A", "late", retry_at=now + 100) == -1
        assert await store.dead_letter("b", "A", "late", rule=None, row={}, now=now) is False
        assert await store.dead_letters() == []
        assert await store.unfinished(["a", "b"]) == ["a", "b"]
        assert await store.counts() == NONE
        assert await store.renew(["a", "b"], "B", LEASE) == ["a", "b"]
        got = await store.claim(["a", "b"], "B", LEASE, now)
        assert [(c.id, c.attempts, c.succeeded) for c in got] == [
            ("a", 0, frozenset({"hB"})),
            ("b", 0, frozenset()),
        ]
        assert await store.finish(["a"], "B", skipped=["b"]) == []
        assert await store.unfinished(["a", "b"]) == []
        assert await store.counts() == {"done": 1, "skipped": 1, "dead": 0, "failed": 0}

    async def test_fencing_lets_expired_own_and_absent_leases_through(self, store: Store) -> None:
        """Work done under a lease that expired is still recorded when nobody took over."""
        now = time.time()
        await store.claim(["a", "b", "c", "d"], "A", SHORT, now)
        await asyncio.sleep(SHORT + 0.1)
        assert await store.finish(["a"], "A") == []  # A's own lease, expired
        assert await store.finish([], "B", skipped=["b"]) == []  # A's expired lease
        assert await store.fail("c", "B", "e", retry_at=now) == 1
        assert await store.dead_letter("d", "B", "e", rule=None, row={}, now=now) is True
        assert await store.fail("x", "B", "e", retry_at=now) == 1  # never claimed
        assert await store.dead_letter("y", "B", "e", rule=None, row={}, now=now) is True
        assert await store.unfinished(["a", "b", "c", "d", "x", "y"]) == ["c", "x"]
        assert await store.counts() == {"done": 1, "skipped": 1, "dead": 2, "failed": 4}
        (c,) = await store.claim(["c"], "C", LEASE, now)  # the failure released the lease
        assert c.attempts == 1

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

    # -- release --------------------------------------------------------------------------------

    async def test_release_keeps_progress_and_counts_no_attempt(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a", "b"], "A", LEASE, now)
        await store.record_success([("a", "h1")], "A")
        await store.fail("b", "A", "e", retry_at=now)
        await store.claim(["b"], "A", LEASE, now)
        await store.release(["a", "b", "never claimed", "a"], "A")
        assert await store.unfinished(["a", "b"]) == ["a", "b"]
        assert await store.renew(["a", "b"], "A", LEASE) == []
        got = await store.claim(["a", "b"], "B", LEASE, now)  # at once: no lease left to expire
        assert [(c.id, c.attempts, c.succeeded) for c in got] == [
            ("a", 0, frozenset({"h1"})),
            ("b", 1, frozenset()),
        ]
        assert await store.record_success([("a", "h2")], "A") == ["a"]
        assert await store.counts() == {"done": 0, "skipped": 0, "dead": 0, "failed": 1}

    async def test_release_by_a_non_holder_leaves_the_lease(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        await store.release(["a"], "B")
        await store.release([], "A")
        assert await store.claim(["a"], "C", LEASE, now) == []
        assert await store.renew(["a"], "A", LEASE) == ["a"]

    async def test_release_keeps_the_retry_time(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        await store.fail("a", "A", "e", retry_at=now + 100)
        await store.claim(["a"], "A", LEASE, now + 100)
        await store.release(["a"], "A")
        assert await store.claim(["a"], "B", LEASE, now) == []
        assert ids_of(await store.claim(["a"], "B", LEASE, now + 100)) == ["a"]

    # -- finishing ------------------------------------------------------------------------------

    async def test_finish_is_idempotent(self, store: Store) -> None:
        await store.claim(["a", "b"], "A", LEASE, time.time())
        assert await store.finish(["a", "b"], "A") == []
        assert await store.finish(["a", "b", "a"], "A") == []
        assert await store.finish(["b"], "someone else") == []
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

    async def test_finish_leaves_alone_ids_another_owner_holds(self, store: Store) -> None:
        now = time.time()
        await store.claim(["a", "c"], "A", LEASE, now)
        await store.record_success([("a", "h1")], "A")
        assert await store.fail("c", "A", "e", retry_at=now) == 1
        await store.claim(["c"], "A", LEASE, now)
        left = await store.finish(["a", "b", "a"], "B", skipped=["c", "d"], forever=["a", "c"])
        assert left == ["a", "c"]
        assert await store.unfinished(["a", "b", "c", "d"]) == ["a", "c"]
        assert await store.counts() == {"done": 1, "skipped": 1, "dead": 0, "failed": 1}
        assert await store.claim(["a", "c"], "C", LEASE, now) == []
        assert await store.renew(["a", "c"], "A", LEASE) == ["a", "c"]
        got = await store.claim(["a", "c"], "A", LEASE, now)  # progress and retry state kept
        assert [(c.id, c.attempts, c.succeeded) for c in got] == [
            ("a", 0, frozenset({"h1"})),
            ("c", 1, frozenset()),
        ]
        assert await store.finish(["a"], "A", skipped=["c"]) == []
        assert await store.unfinished(["a", "c"]) == []
        assert await store.counts() == {"done": 2, "skipped": 2, "dead": 0, "failed": 1}

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

    async def test_retry_dead_shares_the_stored_row_whatever_the_inbox_holds(
            self, store: Store) -> None:
        """A retried dead letter runs again from its stored row: retry_dead publishes it (with
        RETRIED_KEY) in the same step, with no poll and no fetch lease; once finished it is gone."""
        row = {"id": "a", "text": "RET", "sender": "+905354104818", "number": "850",
               "date": "2026-01-05 10:00:00"}
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        await store.dead_letter("a", "A", "e", rule="optout", row=row, now=now)
        assert (await store.published(0))[1] == []
        cursor, _ = await store.published(0)
        assert await store.retry_dead("a") is True
        after, rows = await store.published(cursor)
        assert after > cursor and [id for id, _ in rows] == ["a"]
        shared = json.loads(rows[0][1])
        assert shared == {**row, RETRIED_KEY: True} and is_retried_row(shared)
        (c,) = await store.claim(["a"], "B", LEASE, now)
        assert c.attempts == 0
        assert await store.finish(["a"], "B") == []
        assert (await store.published(0))[1] == []

    async def test_retry_dead_shares_a_poison_row_exactly(self, store: Store) -> None:
        await store.dead_letter("p", "A", "e", rule=None, row=POISON_ROW, now=time.time())
        assert await store.retry_dead("p") is True
        [(id, text)] = (await store.published(0))[1]
        assert id == "p" and json.loads(text) == {**POISON_ROW_READ, RETRIED_KEY: True}

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

    async def test_poison_strings_round_trip_everywhere(self, make_store: MakeStore) -> None:
        """Whatever string the provider sends (NUL, lone surrogates: half an emoji split across
        SMS segments, the codec's own marker) is stored and read back exactly."""
        store = make_store()
        ids = POISON
        now = time.time()
        assert await store.unfinished(ids) == ids
        got = await store.claim(ids, "A\x00\ud83d", LEASE, now)
        assert ids_of(got) == ids
        assert await store.renew(ids, "A\x00\ud83d", LEASE) == ids
        entries = [(id, f"{id}:entry\ud800") for id in ids]
        assert await store.record_success(entries, "A\x00\ud83d") == []
        got = await store.claim(ids, "A\x00\ud83d", LEASE, now)
        assert [(c.id, c.succeeded) for c in got] == [(id, frozenset({e})) for id, e in entries]
        token = await store.acquire_fetch("L\x00\udfff", LEASE, now)
        assert token is not None
        assert await store.publish([(id, f'{{"id": "{id}"}}') for id in ids], token) == len(ids)
        assert (await store.published(0))[1] == [(id, f'{{"id": "{id}"}}') for id in ids]
        first, second, *rest = ids
        assert await store.fail(first, "A\x00\ud83d", "error \x00 \ud83d", retry_at=now) == 1
        assert await store.dead_letter(
            second, "A\x00\ud83d", "why \x00\udc00", rule="r\x00", row=POISON_ROW, now=now
        )
        assert await store.finish(rest, "A\x00\ud83d") == []
        assert await store.unfinished(ids) == [first]
        assert [id for id, _ in (await store.published(0))[1]] == [first]
        (d,) = await store.dead_letters()
        assert (d.id, d.error, d.rule, d.attempts) == (second, "why \x00\udc00", "r\x00", 1)
        assert dict(d.row) == POISON_ROW_READ
        assert await store.retry_dead(second) is True
        assert await store.unfinished(ids) == [first, second]

    async def test_poison_strings_in_the_ledger_and_votes(self, store: Store) -> None:
        for i, odd in enumerate(POISON):
            entry = optout(odd, 1000.0 + i, keyword=odd or None, number=f"+90555{i}")
            await store.record_optout(entry)
            assert await store.latest_optout(f"+90555{i}") == entry
            assert await store.vote(odd, odd, odd, policy="last", now=1.0, vote_id=odd) is True
            assert await store.survey_results(odd) == SurveyResults(odd, {odd: 1}, 1, 1.0, 0)
        assert [e.message_id for e in await store.optouts()] == POISON
        asked = [(odd, "blacklist") for odd in POISON] + [("nope\x00", "blacklist")]
        assert await store.optouts_recorded(asked) == {(odd, "blacklist") for odd in POISON}
        newest_first = list(reversed(POISON))
        assert [e.message_id for e in await store.optouts_page(limit=100)] == newest_first
        page, cursor = await store.optouts_scan(limit=3, scan=3, action="blacklist")
        assert [e.message_id for e in page] == newest_first[:3] and cursor is not None
        rest = await store.optouts_page(before=cursor, limit=100)
        assert [e.message_id for e in rest] == newest_first[3:]
        dead = [odd for odd in POISON if odd]
        for i, odd in enumerate(dead):
            await store.dead_letter(odd, "w", f"e {odd}", rule=odd, row={"id": odd}, now=float(i))
        letters = await store.dead_letters_page(limit=100, rules=dead)
        assert [(d.id, d.error, d.rule, dict(d.row)) for d in letters] == [
            (odd, f"e {odd}", odd, {"id": odd}) for odd in reversed(dead)
        ]
        for odd in dead:
            got = await store.get_dead_letter(odd)
            assert got is not None and got.id == odd and dict(got.row) == {"id": odd}

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

    async def test_forever_markers_outlive_the_horizon(self, make_store: MakeStore) -> None:
        clock = FakeClock()
        store = make_store(horizon=timedelta(days=1), clock=clock)
        left = await store.finish(["a", "b"], "w", skipped=["s", "t"], forever=["a", "t", "other"])
        assert left == []
        assert await store.finish(["c"], "w") == []  # an expiring marker first ...
        assert await store.finish(["c"], "w", forever=["c"]) == []  # ... made permanent
        await store.claim(["held"], "A", LEASE, clock())
        assert await store.finish(["held"], "B", forever=["held"]) == ["held"]
        clock.advance(30 * DAY)
        ids = ["a", "b", "s", "t", "c", "other", "held"]
        assert await store.unfinished(ids) == ["b", "s", "other", "held"]
        assert await store.claim(["a", "t", "c"], "A", LEASE, clock()) == []
        assert await store.finish(["a"], "w", forever=["a"]) == []  # already finished
        assert await store.counts() == {"done": 3, "skipped": 2, "dead": 0, "failed": 0}
        plain = make_store(clock=clock)  # no horizon: every marker is kept anyway
        assert await plain.finish(["a"], "w", skipped=["s"], forever=["a", "s"]) == []
        clock.advance(1000 * DAY)
        assert await plain.unfinished(["a", "s", "n"]) == ["n"]
        assert await plain.counts() == {"done": 1, "skipped": 1, "dead": 0, "failed": 0}

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

    # -- opt-out ledger -------------------------------------------------------------------------

    async def test_optout_ledger_is_idempotent_per_message_and_action(self, store: Store) -> None:
        block = optout("m1", 1000.5, keyword="İPTAL", handled_at=1001.25)
        await store.record_optout(block)
        await store.record_optout(replace(block, received_at=1.0, handled_at=2000.0))  # a retry
        unblock = optout("m1", 1000.5, "unblacklist", keyword=None, handled_at=1003.0)
        await store.record_optout(unblock)
        await store.record_optout(unblock)
        assert await store.optouts() == [block, unblock]
        assert await store.optouts(since=1000.5) == [block, unblock]
        assert await store.optouts(since=1000.6) == []

    async def test_optouts_oldest_received_first_and_since(self, store: Store) -> None:
        assert await store.optouts() == []
        at = [1712345678.123456, 1000.25, 2000.0, 5000.0, 2000.0, 1e-3]
        entries = [optout(f"m{i}", t, number=f"+90555000000{i}") for i, t in enumerate(at)]
        entries.append(optout("m|x:y İ", 2000.0, "unblacklist"))  # odd id, tied received_at
        for entry in entries:
            await store.record_optout(entry)
        by_time = sorted(entries, key=lambda e: (e.received_at, f"{e.message_id}|{e.action}"))
        assert await store.optouts() == by_time
        assert await store.optouts(since=0) == by_time
        assert await store.optouts(since=2000.0) == [e for e in by_time if e.received_at >= 2000.0]
        assert [e.received_at for e in await store.optouts(since=2000.0)] == [
            2000.0, 2000.0, 2000.0, 5000.0, 1712345678.123456,
        ]
        assert await store.optouts(since=1712345678.123457) == []

    async def test_a_failed_confirmation_line_never_becomes_the_latest(self, store: Store) -> None:
        """Lines outside DECISIONS (an optional reply given up: "reply_failed") are in the ledger
        and never the number's latest_optout, on any backend."""
        block = optout("m1", 1000.0)
        await store.record_optout(block)
        failed = optout("m2", 2000.0, "reply_failed", outcome="PermanentApiError: 402")
        await store.record_optout(failed)
        assert await store.latest_optout(block.number) == block
        assert await store.optouts() == [block, failed]
        assert await store.latest_optout("+905559998877") is None
        await store.record_optout(optout("m3", 3000.0, "reply_failed", number="+905559998877"))
        assert await store.latest_optout("+905559998877") is None

    async def test_latest_optout_is_the_latest_received(self, store: Store) -> None:
        number, other = "+905551112233", "+905550000000"
        assert await store.latest_optout(number) is None
        block = optout("m1", 1000.0)
        await store.record_optout(block)
        assert await store.latest_optout(number) == block
        unblock = optout("m2", 2000.0, "unblacklist", keyword="BASLA")
        await store.record_optout(unblock)
        assert await store.latest_optout(number) == unblock
        # an old message retried by hand, recorded last: not the latest
        await store.record_optout(optout("m0", 500.0, "blacklist"))
        # a repeat of m1 (the ledger keeps the first write) does not move the latest either
        await store.record_optout(replace(block, received_at=3000.0))
        assert await store.latest_optout(number) == unblock
        await store.record_optout(optout("m3", 9e9, number=other))
        assert await store.latest_optout(number) == unblock
        assert await store.latest_optout(other) == optout("m3", 9e9, number=other)
        assert await store.latest_optout("+900000000000") is None
        # same received_at: the later id in the order (numeric ids as numbers, "100" after "99");
        # the same message's other effect, recorded last, takes the place
        for id, action, wins in (("99", "unblacklist", True), ("100", "blacklist", True),
                                 ("98", "unblacklist", False), ("100", "iys_ret", True)):
            tie = optout(id, 2000.0, action, handled_at=1.0, number="+2")
            before = await store.latest_optout("+2")
            await store.record_optout(tie)
            assert await store.latest_optout("+2") == (tie if wins else before)
        # an undated line (received_at is when it was first seen) is placed by its id
        undated = optout("101", 500.0, "unblacklist", number="+2", dated=False)
        await store.record_optout(undated)
        assert await store.latest_optout("+2") == undated
        await store.record_optout(optout("97", 9e8, "blacklist", number="+2"))
        assert await store.latest_optout("+2") == undated
        dated = optout("102", 400.0, "blacklist", number="+2")
        await store.record_optout(dated)
        assert await store.latest_optout("+2") == dated
        assert (await store.latest_optout("+2")).dated is True
        assert {e.message_id: e.dated for e in await store.optouts()
                if e.number == "+2"}["101"] is False
        # full precision: a microsecond earlier, recorded later, is not the latest
        at = 1712345678.123457
        await store.record_optout(optout("p1", at, number="+1"))
        await store.record_optout(optout("p2", at - 1e-6, "unblacklist", number="+1"))
        assert await store.latest_optout("+1") == optout("p1", at, number="+1")

    async def test_concurrent_optouts_keep_the_latest(self, make_store: MakeStore) -> None:
        namespace = make_store().namespace
        times = [float(t) for t in random.Random(7).sample(range(1, 10_000), 60)]

        async def record(i: int, at: float) -> None:
            action = ("blacklist", "unblacklist")[i % 2]
            await make_store(namespace).record_optout(optout(f"m{i}", at, action, number="+9"))

        await asyncio.gather(*(record(i, at) for i, at in enumerate(times)))
        latest = await make_store(namespace).latest_optout("+9")
        assert latest is not None and latest.received_at == max(times)
        assert latest.message_id == f"m{times.index(max(times))}"

    # -- paginated reads (the dashboard) --------------------------------------------------------

    async def test_optouts_page_newest_first_with_a_cursor(self, store: Store) -> None:
        # ties on received_at: the greater "message_id|action" first, the reverse of optouts()
        entries = [optout(f"m{i:03d}", 1000.0 + i // 3, "blacklist" if i % 4 else "unblacklist")
                   for i in range(40)]
        for e in random.sample(entries, len(entries)):
            await store.record_optout(e)
        expected = list(reversed(await store.optouts()))
        assert len(expected) == 40
        got, cursor = [], None
        while True:
            page = await store.optouts_page(before=cursor, limit=7)
            assert len(page) <= 7
            if not page:
                break
            got.extend(page)
            cursor = ledger_cursor(page[-1])
        assert got == expected

    async def test_optouts_page_filters_by_time_and_action(self, store: Store) -> None:
        for i in range(30):
            action = "unblacklist" if i % 3 == 0 else "blacklist"
            await store.record_optout(optout(f"m{i}", 100.0 + i, action))
        page = await store.optouts_page(since=110.0, until=120.0, limit=100)
        assert [e.received_at for e in page] == [119.0 - i for i in range(10)]
        page = await store.optouts_page(action="unblacklist", limit=4)
        assert [e.message_id for e in page] == ["m27", "m24", "m21", "m18"]
        nxt = await store.optouts_page(action="unblacklist", before=ledger_cursor(page[-1]), limit=4)
        assert [e.message_id for e in nxt] == ["m15", "m12", "m9", "m6"]
        both = await store.optouts_page(action="blacklist", since=101.0, until=105.0, limit=10)
        assert [e.message_id for e in both] == ["m4", "m2", "m1"]
        # a cursor past `until` and one inside it
        assert [e.message_id for e in await store.optouts_page(
            before=(500.0, "zz", "blacklist"), until=103.0, limit=2)] == ["m2", "m1"]
        assert [e.message_id for e in await store.optouts_page(
            before=ledger_cursor(page[0]), until=129.0, limit=2)] == ["m26", "m25"]
        assert await store.optouts_page(since=1000.0) == []
        assert await store.optouts_page(limit=0) == []
        assert await store.optouts_page(action="nothing-like-this") == []

    async def test_optouts_scan_bounds_what_a_filtered_page_examines(self, store: Store) -> None:
        for i in range(30):
            action = "unblacklist" if i % 3 == 0 else "blacklist"
            await store.record_optout(optout(f"m{i:02d}", 100.0 + i, action))

        async def ids(**kw: Any) -> tuple[list[str], Any]:
            found, nxt = await store.optouts_scan(**kw)
            return [e.message_id for e in found], nxt

        # five examined (m29..m25): one match, and the cursor of the fifth
        assert await ids(action="unblacklist", limit=10, scan=5) == (
            ["m27"], (125.0, "m25", "blacklist"))
        assert await ids(action="unblacklist", limit=10, scan=5, before=(125.0, "m25", "blacklist")) == (
            ["m24", "m21"], (120.0, "m20", "blacklist"))
        assert await ids(action="iys_onay", limit=10, scan=4) == ([], (126.0, "m26", "blacklist"))
        # the page fills first: its last entry is the cursor
        full = (["m29", "m28"], (128.0, "m28", "blacklist"))
        assert await ids(action="blacklist", limit=2, scan=10) == full
        assert await ids(limit=10, scan=3) == (["m29", "m28", "m27"], (127.0, "m27", "unblacklist"))
        # the ledger ends first: no cursor
        assert await ids(since=127.5, limit=10, scan=100) == (["m29", "m28"], None)
        assert await ids(action="unblacklist", since=120.0, limit=10) == (["m27", "m24", "m21"], None)
        # walking scan by scan finds exactly the filtered ledger
        walked, cursor = [], None
        while True:
            found, cursor = await ids(action="unblacklist", limit=3, scan=4, before=cursor)
            walked += found
            if cursor is None:
                break
        assert walked == [f"m{i:02d}" for i in range(27, -1, -3)]

    async def test_dead_letters_page_newest_first(self, store: Store) -> None:
        for i in range(25):
            await store.dead_letter(f"d{i:02d}", "w", f"err {i}", rule="r", row={"i": i},
                                    now=1000.0 + i // 2)
        assert await store.dead_letter_count() == 25
        everything = list(reversed(await store.dead_letters()))
        # newest failed first, ties: the greater id first
        assert [d.id for d in everything[:3]] == ["d24", "d23", "d22"]
        pages = [await store.dead_letters_page(offset, 10) for offset in (0, 10, 20, 30)]
        assert [len(p) for p in pages] == [10, 10, 5, 0]
        assert [d.id for p in pages for d in p] == sorted((d.id for d in everything), reverse=True)
        assert pages[0][0] == everything[0]
        oldest = await store.dead_letters_page(0, 100, oldest_first=True)
        assert oldest == list(reversed([d for p in pages for d in p]))
        assert pages[0][0].row == {"i": 24}

    async def test_dead_letters_page_of_some_rules(self, store: Store) -> None:
        for i in range(30):
            rule = ("optout", "survey", None)[i % 3]
            await store.dead_letter(f"d{i:02d}", "w", "e", rule=rule, row={}, now=100.0 + i)
        page = await store.dead_letters_page(0, 4, rules=["optout"])
        assert [d.id for d in page] == ["d27", "d24", "d21", "d18"]
        page = await store.dead_letters_page(3, 4, rules=["optout", "survey"])
        assert [d.id for d in page] == ["d24", "d22", "d21", "d19"]  # after d28, d27, d25
        assert len(await store.dead_letters_page(0, 100, rules=["optout"])) == 10
        assert await store.dead_letters_page(0, 10, rules=["nope"]) == []
        assert await store.dead_letters_page(0, 10, rules=[]) == []
        page = await store.dead_letters_page(1, 3, rules=["optout"], oldest_first=True)
        assert [d.id for d in page] == ["d03", "d06", "d09"]
        page = await store.dead_letters_page(28, 5, oldest_first=True)
        assert [d.id for d in page] == ["d28", "d29"]

    async def test_optouts_recorded(self, store: Store) -> None:
        await store.record_optout(optout("m|1", 1.0))
        await store.record_optout(optout("m2", 2.0, "iys_ret"))
        asked = [("m|1", "blacklist"), ("m|1", "iys_ret"), ("m2", "iys_ret"), ("x", "blacklist")]
        assert await store.optouts_recorded(asked) == {("m|1", "blacklist"), ("m2", "iys_ret")}
        assert await store.optouts_recorded([]) == set()

    async def test_one_dead_letter_and_the_count_follow_retry_and_drop(self, store: Store) -> None:
        assert await store.get_dead_letter("x") is None
        assert await store.dead_letter_count() == 0
        assert await store.dead_letters_page() == []
        row = {"id": "x", "text": "<script>alert(1)</script>", "n": [1, None]}
        for id, at in (("x", 5.0), ("y", 6.0), ("z", 7.0)):
            await store.dead_letter(id, "w", "boom", rule="kayit", row=row, now=at)
        d = await store.get_dead_letter("x")
        assert d is not None
        assert (d.id, d.error, d.attempts, d.failed_at, d.rule) == ("x", "boom", 1, 5.0, "kayit")
        assert dict(d.row) == row
        assert await store.retry_dead("x")
        assert await store.drop_dead("z")
        assert await store.get_dead_letter("x") is None
        assert await store.dead_letter_count() == 1
        assert [d.id for d in await store.dead_letters_page()] == ["y"]
        # dead again after the retry: back on the first page, newest
        await store.claim(["x"], "w", LEASE, time.time())
        await store.dead_letter("x", "w", "again", rule=None, row={}, now=9.0)
        assert [d.id for d in await store.dead_letters_page()] == ["x", "y"]

    # -- survey votes ---------------------------------------------------------------------------

    async def test_vote_policy_last_replaces_and_moves_counts(self, store: Store) -> None:
        async def vote(voter: str, choice: str, now: float) -> bool:
            return await store.vote("s", voter, choice, policy="last", now=now)

        assert await vote("v1", "a", 100.0) is True
        assert await vote("v2", "a", 101.0) is True
        assert await vote("v3", "b", 102.5) is True
        assert await store.survey_results("s") == SurveyResults("s", {"a": 2, "b": 1}, 3, 102.5, 0)
        assert await vote("v1", "b", 103.0) is True  # a -> b
        assert await store.survey_results("s") == SurveyResults("s", {"a": 1, "b": 2}, 3, 103.0, 0)
        assert await vote("v1", "b", 104.0) is False  # the same choice again
        assert await vote("v2", "c", 105.0) is True  # a's last voter leaves: a is gone
        assert await store.survey_results("s") == SurveyResults("s", {"b": 2, "c": 1}, 3, 105.0, 0)
        assert await vote("v2", "b", 99.0) is True  # a late worker: last_vote_at does not go back
        assert await store.survey_results("s") == SurveyResults("s", {"b": 3}, 3, 105.0, 0)

    async def test_vote_policy_first_keeps_the_first(self, store: Store) -> None:
        assert await store.vote("s", "v1", "a", policy="first", now=100.0) is True
        assert await store.vote("s", "v1", "b", policy="first", now=101.0) is False
        assert await store.vote("s", "v1", "a", policy="first", now=102.0) is False
        assert await store.vote("s", "v2", "b", policy="first", now=103.0) is True
        assert await store.survey_results("s") == SurveyResults("s", {"a": 1, "b": 1}, 2, 103.0, 0)
        # the policy is per call: a later "last" vote may still replace a first one
        assert await store.vote("s", "v1", "b", policy="last", now=104.0) is True
        assert await store.survey_results("s") == SurveyResults("s", {"b": 2}, 2, 104.0, 0)

    async def test_invalid_votes_only_count_as_rejected(self, store: Store) -> None:
        for policy in ("last", "first"):
            s = f"s-{policy}"
            assert await store.vote(s, "v1", "zzz", policy=policy, now=100.0, valid=False) is False
            assert await store.survey_results(s) == SurveyResults(s, {}, 0, None, 1)
            assert await store.vote(s, "v1", "a", policy=policy, now=101.0) is True
            assert await store.vote(s, "v1", "zzz", policy=policy, now=102.0, valid=False) is False
            assert await store.vote(s, "v2", "a", policy=policy, now=103.0, valid=False) is False
            assert await store.survey_results(s) == SurveyResults(s, {"a": 1}, 1, 101.0, 3)

    async def test_vote_id_makes_a_repeat_a_no_op(self, store: Store) -> None:
        assert await store.vote("s", "v1", "a", policy="last", now=100.0, vote_id="m1:2") is True
        assert await store.vote("s", "v1", "b", policy="last", now=101.0, vote_id="m2:2") is True
        # a replay of m1 (crash before its success was recorded) must not undo m2
        assert await store.vote("s", "v1", "a", policy="last", now=102.0, vote_id="m1:2") is False
        for now in (103.0, 104.0):
            bad = await store.vote("s", "v2", "x", policy="last", now=now, valid=False, vote_id="m3:2")
            assert bad is False
        assert await store.vote("s", "v2", "a", policy="first", now=105.0, vote_id="m3:2") is False
        assert await store.survey_results("s") == SurveyResults("s", {"b": 1}, 1, 101.0, 1)
        # vote ids are per survey; no vote id means no idempotency
        assert await store.vote("t", "v1", "a", policy="last", now=106.0, vote_id="m1:2") is True
        assert await store.vote("s", "v3", "c", policy="last", now=107.0) is True
        assert await store.vote("s", "v3", "d", policy="last", now=108.0) is True
        assert await store.vote("s", "v9", "z", policy="last", now=109.0, valid=False) is False
        assert await store.vote("s", "v9", "z", policy="last", now=110.0, valid=False) is False
        assert await store.survey_results("s") == SurveyResults("s", {"b": 1, "d": 1}, 2, 108.0, 3)

    async def test_unknown_survey_results_are_zeros(self, store: Store) -> None:
        assert await store.survey_results("nope") == zeros("nope")
        await store.vote("other", "v", "a", policy="last", now=1.0)
        assert await store.survey_results("nope") == zeros("nope")

    async def test_unknown_policy_is_refused_before_anything(self, store: Store) -> None:
        with pytest.raises(ValueError, match="policy"):
            await store.vote("s", "v", "a", policy="best", now=1.0, vote_id="m1")
        assert await store.survey_results("s") == zeros("s")
        assert await store.vote("s", "v", "a", policy="first", now=1.0, vote_id="m1") is True

    async def test_odd_survey_voter_and_choice_strings_round_trip(self, store: Store) -> None:
        surveys = ["a", "a:votes", "a:counts", "a:b:meta", "*", "{x}", "ANKET ğüşİ", "L" * 2000]
        choices = ["1", "01", "1e3", "Evet ✅", "", "a b", 'q"uote', "İ"]
        for n, survey in enumerate(surveys):
            for i, choice in enumerate(choices[: n + 1]):
                voter = f"+90 555 {i} 📩"
                assert await store.vote(survey, voter, choice, policy="last", now=float(n)) is True
        for n, survey in enumerate(surveys):
            want = dict.fromkeys(choices[: n + 1], 1)
            assert await store.survey_results(survey) == SurveyResults(survey, want, n + 1, float(n), 0)

    async def test_ledger_and_surveys_are_isolated_by_namespace(self, make_store: MakeStore) -> None:
        one, two = make_store(), make_store()
        await one.vote("s", "v", "a", policy="last", now=1.0, vote_id="m1")
        await one.vote("s", "w", "x", policy="last", now=1.0, valid=False)
        await one.record_optout(optout("m1", 1.0))
        assert await two.survey_results("s") == zeros("s")
        assert await two.optouts() == []
        assert await two.latest_optout("+905551112233") is None
        assert await two.vote("s", "v", "b", policy="first", now=2.0, vote_id="m1") is True
        await two.record_optout(optout("m1", 2.0, number="+905550000000"))
        assert await one.survey_results("s") == SurveyResults("s", {"a": 1}, 1, 1.0, 1)
        assert await two.survey_results("s") == SurveyResults("s", {"b": 1}, 1, 2.0, 0)
        assert await one.optouts() == [optout("m1", 1.0)]
        assert [e.number for e in await two.optouts()] == ["+905550000000"]
        assert await one.latest_optout("+905551112233") == optout("m1", 1.0)
        assert await one.latest_optout("+905550000000") is None

    async def test_concurrent_votes_keep_exact_totals(self, make_store: MakeStore) -> None:
        """20 workers (each its own store: for SQLite its own connection) vote at once: their own
        voter five times, a shared voter, an invalid vote and a replayed vote id each round."""
        namespace = make_store().namespace
        workers, rounds, shared = 20, 5, 5

        async def worker(c: int) -> Counter[tuple[str, str]]:
            store = make_store(namespace)
            changed: Counter[tuple[str, str]] = Counter()
            for r in range(rounds):
                now = 1000.0 + 100 * c + r
                for policy in ("last", "first"):
                    own, other = f"own-{c}", f"shared-{(c + r) % shared}"
                    for voter, choice, id in (
                        (own, CHOICES[(c + r) % 3], f"{c}-{r}"),
                        (other, CHOICES[c % 3], f"{c}-{r}-shared"),
                    ):
                        if await store.vote(policy, voter, choice, policy=policy, now=now, vote_id=id):
                            changed[policy, voter] += 1
                    bad = await store.vote(policy, own, "?", policy=policy, now=now, valid=False)
                    replay = await store.vote(policy, own, "b", policy=policy, now=now, vote_id=f"{c}-0")
                    assert not bad and not replay
                await asyncio.sleep(0)
            return changed

        changed = sum(await asyncio.gather(*(worker(c) for c in range(workers))), Counter())
        store = make_store(namespace)
        for policy in ("last", "first"):
            got = await store.survey_results(policy)
            assert (got.voters, sum(got.votes.values())) == (workers + shared, workers + shared)
            assert got.rejected == workers * rounds
            assert got.last_vote_at == 1000.0 + 100 * (workers - 1) + rounds - 1
            last = policy == "last"
            own = Counter(CHOICES[(c + rounds - 1) % 3 if last else c % 3] for c in range(workers))
            assert all(got.votes.get(choice, 0) >= n for choice, n in own.items())
            assert sum(got.votes.values()) - own.total() == shared  # one counted vote per shared
            for c in range(workers):
                assert changed[policy, f"own-{c}"] == (rounds if last else 1)
            for k in range(shared):
                wins = changed[policy, f"shared-{k}"]
                assert (wins >= 1) if last else (wins == 1), (policy, k, wins)

CHOICES = ("a", "b", "c")

#: Strings that broke a backend once: NUL (SQLite's JSON functions cut at it), lone surrogates
#: (UTF-8 codecs refuse them), the SQLite codec's marker, and their mixes.
POISON = [
    "nul\x00id", "\x00", "lone \ud83d", "\udc00tail", "\ud83d\ude00 pair of halves",
    "\x01marked", "\x01", "mixed \x00 \ud83d 📩 İ", "plain-7", "",
]


class _Odd:
    def __str__(self) -> str:
        return "odd \x00 \ud83d"


#: A dead-lettered row with poison in keys and values and every JSON type, plus a non-JSON value;
#: every backend reads back POISON_ROW_READ (non-JSON values as str(), tuples as lists).
POISON_ROW: dict[str, Any] = {
    "id": "nul\x00id", "sender": "\ud83d", "text": "\x00\udc00", "k\x00\ud800": "v",
    "n": 5, "big": 10**30, "f": 1.5, "b": True, "none": None, "list": ["\x00", 1, None],
    "nested": {"\ud83d": {"deep": ["\udfff"]}}, "tuple": ("a", 2), "odd": _Odd(),
}
POISON_ROW_READ = {**POISON_ROW, "tuple": ["a", 2], "odd": "odd \x00 \ud83d"}

# -- votes from two OS processes ----------------------------------------------------------------
# The backends whose state is shared between processes (SQLite file, real Redis) call
# `race_votes(url, namespace)` then `check_race(url, namespace, changed)`.

RACE_VOTERS = 200  # distinct voters per process
RACE_SHARED = 50  # voters both processes vote for, again and again
RACE_BAD = 50  # invalid votes, each sent by both processes under the same vote id


def _vote_process(url: str, namespace: str, name: str, start: Any, results: Any) -> None:
    """One worker process: own voters, shared voters re-voting, invalid votes with shared ids."""

    async def run() -> Counter[str]:
        store = open_store(url, namespace)
        changed: Counter[str] = Counter()
        start.wait()
        try:
            for i in range(RACE_VOTERS):
                now = float(i)
                await store.vote("last", f"{name}-{i}", CHOICES[i % 3], policy="last", now=now)
                k = i % RACE_SHARED
                voter, choice = f"shared-{k}", CHOICES[(i + len(name)) % 3]
                for policy in ("last", "first"):
                    id = f"{name}-{i}"
                    if await store.vote(policy, voter, choice, policy=policy, now=now, vote_id=id):
                        changed[f"{policy}:{voter}"] += 1
                if i < RACE_BAD:
                    await store.vote("last", voter, "?", policy="last", now=now, valid=False,
                                     vote_id=f"bad-{i}")
                # let the other process in: SQLite's busy handler sleeps while the lock holder
                # retakes the lock at once, so without a pause one process can starve the other
                await asyncio.sleep(0.001)
        finally:
            await store.close()
        return changed

    results.put((name, asyncio.run(run())))


def race_votes(url: str, namespace: str) -> Counter[str]:
    """Two spawned processes vote into `url` at once; returns their summed changed-vote counts."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    names = ("A", "BB")  # different name lengths: the processes vote differently for shared voters
    procs = [
        ctx.Process(target=_vote_process, args=(url, namespace, n, start, results)) for n in names
    ]
    for p in procs:
        p.start()
    try:
        got = dict(results.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0]
    return sum(got.values(), Counter())


async def check_race(url: str, namespace: str, changed: Counter[str]) -> None:
    store = open_store(url, namespace)
    try:
        last, first = await store.survey_results("last"), await store.survey_results("first")
    finally:
        await store.close()
    own = Counter(CHOICES[i % 3] for i in range(RACE_VOTERS))
    own += own  # both processes
    assert last.voters == sum(last.votes.values()) == 2 * RACE_VOTERS + RACE_SHARED
    assert all(last.votes[ch] >= n for ch, n in own.items())
    assert (last.rejected, last.last_vote_at) == (RACE_BAD, float(RACE_VOTERS - 1))
    assert first.voters == sum(first.votes.values()) == RACE_SHARED
    assert first.rejected == 0
    for k in range(RACE_SHARED):
        assert changed[f"first:shared-{k}"] == 1  # exactly one process won each first vote
        assert changed[f"last:shared-{k}"] >= 1
