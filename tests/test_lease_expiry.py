"""Lease expiry on every backend (memory, SQLite, the real Redis of the store
tests, KEYROUTER_TEST_REDIS_URL: tests/redis_dbs.py; random namespaces, deleted after): a worker
whose lease ran out mid-entry (its renewals do not get through) never dead-letters a message
another worker finished, and is never skipped by max_age half-done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import pytest
import recording
from redis_dbs import STORE_URL, delete_namespace

from keyrouter.dispatch import Dispatcher
from keyrouter.message import TURKEY, Message, parse_row
from keyrouter.retries import RetryPolicy
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.store import open_store
from keyrouter.store.base import Store

pytestmark = pytest.mark.anyio
LEASE = 0.6


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/lease.sqlite3",
           "redis": STORE_URL}[request.param]
    namespace = f"lease-{uuid4().hex[:12]}"
    try:
        async with open_store(url, namespace) as opened:
            yield opened
    finally:
        if request.param == "redis":
            assert delete_namespace(url, namespace) == 0


def stall_renewals(store: Store) -> Callable[[], None]:
    """This worker's renewals do not reach the store (a pause, a partition) until the returned
    function is called: its leases run out meanwhile."""
    async def renew(ids: list[str], owner: str, lease: float) -> list[str]:
        return list(ids)
    store.renew = renew  # type: ignore[method-assign]
    return lambda: delattr(store, "renew")


def msg(id: str, text: str, received: float) -> Message:
    when = datetime.fromtimestamp(received, TURKEY)
    return parse_row({"id": id, "text": text, "sender": "+905354104818",
                      "number": "+908505550000", "date": when.strftime("%Y-%m-%d %H:%M:%S")})


async def wait_for(check: Callable[[], object], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[misc]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_stale_worker_never_dead_letters_what_another_finished(store: Store,
                                                                       write_rules) -> None:
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: optout, keywords: [RET], handlers: [{recording:slow: {seconds: 1.5, tag: s}}]}
    """)))
    recording.FAILS[("1", "s")] = 1
    stall_renewals(store)
    a = Dispatcher(router, store, owner="a", lease=LEASE, policy=RetryPolicy(max_attempts=1))
    running = asyncio.create_task(a.process([msg("1", "RET", time.time() - 60)]))
    while not recording.STARTED:  # A claimed it and its handler is running
        await asyncio.sleep(0.01)
    await asyncio.sleep(LEASE + 0.2)  # A's lease ran out under its running entry
    [claim] = await store.claim(["1"], "b", 60, time.time())
    assert claim.taken_over
    assert await store.finish(["1"], "b") == []
    await asyncio.wait_for(running, 20)
    await a.aclose()
    assert await store.dead_letters() == []
    assert await store.unfinished(["1"]) == []
    assert (await store.counts())["dead"] == 0


async def test_max_age_is_not_met_again_after_the_own_lease_ran_out(store: Store,
                                                                   write_rules) -> None:
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            max_age: 1h
            handlers: [{recording:slow: {seconds: 1.2, tag: block}}, {recording:record: {tag: reply}}]
    """)))
    offset = [0.0]
    resume = stall_renewals(store)
    d = Dispatcher(router, store, owner="a", lease=LEASE, clock=lambda: time.time() + offset[0])
    stopping = asyncio.Event()
    loop = asyncio.create_task(d.run(stopping))
    d.offer([msg("1", "RET", time.time() - 3590)])
    while not recording.STARTED:  # its first entry runs: max_age was decided
        await asyncio.sleep(0.01)
    offset[0] = 120.0  # the message is now older than max_age; the lease runs out meanwhile
    await asyncio.sleep(LEASE + 0.2)
    resume()  # the worker is back: its next claim of the message is renewed as usual
    await wait_for(lambda: _done(store, "1"), "the message to finish")
    stopping.set()
    await asyncio.wait_for(loop, 30)
    await d.aclose()
    assert (await store.counts())["skipped"] == 0
    assert {c["tag"] for c in recording.CALLS} == {"block", "reply"}


async def _done(store: Store, id: str) -> bool:
    return not await store.unfinished([id])
