"""Hand-run benchmark of RedisStore against a real Redis on loopback (not a test).

    .venv/bin/python bench/bench_store.py [REDIS_URL]     # default redis://127.0.0.1:6379/11

Prints (a) round trips and wall time of `unfinished` + `claim` over 10,000 already-done ids, next
to a naive baseline (one SISMEMBER round trip per id), and (c) Redis bytes per remembered done id
over 100,000 ids, with and without a horizon.  Uses its own namespaces and deletes only their keys.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import redis.asyncio as aioredis

from keyrouter.store.keys import Keys
from keyrouter.store.redis import RedisStore

URL = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/11"
POLL_IDS = 10_000
MEMORY_IDS = 100_000


class CountingConnection(aioredis.Connection):
    """Counts socket writes: one per command or pipeline, i.e. one per round trip."""

    sent = 0

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        type(self).sent += 1
        await super().send_packed_command(*args, **kwargs)


def realistic_ids(n: int, seed: int = 7) -> list[str]:
    """Distinct numeric ids of 8-12 characters, like the provider's message ids."""
    rnd, ids = random.Random(seed), set()
    while len(ids) < n:
        digits = rnd.randint(8, 12)
        ids.add(str(rnd.randrange(10 ** (digits - 1), 10**digits)))
    return sorted(ids)


async def drop(client: aioredis.Redis, namespace: str) -> None:
    async for key in client.scan_iter(match=Keys(namespace).pattern, count=1000):
        await client.delete(key)


async def measure(fn: Callable[[], Awaitable[object]], runs: int = 5) -> tuple[int, float]:
    """(round trips of one call, median wall seconds over `runs` calls)."""
    times = []
    for _ in range(runs):
        CountingConnection.sent = 0
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return CountingConnection.sent, statistics.median(times)


async def bench_poll(client: aioredis.Redis, horizon: timedelta | None) -> None:
    store = RedisStore(client, f"bench-{uuid4().hex}", horizon)
    ids = realistic_ids(POLL_IDS)
    try:
        for i in range(0, len(ids), 1000):
            await store.finish(ids[i : i + 1000], "bench")
        await store.unfinished(ids[:1])  # load the scripts
        await store.claim(ids[:1], "bench", 30, time.time())

        target = store.keys.done_target(horizon, time.time())  # naive's best case: one key

        async def naive() -> None:
            for id in ids:
                if not await client.sismember(target, id):
                    raise AssertionError(id)

        label = "no horizon" if horizon is None else f"horizon {horizon.days} d"
        for name, fn in (
            ("unfinished", lambda: store.unfinished(ids)),
            ("claim", lambda: store.claim(ids, "bench", 30, time.time())),
            ("naive SISMEMBER per id", naive),
        ):
            trips, seconds = await measure(fn, runs=3 if name.startswith("naive") else 7)
            print(f"  {label:14} {name:24} {trips:6d} round trips  {seconds * 1000:8.1f} ms")
    finally:
        await drop(client, store.namespace)


async def bench_memory(client: aioredis.Redis, horizon: timedelta | None) -> None:
    store = RedisStore(client, f"bench-{uuid4().hex}", horizon)
    ids = realistic_ids(MEMORY_IDS, seed=11)
    try:
        before = (await client.info("memory"))["used_memory"]
        for i in range(0, len(ids), 1000):
            await store.finish(ids[i : i + 1000], "bench")
        after = (await client.info("memory"))["used_memory"]
        keys = [k async for k in client.scan_iter(match=f"{store.keys.done}*")]
        usage = sum([await client.memory_usage(k, samples=0) or 0 for k in keys])
        label = "no horizon" if horizon is None else f"horizon {horizon.days} d"
        avg = sum(map(len, ids)) / len(ids)
        print(
            f"  {label:14} MEMORY USAGE {usage / len(ids):5.1f} B/id, used_memory delta"
            f" {(after - before) / len(ids):5.1f} B/id  ({len(ids)} ids, avg {avg:.1f} chars,"
            f" {len(keys)} key(s))"
        )
    finally:
        await drop(client, store.namespace)


async def main() -> None:
    pool = aioredis.ConnectionPool.from_url(URL, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    try:
        info = await client.info("server")
        print(f"Redis {info['redis_version']}, {POLL_IDS} done ids per poll")
        print("(a) all-done poll")
        for horizon in (None, timedelta(days=7)):
            await bench_poll(client, horizon)
        print(f"(c) memory per remembered done id ({MEMORY_IDS} ids)")
        for horizon in (None, timedelta(days=7)):
            await bench_memory(client, horizon)
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
