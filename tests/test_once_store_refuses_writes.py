"""`run --once` beside a running worker, on a store that refuses writes: exit 4, never 0.

A Redis of the test's own (a spare port) with a tiny maxmemory and `noeviction` is full the way a
disk is: reads work, every write is refused (OOM).  Another worker holds the fetch lease, so the
--once worker has no poll of its own and nothing to claim: without a write check it would exit 0
having done nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from keyrouter.cli.common import EXIT_UNREACHABLE
from keyrouter.store.memory import MemoryStore
from keyrouter.testing import FakeIletiMerkezi, pipeline
from keyrouter.worker.loop import Worker
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

RULES = "version: 1\nrules:\n  - name: all\n    pattern: '.*'\n    handlers: [log]\n"


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", "--maxmemory", "2mb",
                         "--maxmemory-policy", "noeviction").start()
    try:
        yield server
    finally:
        server.stop()


def fill(server: RedisServer) -> None:
    """Write until Redis refuses: from then on every write is an OOM error."""
    client = redis.Redis(port=server.port)
    try:
        for i in range(10_000):
            try:
                client.set(f"filler:{i}", "x" * 4096)
            except redis.ResponseError as exc:
                assert "maxmemory" in str(exc) or "OOM" in str(exc)
                return
        raise AssertionError("Redis never refused a write")
    finally:
        client.close()


async def test_once_beside_a_worker_on_a_full_store_exits_4(
        full_redis: RedisServer, fake: FakeIletiMerkezi, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    fake.add_message("merhaba", sender="+905551112233")
    async with pipeline(rules, fake=fake, store=full_redis.url, namespace="full") as runtime:
        assert await runtime.store.acquire_fetch("the-running-worker", 300, 0) is not None
        fill(full_redis)
        assert await runtime.store.counts() is not None  # reads still work
        code = await Worker(runtime, asyncio.Event(), once=True).run()
    assert code == EXIT_UNREACHABLE == 4


async def test_once_with_nothing_to_do_on_a_writable_store_exits_0(
        fake: FakeIletiMerkezi, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    async with pipeline(rules, fake=fake) as runtime:
        assert isinstance(runtime.store, MemoryStore)
        assert await runtime.store.acquire_fetch("the-running-worker", 300, 0) is not None
        assert await Worker(runtime, asyncio.Event(), once=True).run() == 0
