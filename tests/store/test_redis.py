"""The contract on RedisStore twice: on fakeredis (Lua through lupa) and on the real Redis.

The real server is KEYROUTER_TEST_REDIS_URL (default db 13: tests/redis_dbs.py); when
it is unreachable these tests fail, they never skip.  Each test uses its own namespaces and deletes
only their keys (SCAN), never FLUSHDB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis_dbs import STORE_URL
from redis_server import free_port

from keyrouter.conversations.steps import Record
from keyrouter.store import HORIZON_MARGIN, Store, open_store
from keyrouter.store.keys import DAY, VOTE_IDS_TTL, Keys
from keyrouter.store.redis import RedisStore

from .contract import LEASE, FakeClock, MakeStore, StoreContract, check_race, optout, race_votes

REDIS_URL = STORE_URL


async def delete_namespace(client: aioredis.Redis, namespace: str) -> None:
    """Delete `keyrouter:{namespace}:*` and nothing else."""
    async for key in client.scan_iter(match=Keys(namespace).pattern, count=1000):
        await client.delete(key)


class RedisContract(StoreContract):
    """The contract plus what only Redis shows: key names, TTLs, cleanup."""

    @pytest.fixture
    async def client(self) -> AsyncIterator[aioredis.Redis]:
        raise NotImplementedError
        yield

    @pytest.fixture
    async def make_store(self, client: aioredis.Redis) -> AsyncIterator[MakeStore]:
        namespaces: list[str] = []

        def make(
            namespace: str | None = None,
            *,
            horizon: timedelta | None = None,
            clock: Callable[[], float] | None = None,
        ) -> Store:
            ns = namespace or f"t-{uuid4().hex}"
            namespaces.append(ns)
            return RedisStore(client, ns, horizon, clock=clock or time.time)

        yield make
        for ns in namespaces:
            await delete_namespace(client, ns)

    async def test_done_buckets_carry_a_ttl(
        self, make_store: MakeStore, client: aioredis.Redis
    ) -> None:
        clock = FakeClock()
        horizon = timedelta(days=7)
        store = make_store(horizon=horizon, clock=clock)
        await store.finish(["a"], "w", skipped=["s"])
        bucket = Keys(store.namespace).done_bucket(clock())
        assert set(await client.smembers(bucket)) == {b"a", b"s"}
        window = (horizon + HORIZON_MARGIN).total_seconds()
        assert window < await client.ttl(bucket) <= window + DAY.total_seconds()
        assert not await client.exists(Keys(store.namespace).done)

    async def test_forever_markers_go_in_the_plain_done_set(
        self, make_store: MakeStore, client: aioredis.Redis
    ) -> None:
        clock = FakeClock()
        store = make_store(horizon=timedelta(days=7), clock=clock)
        k = Keys(store.namespace)
        await store.finish(["a", "b"], "w", skipped=["s"], forever=["b", "s"])
        await store.finish(["a"], "w", forever=["a"])  # already in today's bucket: moves over
        assert set(await client.smembers(k.done_bucket(clock()))) == {b"a"}
        assert set(await client.smembers(k.done)) == {b"a", b"b", b"s"}
        assert await client.ttl(k.done) == -1
        assert await store.counts() == {"done": 2, "skipped": 1, "dead": 0, "failed": 0}

    async def test_without_horizon_one_set_without_ttl(
        self, make_store: MakeStore, client: aioredis.Redis
    ) -> None:
        store = make_store()
        await store.finish(["a"], "w")
        assert await client.ttl(Keys(store.namespace).done) == -1

    async def test_finish_leaves_only_the_done_marker(
        self, make_store: MakeStore, client: aioredis.Redis
    ) -> None:
        store = make_store()
        now = time.time()
        await store.claim(["a"], "A", LEASE, now)
        await store.record_success([("a", "h")], "A")
        await store.fail("a", "A", "e", retry_at=now)
        await store.claim(["a"], "A", LEASE, now)
        await store.finish(["a"], "A")
        k = Keys(store.namespace)
        keys = {key async for key in client.scan_iter(match=k.pattern)}
        assert keys == {k.done.encode(), k.stats.encode()}

    async def test_activity_keys_are_in_the_namespace_slot_and_expire(
        self, make_store: MakeStore, client: aioredis.Redis
    ) -> None:
        store = make_store()
        hour = int(time.time() // 3600)
        await store.record_poll(time.time(), 3)
        await store.count_routed({("a", hour): 1, ("b", hour - 1): 2})
        k = Keys(store.namespace)
        keys = {key async for key in client.scan_iter(match=k.pattern)}
        assert keys == {x.encode() for x in (k.poll, k.routed(hour), k.routed(hour - 1))}
        for h in (hour, hour - 1):
            assert 47 * 3600 < await client.ttl(k.routed(h)) <= 48 * 3600

    async def test_conversation_keys_are_in_the_namespace_slot(
        self, make_store: MakeStore, client: aioredis.Redis
    ) -> None:
        store = make_store()
        record = Record("nps:1", "+905321112233", "open", 0, "m1", 1.0, 1.0)
        assert await store.save_conversation(record, None)
        k = Keys(store.namespace)
        keys = {key async for key in client.scan_iter(match=k.pattern)}
        assert keys == {x.encode() for x in (k.conversation_last, k.conversation_current,
                                             k.conversation_runs("nps:1"))}

    async def test_shared_rows_leave_no_keys_once_finished(
        self, make_store: MakeStore, client: aioredis.Redis
    ) -> None:
        store = make_store()
        token = await store.acquire_fetch("L", LEASE, time.time())
        assert token is not None
        await store.publish([("a", "{}"), ("b", "{}")], token)
        await store.claim(["a", "b"], "A", LEASE, time.time())
        await store.finish(["a"], "A")
        await store.dead_letter("b", "A", "e", rule=None, row={}, now=1.0)
        await store.release_fetch("L")
        k = Keys(store.namespace)
        keys = {key async for key in client.scan_iter(match=k.pattern)}
        # two counters and the finished state: nothing grows with the number of shared rows
        want = (k.done, k.dead, k.dead_by_time, k.stats, k.fetch_token, k.published_seq)
        assert keys == {x.encode() for x in want}

    async def test_ledger_and_survey_keys(self, make_store: MakeStore, client: aioredis.Redis) -> None:
        store = make_store(horizon=timedelta(days=90))
        await store.record_optout(optout("m1", 1000.5))
        await store.vote("s:1", "v", "a", policy="last", now=5.0, vote_id="m1")
        await store.vote("s:1", "w", "?", policy="last", now=6.0, valid=False)
        k = Keys(store.namespace)
        votes, counts, meta, seen = k.survey("s:1")
        keys = {key async for key in client.scan_iter(match=k.pattern)}
        ledger = (k.optouts, k.optouts_by_time, k.optouts_latest)
        assert keys == {x.encode() for x in (*ledger, votes, counts, meta, seen)}
        assert await client.zrange(k.optouts_by_time, 0, -1, withscores=True) == [
            (b"m1|blacklist", 1000.5)
        ]
        assert await client.hgetall(k.optouts_latest) == {b"+905551112233": b"m1|blacklist"}
        assert await client.hgetall(votes) == {b"v": b"a"}
        assert await client.hgetall(counts) == {b"a": b"1"}
        assert await client.hgetall(meta) == {b"last": b"5.0", b"rejected": b"1"}
        # the seen ids outlive a horizon longer than VOTE_IDS_TTL; nothing else expires
        assert VOTE_IDS_TTL < timedelta(days=90) < timedelta(seconds=await client.ttl(seen))
        for key in (*ledger, votes, counts, meta):
            assert await client.ttl(key) == -1

    async def test_dead_letter_index_heals_itself(
        self, make_store: MakeStore, client: aioredis.Redis
    ) -> None:
        """Dead letters written without the `dead:at` index (an older version) or removed by a
        path that does not keep it still page correctly: the page read rebuilds the index."""
        store = make_store()
        k = Keys(store.namespace)
        await store.dead_letter("new", "w", "e", rule=None, row={}, now=50.0)
        assert await client.zrange(k.dead_by_time, 0, -1, withscores=True) == [(b"new", 50.0)]
        for id, at in (("old1", 10.0), ("old2", 30.0)):
            body = f'{{"attempts": 3, "error": "x", "failed_at": {at}, "rule": "r", "row": {{}}}}'
            await client.hset(k.dead, id, body)
        assert [d.id for d in await store.dead_letters_page()] == ["new", "old2", "old1"]
        await client.hdel(k.dead, "old2")  # e.g. finish() on a dead id
        assert [d.id for d in await store.dead_letters_page(0, 2)] == ["new", "old1"]
        assert await client.zcard(k.dead_by_time) == 2

    async def test_cleanup_touches_only_its_namespace(
        self, make_store: MakeStore, client: aioredis.Redis
    ) -> None:
        other = make_store()
        await other.finish(["a"], "w")
        await client.set("unrelated:key", "keep", ex=60)
        try:
            await delete_namespace(client, other.namespace)
            assert await client.get("unrelated:key") == b"keep"
            assert await other.unfinished(["a"]) == ["a"]
        finally:
            await client.delete("unrelated:key")


class TestFakeRedisStore(RedisContract):
    @pytest.fixture
    async def client(self) -> AsyncIterator[aioredis.Redis]:
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        yield client
        await client.aclose()


class TestRealRedisStore(RedisContract):
    @pytest.fixture
    async def client(self) -> AsyncIterator[aioredis.Redis]:
        client = aioredis.from_url(REDIS_URL)
        await client.ping()  # unreachable: the test errors, it does not skip
        yield client
        await client.aclose()


@pytest.mark.anyio
async def test_health_and_describe_on_a_real_server_without_its_password() -> None:
    url = REDIS_URL.replace("redis://", "redis://:s3cret@", 1)
    store = open_store(url, f"t-{uuid4().hex}")
    try:
        described = store.describe()
        assert (described.kind, described.persistent, described.file) == ("redis", True, None)
        assert described.location.startswith("redis://127.0.0.1:") and "s3cret" not in described.location
    finally:
        await store.close()
    async with open_store(REDIS_URL, f"t-{uuid4().hex}") as store:
        health = await store.health()
        (server,) = health.servers
        assert health.ok and server.name == "" and server.version.count(".") >= 1, health
        assert server.info_error == "" and server.policy != "unknown", health


@pytest.mark.anyio
async def test_health_of_an_unreachable_redis_says_so_without_raising() -> None:
    port = free_port()
    async with open_store(f"redis://127.0.0.1:{port}/0?socket_connect_timeout=1", "t") as store:
        health = await store.health(timeout=5)
    assert not health.ok and health.error and not health.cluster_node and health.servers == ()


class CountingConnection(aioredis.Connection):
    """Counts writes to the socket: one per command, one per pipeline."""

    sent = 0

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        type(self).sent += 1
        await super().send_packed_command(*args, **kwargs)


@pytest.mark.anyio
@pytest.mark.parametrize("horizon", [None, timedelta(days=7)])
async def test_all_done_poll_costs_one_round_trip_each(horizon: timedelta | None) -> None:
    pool = aioredis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    store = RedisStore(client, f"rt-{uuid4().hex}", horizon)
    ids = [f"{7_000_000_000 + i}" for i in range(10_000)]
    try:
        await store.finish(ids, "w")
        await store.unfinished(ids[:1])  # connect and load the scripts first
        await store.claim(ids[:1], "w", LEASE, time.time())
        CountingConnection.sent = 0
        assert await store.unfinished(ids) == []
        assert CountingConnection.sent == 1
        CountingConnection.sent = 0
        assert await store.claim(ids, "w", LEASE, time.time()) == []
        assert CountingConnection.sent == 1
    finally:
        await delete_namespace(client, store.namespace)
        await client.aclose()


@pytest.mark.anyio
async def test_fetch_and_shared_rows_cost_one_round_trip_each() -> None:
    """The leader's poll over a processed inbox of 10,000: acquire, publish, read: three trips."""
    pool = aioredis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    store = RedisStore(client, f"rt-{uuid4().hex}", timedelta(days=7))
    ids = [f"{7_000_000_000 + i}" for i in range(10_000)]
    rows = [(id, f'{{"id": "{id}", "text": "RET"}}') for id in ids]
    try:
        token = await store.acquire_fetch("L", LEASE, time.time())
        assert token is not None
        assert await store.publish(rows[:5000], token) == 5000  # loads the scripts too
        await store.published(0)
        await store.unpublish(ids[:1])
        await store.finish(ids[:5000], "w")
        calls = [
            (lambda: store.acquire_fetch("L", LEASE, time.time()), token),
            (lambda: store.publish(rows, token), 5000),
            (lambda: store.publish(rows, token), 0),  # nothing new: still one trip
            (lambda: store.publish(rows, token - 1), -1),
            (lambda: store.unpublish(ids[5000:]), None),
            (lambda: store.published(0), (10_000, [])),
        ]
        for call, want in calls:
            CountingConnection.sent = 0
            assert await call() == want
            assert CountingConnection.sent == 1
    finally:
        await delete_namespace(client, store.namespace)
        await client.aclose()


@pytest.mark.anyio
async def test_release_ledger_and_votes_cost_one_round_trip_each() -> None:
    pool = aioredis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    store = RedisStore(client, f"rt-{uuid4().hex}")
    ids = [f"{7_000_000_000 + i}" for i in range(5_000)]
    try:
        await store.claim(ids, "w", LEASE, time.time())
        for i in range(0, 1100, 50):  # more entries than one HMGET chunk (1000) of the script
            await asyncio.gather(*(store.record_optout(optout(f"m{j}", j)) for j in range(i, i + 50)))
        calls = [
            lambda: store.release(ids, "w"),
            lambda: store.record_optout(optout("m1", 1.0)),
            lambda: store.optouts(),
            lambda: store.optouts(since=10.0),
            lambda: store.vote("s", "v", "a", policy="last", now=1.0, vote_id="m1"),
            lambda: store.survey_results("s"),
        ]
        for call in calls:
            await call()  # load the script
        for call in calls:
            CountingConnection.sent = 0
            await call()
            assert CountingConnection.sent == 1
        assert len(await store.optouts(since=10.0)) == 1090
        assert len(await store.claim(ids, "other", LEASE, time.time())) == len(ids)
    finally:
        await delete_namespace(client, store.namespace)
        await client.aclose()


@pytest.mark.anyio
async def test_fenced_calls_and_latest_optout_cost_one_round_trip_each() -> None:
    """finish, fail and dead_letter check the lease inside their script: still one round trip."""
    pool = aioredis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    store = RedisStore(client, f"rt-{uuid4().hex}", timedelta(days=7))
    ids = [f"{7_000_000_000 + i}" for i in range(2_000)]
    try:
        await store.claim(ids, "w", LEASE, time.time())
        await store.record_optout(optout("m1", 1.0))
        calls = [
            (lambda: store.finish(ids[:1500], "late", skipped=ids[1500:], forever=ids), ids),
            (lambda: store.fail(ids[0], "late", "e", 0.0), -1),
            (lambda: store.dead_letter(ids[1], "late", "e", rule=None, row={}, now=1.0), False),
            (lambda: store.latest_optout("+905551112233"), optout("m1", 1.0)),
            (lambda: store.latest_optout("+1"), None),
        ]
        for call, _ in calls:
            await call()  # load the script
        for call, want in calls:
            CountingConnection.sent = 0
            assert await call() == want
            assert CountingConnection.sent == 1
        assert await store.counts() == {"done": 0, "skipped": 0, "dead": 0, "failed": 0}
        assert await store.renew(ids, "w", LEASE) == ids
    finally:
        await delete_namespace(client, store.namespace)
        await client.aclose()


@pytest.mark.anyio
async def test_from_url_waits_for_a_free_connection() -> None:
    """More calls in flight than the pool has connections: they queue instead of failing."""
    store = RedisStore.from_url(REDIS_URL.partition("?")[0] + "?max_connections=4", f"t-{uuid4().hex}")
    try:
        assert isinstance(store.client.connection_pool, aioredis.BlockingConnectionPool)
        assert store.client.connection_pool.max_connections == 4
        voted = await asyncio.gather(
            *(store.vote("s", f"v{i}", "a", policy="first", now=1.0) for i in range(150))
        )
        assert all(voted)
        assert (await store.survey_results("s")).voters == 150
    finally:
        await delete_namespace(store.client, store.namespace)
        await store.close()


@pytest.mark.slow
def test_two_processes_vote_with_exact_totals() -> None:
    """Two OS processes, each with its own client, vote into the real Redis at once."""
    namespace = f"race-{uuid4().hex}"

    async def cleanup() -> None:
        client = aioredis.from_url(REDIS_URL)
        await delete_namespace(client, namespace)
        await client.aclose()

    try:
        changed = race_votes(REDIS_URL, namespace)
        asyncio.run(check_race(REDIS_URL, namespace, changed))
    finally:
        asyncio.run(cleanup())


@pytest.mark.anyio
async def test_open_redis_url_hides_the_password() -> None:
    url = REDIS_URL.replace("redis://", "redis://:s3cret-pw@", 1)
    store = open_store(url, "acct")
    assert isinstance(store, RedisStore)
    assert "s3cret" not in repr(store)
    assert repr(store).startswith("RedisStore(redis://") and "namespace='acct'" in repr(store)
    await store.close()
    with pytest.raises(ValueError, match="redis") as caught:
        open_store("redis://:s3cret-pw@localhost:notaport/0")
    assert "s3cret" not in str(caught.value)
