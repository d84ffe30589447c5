"""keyrouter.worker.intake in one process: the fetch lease, publishing fenced by its token, reading the
shared rows, the horizon, and the cost of a poll over a processed inbox (memory store, the real
client against the fake provider)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis_dbs import E2E_URL

from keyrouter.events import Events
from keyrouter.message import TURKEY, Message
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.store.base import Store
from keyrouter.store.memory import MemoryStore
from keyrouter.testing import FakeIletiMerkezi, pipeline
from keyrouter.worker.intake import Intake, _row_json
from keyrouter.worker.loop import Worker

pytestmark = pytest.mark.anyio


class CountingStore(MemoryStore):
    """The memory store, counting calls per method: each is one round trip on every backend."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    def __getattribute__(self, name: str) -> Any:
        found = super().__getattribute__(name)
        if name in ("unfinished", "claim", "finish", "acquire_fetch", "publish", "published",
                    "unpublish", "release_fetch", "record_poll"):
            super().__getattribute__("calls")[name] += 1
        return found


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def intake(store: Store, client: IletiMerkezi | None, owner: str,
           beyond: Callable[[Message], bool] = lambda m: False) -> Intake:
    return Intake(store, client, owner=owner, lease=10.0, beyond_horizon=beyond)


async def test_one_holder_publishes_and_every_worker_reads(fake: FakeIletiMerkezi,
                                                           client: IletiMerkezi) -> None:
    clock = Clock()
    store = MemoryStore("ns", clock=clock)
    a, b = intake(store, client, "a"), intake(store, client, "b")
    assert await a.acquire(clock.now) and a.is_leader
    assert not await b.acquire(clock.now) and not b.is_leader
    ids = [fake.add_message(f"mesaj {i}", sender=f"+9055500000{i}")["id"] for i in range(3)]
    fetched = await a.fetch()
    assert (fetched.rows, fetched.total_rows, fetched.unfinished, fetched.published) == (3, 3, 3, 3)
    assert [m.id for m in await a.read()] == ids
    got = await b.read()
    assert [m.id for m in got] == ids and got[1].text == "mesaj 1"
    assert got[1].row == fake.inbox[1]  # the provider's row, as fetched
    again = await a.fetch()  # nothing new: nothing sent
    assert again.published == 0
    assert await b.read() == []  # nothing new since b's cursor
    await store.finish([ids[0]], "x")  # finished: its shared row is gone
    assert [m.id for m in await b.read(full=True)] == ids[1:]


async def test_a_deposed_holder_cannot_publish(fake: FakeIletiMerkezi, client: IletiMerkezi) -> None:
    clock = Clock()
    store = MemoryStore("ns", clock=clock)
    a, b = intake(store, client, "a"), intake(store, client, "b")
    assert await a.acquire(clock.now)
    clock.now += 11  # a stalls past its lease; b takes over with a new token
    assert await b.acquire(clock.now)
    assert b.token is not None and a.token is not None and b.token > a.token
    fake.add_message("geç kalan")
    fetched = await a.fetch()  # a still believes it holds the lease: its publish is fenced
    assert fetched.published == -1 and not a.is_leader
    assert await b.read(full=True) == []
    assert (await b.fetch()).published == 1
    assert not await a.acquire(clock.now)


async def test_the_lease_is_renewed_by_its_holder_and_released_on_a_clean_stop(
        client: IletiMerkezi) -> None:
    clock = Clock()
    store = MemoryStore("ns", clock=clock)
    a, b = intake(store, client, "a"), intake(store, client, "b")
    assert await a.acquire(clock.now)
    token = a.token
    for _ in range(5):
        clock.now += 6  # renewed each turn: never lost, the token unchanged
        assert await a.acquire(clock.now) and a.token == token
        assert not await b.acquire(clock.now)
    await a.release()
    assert await b.acquire(clock.now)


async def test_rows_beyond_the_horizon_are_not_shared_and_leave_when_they_age(
        fake: FakeIletiMerkezi, client: IletiMerkezi) -> None:
    store = MemoryStore("ns")
    old = datetime.now(TURKEY) - timedelta(days=40)
    fake.add_message("eski", date=old)
    young = fake.add_message("yeni")["id"]
    cutoff = [datetime.now(TURKEY) - timedelta(days=30)]
    a = intake(store, client, "a", beyond=lambda m: m.received_at < cutoff[0])
    assert await a.acquire(0)
    assert (await a.fetch()).published == 1
    assert [m.id for m in await a.read()] == [young]
    cutoff[0] = datetime.now(TURKEY) + timedelta(days=1)  # time passes: now it is too old too
    assert await a.read(full=True) == []
    assert (await store.published(0))[1] == []


async def test_a_poll_over_a_processed_inbox_costs_the_same_whatever_its_size(
        fake: FakeIletiMerkezi, client: IletiMerkezi) -> None:
    costs = []
    for size in (10, 1000):
        with fake.lock:
            fake.inbox.clear()
        store = CountingStore(f"ns{size}")
        ids = [fake.add_message(f"m {i}", sender=f"+90555{i:07d}")["id"] for i in range(size)]
        await store.finish(ids, "x")
        a = intake(store, client, "a")
        store.calls.clear()
        await a.acquire(0)
        await a.fetch()
        assert await a.read() == []
        costs.append(sum(store.calls.values()))
    assert costs[0] == costs[1] <= 4, costs  # acquire, unfinished, record_poll, published


async def test_each_poll_is_recorded_for_the_dashboard(fake: FakeIletiMerkezi,
                                                      client: IletiMerkezi) -> None:
    store = MemoryStore("ns")
    a = intake(store, client, "a")
    assert await a.acquire(0)
    for i in range(2):
        fake.add_message(f"mesaj {i}", sender=f"+9055500000{i}")
    before = time.time()
    await a.fetch()
    poll = await store.last_poll()
    assert poll is not None and before <= poll[0] <= time.time() and poll[1] == 2


async def test_a_poll_whose_record_fails_still_publishes(fake: FakeIletiMerkezi,
                                                         client: IletiMerkezi,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    class NoPollRecord(MemoryStore):
        async def record_poll(self, at: float, rows: int) -> None:
            raise ConnectionError("store down for this one write")

    store = NoPollRecord("ns")
    a = intake(store, client, "a")
    assert await a.acquire(0)
    fake.add_message("mesaj", sender="+905550000001")
    assert (await a.fetch()).published == 1
    assert "could not record the poll" in caplog.text and await store.last_poll() is None


async def test_an_unreadable_shared_row_is_dropped_alone(client: IletiMerkezi) -> None:
    store = MemoryStore("ns")
    a = intake(store, client, "a")
    token = await store.acquire_fetch("a", 10, 0)
    assert token is not None
    good = {"id": "ok", "sender": "+905551112233", "text": "merhaba"}
    rows = [("bad", "{not json"), ("ok", json.dumps(good)), ("other", json.dumps({**good, "id": "x"}))]
    assert await store.publish(rows, token) == 3
    assert [m.id for m in await a.read()] == ["ok"]
    assert [i for i, _ in (await store.published(0))[1]] == ["ok"]


async def test_worker_once_in_process_on_memory(fake: FakeIletiMerkezi, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - name: all\n    pattern: '.*'\n"
                     "    handlers: [recording:record]\n", encoding="utf-8")
    ids = [fake.add_message(f"mesaj {i}", sender=f"+9055500000{i}")["id"] for i in range(3)]
    async with pipeline(rules, fake=fake) as runtime:
        worker = Worker(runtime, asyncio.Event(), once=True)
        assert await worker.run() == 0
        assert not worker.is_fetch_leader  # handed on at the end
        assert await runtime.store.unfinished(ids) == []
        assert (await runtime.store.published(0))[1] == []


class Recorded(Events):
    def __init__(self) -> None:
        self.polls: list[tuple[str, int | None, int | None]] = []
        self.ticks = 0

    def poll_finished(self, result: str, rows: int | None = None, total_rows: int | None = None) -> None:
        self.polls.append((result, rows, total_rows))

    def loop_ticked(self, now: float) -> None:
        self.ticks += 1


async def test_a_running_worker_reports_polls_and_ticks_and_leads(fake: FakeIletiMerkezi,
                                                                  tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - name: all\n    pattern: '.*'\n"
                     "    handlers: [recording:arecord]\n", encoding="utf-8")
    ids = [fake.add_message(f"mesaj {i}", sender=f"+9055500000{i}")["id"] for i in range(3)]
    fake.fail_next("get-inbox", 503)
    events = Recorded()
    async with pipeline(rules, fake=fake) as runtime:
        stopping = asyncio.Event()
        worker = Worker(runtime, stopping, interval=0.05, events=events)
        running = asyncio.create_task(worker.run())
        async with asyncio.timeout(30):
            while await runtime.store.unfinished(ids) or ("ok", 3, 3) not in events.polls:
                await asyncio.sleep(0.05)
        assert worker.is_fetch_leader and runtime.worker is None  # run() sets it, Worker does not
        stopping.set()
        assert await running == 0
        assert not worker.is_fetch_leader  # handed on at a clean stop
    assert events.polls[0] == ("transient", None, None)
    assert events.ticks >= 2


POISON = [
    {"id": "a\x00b", "sender": "+90555\ud83d1112233", "text": "x\ud800y", "date": "2026-03-01 10:00:00"},
    {"sender": "+905551112233", "text": "no id \udfff", "date": "2026-03-01 10:00:00"},
    {"id": "\ud83d", "text": None, "extra": {"k\x00": ["\udc00", 1.5]}},
]


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
async def test_rows_holding_nul_and_lone_surrogates_are_shared_exactly(backend: str,
                                                                       tmp_path: Path) -> None:
    from uuid import uuid4

    from keyrouter.message import parse_row
    from keyrouter.store import open_store

    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path / 'state.sqlite3'}",
           "redis": E2E_URL}[backend]
    namespace = f"intake-{uuid4().hex}"
    async with open_store(url, namespace) as store:
        try:
            sharing = Intake(store, None, owner="a", lease=10.0)
            assert await sharing.acquire(0)
            assert sharing.token is not None
            sent = [parse_row(row) for row in POISON]
            assert await store.publish([(m.id, _row_json(m)) for m in sent], sharing.token) == 3
            got = await intake(store, None, "b").read()
            assert [(m.id, m.sender, m.text, m.row) for m in got] == \
                [(m.id, m.sender, m.text, m.row) for m in sent]
        finally:
            client = getattr(store, "client", None)
            if client is not None:
                async for key in client.scan_iter(match=f"keyrouter:*{namespace}*"):
                    await client.delete(key)
