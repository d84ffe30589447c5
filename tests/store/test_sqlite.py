"""The contract on SqliteStore, races between two OS processes, and sqlite:// URLs."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from keyrouter.store import Store, open_store
from keyrouter.store.sqlite import _LATEST, SqliteStore

from .contract import MakeStore, StoreContract, check_race, race_votes


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def make_store(self, tmp_path: Path) -> AsyncIterator[MakeStore]:
        path = tmp_path / "state" / "keyrouter.sqlite3"  # the parent folder does not exist yet
        made: list[Store] = []

        def make(
            namespace: str | None = None,
            *,
            horizon: timedelta | None = None,
            clock: Callable[[], float] | None = None,
        ) -> Store:
            ns = namespace or f"t-{uuid4().hex}"
            made.append(SqliteStore(path, ns, horizon, clock=clock or time.time))
            return made[-1]

        yield make
        for store in made:
            await store.close()


def _race(path: str, owner: str, ids: list[str], start: Any, results: Any) -> None:
    """One worker process: claim `ids` in small shuffled batches, report what it got."""

    async def run() -> list[str]:
        store = SqliteStore(path, "race")
        order = ids[:]
        random.Random(owner).shuffle(order)
        got: list[str] = []
        start.wait()
        for i in range(0, len(order), 7):
            got += [c.id for c in await store.claim(order[i : i + 7], owner, 60, time.time())]
            # SQLite's busy handler sleeps while the lock holder retakes the lock at once: without
            # a pause one process can win every batch, and the race proves nothing
            await asyncio.sleep(0.001)
        await store.close()
        return got

    results.put((owner, asyncio.run(run())))


@pytest.mark.slow
def test_two_processes_claim_each_id_exactly_once(tmp_path: Path) -> None:
    path = str(tmp_path / "race.sqlite3")
    ids = [f"m{i}" for i in range(500)]
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(path, o, ids, start, results)) for o in ("A", "B")]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    counts = Counter(id for claimed in got.values() for id in claimed)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}
    assert all(got.values()), "both processes should have won some ids"


@pytest.mark.slow
def test_two_processes_vote_with_exact_totals(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'votes.sqlite3'}"  # tmp_path is absolute: sqlite:////...
    changed = race_votes(url, "race")
    asyncio.run(check_race(url, "race", changed))


def test_latest_optout_reads_no_whole_table(tmp_path: Path) -> None:
    """latest_optout is two primary-key lookups, never a scan of the ledger."""
    store = SqliteStore(tmp_path / "k.sqlite3")
    try:
        plan = store._db.execute(f"EXPLAIN QUERY PLAN {_LATEST}", {"ns": "n", "number": "+9"})
        steps = [row[-1] for row in plan.fetchall()]
        assert len(steps) == 2 and all(step.startswith("SEARCH") for step in steps), steps
    finally:
        asyncio.run(store.close())


def test_open_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_store("sqlite:///data/k.sqlite3", "acct")
    absolute = open_store(f"sqlite:///{tmp_path}/abs/k.sqlite3")
    memory = open_store("sqlite://")
    try:
        assert isinstance(rel, SqliteStore) and rel.path == "data/k.sqlite3"
        assert (tmp_path / "data" / "k.sqlite3").exists()
        assert isinstance(absolute, SqliteStore) and absolute.path == f"{tmp_path}/abs/k.sqlite3"
        assert repr(rel) == "SqliteStore(sqlite:///data/k.sqlite3, namespace='acct')"
        assert isinstance(memory, SqliteStore) and memory.path == ":memory:"
    finally:
        for store in (rel, absolute, memory):
            asyncio.run(store.close())
    with pytest.raises(ValueError, match="sqlite"):
        open_store("sqlite:/k.sqlite3")
    with pytest.raises(ValueError, match="sqlite"):
        open_store("sqlite://host/k.sqlite3")
