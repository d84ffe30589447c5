"""The contract on SqliteStore, races between two OS processes, and sqlite:// URLs."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from keyrouter.store import Description, Store, open_store
from keyrouter.store.sqlite import SqliteStore
from keyrouter.store.sqlite.sql import LATEST

from .contract import MakeStore, StoreContract, check_race, race_votes


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def make_store(self, tmp_path: Path) -> AsyncIterator[MakeStore]:
        path = tmp_path / "state" / "keyrouter.sqlite3"
        path.parent.mkdir()  # the store creates its file, never folders (test_open_sqlite_urls)
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


def _open_each(paths: list[str], start: Any, failures: Any) -> None:
    """Open a store on each of `paths`, at the same moment as the other processes."""
    for path in paths:
        start.wait(timeout=30)
        try:
            SqliteStore(path)
        except Exception as exc:
            failures.put(f"{path}: {exc!r}")
    failures.put(None)


@pytest.mark.slow
def test_workers_starting_together_on_a_new_file_all_open_it(tmp_path: Path) -> None:
    """Switching a new file to WAL answered "database is locked" at once, without the busy
    timeout, to a worker that met another one's lock: 4 processes opening 40 new files at the
    same moment saw it in 2 to 6 of the 40 rounds."""
    paths = [str(tmp_path / f"new-{n}.sqlite3") for n in range(40)]
    ctx = multiprocessing.get_context("spawn")
    start, failures = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_each, args=(paths, start, failures)) for _ in range(4)]
    for p in procs:
        p.start()
    found: list[str] = []
    ended = 0
    while ended < len(procs):  # each process sends its failures, then None
        item = failures.get(timeout=120)
        if item is None:
            ended += 1
        else:
            found.append(item)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert found == []


@pytest.mark.slow
def test_two_processes_vote_with_exact_totals(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'votes.sqlite3'}"  # tmp_path is absolute: sqlite:////...
    changed = race_votes(url, "race")
    asyncio.run(check_race(url, "race", changed))


def test_latest_optout_reads_no_whole_table(tmp_path: Path) -> None:
    """latest_optout is two primary-key lookups, never a scan of the ledger."""
    asyncio.run(SqliteStore(tmp_path / "k.sqlite3").close())  # the schema, as the store makes it
    with closing(sqlite3.connect(tmp_path / "k.sqlite3")) as db:
        plan = db.execute(f"EXPLAIN QUERY PLAN {LATEST}", {"ns": "n", "number": "+9"})
        steps = [row[-1] for row in plan.fetchall()]
    assert len(steps) == 2 and all(step.startswith("SEARCH") for step in steps), steps


def test_open_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "abs").mkdir()
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
    with pytest.raises(ValueError, match=r"folder .*missing.* does not exist"):
        open_store(f"sqlite:///{tmp_path}/missing/k.sqlite3")  # never creates folders
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match="sqlite"):
        open_store("sqlite:/k.sqlite3")
    with pytest.raises(ValueError, match="sqlite"):
        open_store("sqlite://host/k.sqlite3")


def _lead(path: str, owner: str, start: Any, results: Any) -> None:
    """One worker process: try to lead 40 times with a short lease, publish a row when leading,
    and now and then stop leading."""

    async def run() -> list[tuple[int, str, int]]:
        store = SqliteStore(path, "lead")
        rng = random.Random(owner)
        seen: list[tuple[int, str, int]] = []
        start.wait()
        for i in range(40):
            token = await store.acquire_fetch(owner, 0.05, time.time())
            if token is not None:
                added = await store.publish([(f"{owner}-{i}", f'{{"i": {i}}}')], token)
                seen.append((token, f"{owner}-{i}", added))
                if i % 3 == 2:
                    await store.release_fetch(owner)  # a clean stop now and then: hand over
            await asyncio.sleep(rng.uniform(0, 0.03))
        await store.close()
        return seen

    results.put((owner, asyncio.run(run())))


@pytest.mark.slow
@pytest.mark.anyio
async def test_describe_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    async with open_store(f"sqlite:///{path}", "acct-1") as store:
        assert store.describe() == Description("sqlite", f"sqlite:///{path}", "acct-1",
                                               persistent=True, file=str(path))
    async with open_store("sqlite://", "acct-1") as store:
        assert store.describe() == Description("sqlite", "sqlite://", "acct-1", persistent=False,
                                               file=":memory:")


def test_processes_share_one_fetch_lease_and_its_rows(tmp_path: Path) -> None:
    """Three OS processes on one SQLite file: each fencing token belongs to one holder, tokens only
    grow, and every row a holder published is what every process reads, in publish order."""
    path = str(tmp_path / "lead.sqlite3")
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(3), ctx.Queue()
    owners = ("A", "B", "C")
    procs = [ctx.Process(target=_lead, args=(path, o, start, results)) for o in owners]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    holders: dict[int, set[str]] = {}
    for owner, seen in got.items():
        tokens = [token for token, _, _ in seen]
        assert tokens == sorted(tokens), f"{owner}'s tokens went back: {tokens}"
        for token, _, _ in seen:
            holders.setdefault(token, set()).add(owner)
    assert all(len(h) == 1 for h in holders.values()), holders
    assert len({o for h in holders.values() for o in h}) >= 2, "the lease never changed hands"
    published = {id for seen in got.values() for _, id, added in seen if added == 1}
    assert published  # a deposed holder's publish may be refused (-1), never lost when accepted

    async def read() -> list[tuple[str, str]]:
        store = SqliteStore(path, "lead")
        try:
            return (await store.published(0))[1]
        finally:
            await store.close()

    rows = asyncio.run(read())
    assert {id for id, _ in rows} == published
    by_token = {id: token for seen in got.values() for token, id, added in seen if added == 1}
    order = [by_token[id] for id, _ in rows]
    assert order == sorted(order)  # publish order follows the leaders' succession
