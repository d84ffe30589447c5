"""Poison rows: whatever the provider sends, the good rows are done exactly once
on every store, and a row that cannot be handled goes to the dead letters alone, intact.

A hypothesis property drives the real pipeline (keyrouter.testing.pipeline/process: router,
dispatcher, store) with rows of arbitrary strings (NUL, lone surrogates, the codec's marker) and
arbitrary JSON types in every field, on memory, SQLite, the real Redis and the Redis Cluster.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import recording
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_dbs import STORE_URL

from keyrouter.message import FIRST_SEEN, RowError, parse_row
from keyrouter.store.keys import Keys
from keyrouter.store.redis.connect import connect
from keyrouter.testing import pipeline, process

REDIS_URL = STORE_URL

RULES = """\
version: 1
rules:
  - {name: poison, keywords: [ZEHIR], handlers: [recording:permanent]}
default: {handlers: [recording:record]}
"""

SPECIAL = ["\x00", "\ud83d", "\ude00", "\udfff", "\x01", "\\u0000", "\\", '"', "İ", "📩", " ", "|"]
TEXT = st.lists(
    st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=())), max_size=8
).map("".join)
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT,
)
VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
ROW = st.fixed_dictionaries(
    {"id": st.one_of(TEXT, TEXT, st.integers(), VALUE)},
    optional={
        "sender": VALUE, "text": st.one_of(st.just("ZEHIR"), TEXT, VALUE), "date": VALUE,
        "number": VALUE, "extra": VALUE,
    },
)
ROWS = st.lists(st.one_of(ROW, ROW, ROW, VALUE), max_size=8)


def _id(row: Any) -> str | None:
    try:
        return parse_row(row).id
    except RowError:
        return None


async def _run_twice(store_url: str, rules: Path, rows: list[Any]) -> None:
    """Process the rows twice (the inbox comes back whole on every poll) and check the outcome."""
    unique: dict[str, Any] = {}
    for row in rows:
        id = _id(row)
        if id is not None:
            unique.setdefault(id, row)
    rows = [r for r in rows if _id(r) is None] + list(unique.values())  # one row per id
    namespace = f"poison-{uuid4().hex}"
    recording.CALLS.clear()
    async with pipeline(rules, store=store_url, namespace=namespace) as runtime:
        try:
            await process(runtime, rows)
            await process(runtime, rows)  # a second poll over the same inbox: nothing runs again
            calls = Counter(c["id"] for c in recording.CALLS)
            dead = {d.id: d for d in await runtime.store.dead_letters()}
            assert set(calls.values()) <= {1}, calls
            assert set(calls).isdisjoint(dead)
            assert set(calls) | set(dead) == set(unique)
            for id, row in unique.items():
                if row.get("text") == "ZEHIR":
                    assert id in dead
                if id in dead:
                    assert "permanent" in dead[id].error or "never" in dead[id].error
                    kept = dict(dead[id].row)
                    # a row without a provider date carries the time it was first seen, once
                    first_seen = kept.pop(FIRST_SEEN, None)
                    assert (first_seen is None) == parse_row(row).date_known
                    assert kept == row  # every string and type read back exactly
            assert await runtime.store.unfinished(list(unique)) == []
        finally:
            if store_url.startswith("redis"):
                await _drop_namespace(store_url, namespace)
    recording.CALLS.clear()


async def _drop_namespace(url: str, namespace: str) -> None:
    client = connect(url)
    try:
        async for key in client.scan_iter(match=Keys(namespace).pattern, count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


PROPERTY = settings(
    max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


@pytest.fixture(params=["memory", "sqlite", "redis", "cluster"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'poison.sqlite3'}"
    elif request.param == "redis":
        yield REDIS_URL
    else:
        yield request.getfixturevalue("redis_cluster_url")


@PROPERTY
@given(rows=ROWS)
def test_good_rows_are_done_once_whatever_the_rows_hold(
    store_url: str, rules: Path, rows: list[Any]
) -> None:
    asyncio.run(_run_twice(store_url, rules, rows))


def test_the_rows_that_broke_sqlite_and_redis(store_url: str, rules: Path) -> None:
    """The issue's inputs: NUL and lone surrogates in id, sender, text and extra fields, mixed
    with good rows and a row that cannot be handled."""
    rows = [
        {"id": "good-1", "sender": "05551112233", "text": "RET", "date": "2026-04-09 11:18:44"},
        {"id": "nul\x00id", "sender": "+90555\x00", "text": "RET\x00", "x": "\x00"},
        {"id": "lone\ud83d", "sender": "\ud83d", "text": "emoji half \ud83d", "x": ["\ude00"]},
        {"id": "\ud83d\ude00", "sender": "s", "text": "ZEHIR", "x": {"\x00": "\udfff"}},
        {"id": 42, "sender": 5551112233, "text": 3.5, "number": None, "date": ["no"]},
        {"id": "good-2", "text": "merhaba"},
    ]
    asyncio.run(_run_twice(store_url, rules, rows))
