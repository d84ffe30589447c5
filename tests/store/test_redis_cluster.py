"""Redis Cluster: the whole contract on a real local 3-master cluster, one hash
slot per namespace, `redis+cluster://` URLs, and the move of keys written before the hash tag."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from keyrouter.conversations.steps import Record
from keyrouter.store import open_store
from keyrouter.store.keys import Keys
from keyrouter.store.redis import RedisStore

from .contract import LEASE, POISON, FakeClock, optout
from .test_redis import REDIS_URL, RedisContract, delete_namespace


class TestClusterRedisStore(RedisContract):
    @pytest.fixture
    async def client(self, redis_cluster_url: str) -> AsyncIterator[Any]:
        client = RedisCluster.from_url(redis_cluster_url.replace("redis+cluster", "redis", 1))
        await client.ping()
        yield client
        await client.aclose()

    async def test_a_namespace_lives_in_one_slot(self, make_store: Any, client: RedisCluster) -> None:
        """Every key a busy namespace writes hashes to one slot, whatever the ids and surveys."""
        clock = FakeClock()
        store = make_store(horizon=timedelta(days=3), clock=clock)
        ids = ["{a}", "b}", "{", *POISON]
        now = time.time()
        await store.claim(ids, "A", LEASE, now)
        await store.record_success([(id, "h") for id in ids], "A")
        await store.fail(ids[0], "A", "e", retry_at=now)
        await store.dead_letter(ids[1], "A", "e", rule=None, row={"id": ids[1]}, now=now)
        await store.finish(ids[2:5], "A")
        clock.advance(86400)
        await store.finish(ids[5:7], "A", forever=ids[5:6])
        token = await store.acquire_fetch("L", LEASE, now)
        assert token is not None
        await store.publish([(id, "{}") for id in ids], token)
        await store.record_optout(optout("{m}", 1.0))
        await store.vote("{s}", "v", "a", policy="last", now=1.0, vote_id="x")
        await store.save_conversation(Record("{c}", "{r}", "open", 0, "{m}", 1.0, 1.0), None)
        assert len(await store.dead_letters_page()) == 1
        keys = [k async for k in client.scan_iter(match=Keys(store.namespace).pattern)]
        assert len(keys) > 15
        assert {key_slot(k) for k in keys} == {key_slot(Keys(store.namespace).done.encode())}

    async def test_namespaces_spread_over_the_masters(self, make_store: Any, client: Any) -> None:
        stores = [make_store() for _ in range(12)]
        for store in stores:
            await store.finish(["a"], "w")
        nodes = {client.get_node_from_key(Keys(s.namespace).done).name for s in stores}
        assert len(nodes) > 1  # 12 namespaces on one master of three: 3 * (1/3)**11


@pytest.mark.anyio
async def test_open_store_takes_a_cluster_url(redis_cluster_url: str) -> None:
    url = redis_cluster_url.replace("redis+cluster://", "redis+cluster://:s3cret@", 1)
    store = open_store(url, f"t-{uuid4().hex}")
    try:
        assert isinstance(store, RedisStore) and isinstance(store.client, RedisCluster)
        assert repr(store).startswith("RedisStore(redis+cluster://127.0.0.1:")
        assert "s3cret" not in repr(store)
    finally:
        await store.close()
    store = open_store(redis_cluster_url, f"t-{uuid4().hex}")
    try:
        await store.finish(["a"], "w")
        assert await store.unfinished(["a", "b"]) == ["b"]
        assert await store.counts() == {"done": 1, "skipped": 0, "dead": 0, "failed": 0}
    finally:
        await delete_namespace(store.client, store.namespace)
        await store.close()


@pytest.mark.anyio
async def test_health_and_describe_on_the_cluster(redis_cluster_url: str) -> None:
    async with open_store(redis_cluster_url, f"t-{uuid4().hex}") as store:
        health, described = await store.health(), store.describe()
    assert health.ok and len(health.servers) == 3, health
    assert all(s.name.startswith("127.0.0.1:") and s.version != "unknown" for s in health.servers)
    assert (described.kind, described.location) == ("redis-cluster", redis_cluster_url)


@pytest.mark.anyio
async def test_a_single_server_url_to_a_cluster_node_is_told_apart(redis_cluster_url: str) -> None:
    """A key of another master's slot answers MOVED: `doctor` says to use redis+cluster://."""
    plain = redis_cluster_url.replace("redis+cluster://", "redis://", 1)
    found = []
    for n in range(12):  # 12 namespaces all in the first node's slots: (1/3)**12
        async with open_store(plain, f"t-{n}-{uuid4().hex}") as store:
            found.append(await store.health())
    assert any(h.cluster_node and not h.ok and h.error == "MovedError" for h in found), found


# -- the move of keys written before the hash tag ------------------------------------------------


class LegacyKeys(Keys):
    """The key names of the version before the hash tag: `keyrouter:ns:...`."""

    @property
    def prefix(self) -> str:
        return self.legacy_prefix


def legacy_store(client: Any, namespace: str, **kw: Any) -> RedisStore:
    """A store writing under the old names, as the previous version did (and not moving them)."""
    store = RedisStore(client, namespace, **kw)
    object.__setattr__(store, "keys", LegacyKeys(namespace))
    store.moved = True
    return store


@pytest.fixture(params=["fakeredis", "redis"])
async def plain_client(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    if request.param == "fakeredis":
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    else:
        client = aioredis.from_url(REDIS_URL)
        await client.ping()
    yield client
    await client.aclose()


async def _all_keys(client: aioredis.Redis, pattern: str) -> set[bytes]:
    return {k async for k in client.scan_iter(match=pattern, count=1000)}


@pytest.mark.anyio
async def test_data_written_under_the_old_names_survives_the_upgrade(
    plain_client: aioredis.Redis,
) -> None:
    namespace = f"up-{uuid4().hex}"
    clock = FakeClock()
    horizon = timedelta(days=7)
    old = legacy_store(plain_client, namespace, horizon=horizon, clock=clock)
    other = legacy_store(plain_client, f"{namespace}-other")  # a namespace sharing the prefix start
    now = time.time()
    try:
        await old.finish(["done-1", "done-2"], "w", skipped=["skip"], forever=["done-2"])
        await old.claim(["inflight", "failed", "dead"], "A", 60, now)
        await old.record_success([("inflight", "h1"), ("failed", "h1")], "A")
        assert await old.fail("failed", "A", "e", retry_at=now) == 1
        await old.dead_letter("dead", "A", "boom", rule="r", row={"id": "dead", "n": 1}, now=5.0)
        await old.record_optout(optout("m1", 1000.0))
        await old.vote("s", "v", "a", policy="last", now=1.0, vote_id="m1")
        await other.finish(["x"], "w")
        legacy = await _all_keys(plain_client, f"{LegacyKeys(namespace).prefix}*")
        assert len(legacy) >= 10

        new = RedisStore(plain_client, namespace, horizon, clock=clock)
        assert await new.unfinished(["done-1", "done-2", "skip", "dead", "new"]) == ["new"]
        assert await _all_keys(plain_client, f"{LegacyKeys(namespace).prefix}*") == set()
        assert await new.counts() == {"done": 2, "skipped": 1, "dead": 1, "failed": 2}
        assert await new.claim(["inflight"], "B", LEASE, now) == []  # A's lease moved too
        got = await new.claim(["failed"], "B", LEASE, now)
        assert [(c.id, c.attempts, c.succeeded) for c in got] == [("failed", 1, frozenset({"h1"}))]
        (d,) = await new.dead_letters()
        assert (d.id, d.error, d.rule, dict(d.row)) == ("dead", "boom", "r", {"id": "dead", "n": 1})
        assert await new.latest_optout("+905551112233") == optout("m1", 1000.0)
        assert (await new.survey_results("s")).votes == {"a": 1}
        assert await new.vote("s", "v", "b", policy="last", now=2.0, vote_id="m1") is False
        k = Keys(namespace)
        assert 0 < await plain_client.ttl(k.done_bucket(clock())) <= 10 * 86400  # the TTL moved
        assert await plain_client.ttl(k.done) == -1
        # the other namespace's old keys are its own: untouched until it opens
        assert await _all_keys(plain_client, f"{LegacyKeys(namespace + '-other').prefix}*")
    finally:
        for ns in (namespace, f"{namespace}-other"):
            await delete_namespace(plain_client, ns)
            for key in await _all_keys(plain_client, f"{LegacyKeys(ns).prefix}*"):
                await plain_client.delete(key)


@pytest.mark.anyio
async def test_old_keys_written_after_an_upgrade_merge_at_the_next_open(
    plain_client: aioredis.Redis,
) -> None:
    """An old worker still running beside an upgraded one: its later writes are merged, never
    dropped, when an upgraded worker opens again (counters add up, done sets unite)."""
    namespace = f"up-{uuid4().hex}"
    try:
        old = legacy_store(plain_client, namespace)
        await old.finish(["a"], "w")
        first = RedisStore(plain_client, namespace)
        await first.finish(["b"], "w")  # moves the old keys, then writes under the new names
        await old.finish(["c"], "w")  # the old worker carries on
        await old.dead_letter("d", "w", "e", rule=None, row={}, now=1.0)
        second = RedisStore(plain_client, namespace)
        assert await second.move_legacy_keys() >= 2
        assert await second.unfinished(["a", "b", "c", "d", "e"]) == ["e"]
        assert await second.counts() == {"done": 3, "skipped": 0, "dead": 1, "failed": 1}
        assert await second.move_legacy_keys() == 0  # nothing left: a no-op
    finally:
        await delete_namespace(plain_client, namespace)
        for key in await _all_keys(plain_client, f"{LegacyKeys(namespace).prefix}*"):
            await plain_client.delete(key)


@pytest.mark.anyio
async def test_a_processed_inbox_costs_one_round_trip_per_call_on_the_cluster(
    redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll of a processed inbox of 10,000 on a cluster: each call one command to one node."""
    sent = [0]
    send = aioredis.Connection.send_packed_command

    async def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        sent[0] += 1
        await send(self, *args, **kwargs)

    monkeypatch.setattr(aioredis.Connection, "send_packed_command", counting)
    client = RedisCluster.from_url(redis_cluster_url.replace("redis+cluster", "redis", 1))
    store = RedisStore(client, f"rt-{uuid4().hex}", timedelta(days=7))
    ids = [f"{7_000_000_000 + i}" for i in range(10_000)]
    rows = [(id, "{}") for id in ids]
    try:
        token = await store.acquire_fetch("L", LEASE, time.time())
        assert token is not None
        await store.finish(ids, "w")
        for call in (store.unfinished(ids[:1]), store.claim(ids[:1], "w", LEASE, time.time()),
                     store.publish(rows[:1], token), store.published(0)):
            await call  # connect to the slot's node and load the scripts
        calls = [
            (lambda: store.acquire_fetch("L", LEASE, time.time()), token),
            (lambda: store.publish(rows, token), 0),
            (lambda: store.published(0), (0, [])),
            (lambda: store.unfinished(ids), []),
            (lambda: store.claim(ids, "w", LEASE, time.time()), []),
        ]
        for call, want in calls:
            sent[0] = 0
            assert await call() == want
            assert sent[0] == 1
    finally:
        await delete_namespace(client, store.namespace)
        await client.aclose()


@pytest.mark.anyio
async def test_the_durability_check_reads_every_master(redis_cluster_url: str) -> None:
    """`run`'s start-up warning works on a cluster: the test nodes run without AOF, and say so."""
    from keyrouter.ops.durability import durability_warnings

    store = open_store(redis_cluster_url, f"t-{uuid4().hex}")
    try:
        warnings = await durability_warnings(store)
        assert any("appendonly" in w for w in warnings), warnings
        assert not any("could not ask" in w for w in warnings), warnings
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_worker_runs_an_inbox_on_the_cluster(redis_cluster_url: str, tmp_path: Any) -> None:
    """`run --once` in process against the fake provider, the store on the cluster: the fetch
    lease, publish, shared rows, claims and done markers all on one slot; nothing left shared."""
    import asyncio

    import recording

    from keyrouter.testing import FakeIletiMerkezi, pipeline
    from keyrouter.worker.loop import Worker

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - name: all\n    pattern: '.*'\n"
                     "    handlers: [recording:record]\n", encoding="utf-8")
    namespace = f"w-{uuid4().hex}"
    recording.CALLS.clear()
    with FakeIletiMerkezi() as fake:
        ids = [fake.add_message(f"mesaj {i}", sender=f"+9055500000{i}")["id"] for i in range(5)]
        fake.inbox.append({"id": "half \ud83d", "sender": "\x00", "text": "emoji \ud83d"})
        async with pipeline(rules, fake=fake, store=redis_cluster_url, namespace=namespace) as rt:
            try:
                assert await Worker(rt, asyncio.Event(), once=True).run() == 0
                assert await rt.store.unfinished([*ids, "half \ud83d"]) == []
                assert (await rt.store.published(0))[1] == []
                assert Counter(c["id"] for c in recording.CALLS) == dict.fromkeys(
                    [*ids, "half \ud83d"], 1)
            finally:
                await delete_namespace(rt.store.client, namespace)
    recording.CALLS.clear()
