"""One order of a sender's messages (keyrouter/ordering.py), used by scheduling and the ledger's
latest-wins: provider date, then numeric id ("99" before "100"), then id text; a row without a
date placed by its id.  Unit tests, the two inputs that broke it (through the real worker, on
memory, SQLite and the real Redis), and a property over random interleavings of RET and BASLA."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_dbs import STORE_URL

from keyrouter.compliance import exports
from keyrouter.handlers.iys import consent_date
from keyrouter.message import FIRST_SEEN, parse_row
from keyrouter.ordering import Position, compare, in_order, later, numeric_id, position
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.store import open_store
from keyrouter.store.base import OptOut
from keyrouter.store.keys import Keys
from keyrouter.store.redis.connect import connect
from keyrouter.testing import FakeIletiMerkezi, pipeline, process
from keyrouter.timefmt import iys as consent_date_of
from keyrouter.web import pages
from keyrouter.worker.intake import Intake
from keyrouter.worker.loop import Worker

REDIS_URL = STORE_URL
NUMBER = "+905321112233"
RULES = """\
version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers: [blacklist]
  - name: optin
    keywords: [BASLA]
    handlers: [unblacklist]
"""


# ---------------------------------------------------------------- the order itself
def test_numeric_ids_compare_as_numbers_and_dates_come_first() -> None:
    assert numeric_id("100") == 100 and numeric_id("h-1") is None and numeric_id("١٢") is None
    assert compare(Position(5.0, "100"), Position(5.0, "99")) == 1
    assert compare(Position(4.0, "100"), Position(5.0, "99")) == -1  # the date decides first
    assert compare(Position(5.0, "b"), Position(5.0, "a")) == 1  # then the id text
    assert compare(Position(5.0, "7"), Position(5.0, "7")) == 0


def test_an_undated_row_is_placed_by_its_id() -> None:
    undated = Position(None, "100")
    assert later(undated, Position(9e9, "99"))  # whatever the other's date
    assert later(Position(0.0, "101"), undated)
    rows = [Position(30.0, "103"), Position(None, "102"), Position(10.0, "100"),
            Position(20.0, "101")]
    assert [p.id for p in in_order(rows, lambda p: p)] == ["100", "101", "102", "103"]
    assert in_order(list(reversed(rows)), lambda p: p) == in_order(rows, lambda p: p)


def test_an_undated_row_keeps_its_first_seen_time_with_the_row() -> None:
    first = parse_row({"id": "5", "sender": NUMBER, "text": "RET"})
    assert not first.date_known and FIRST_SEEN in first.row
    again = parse_row(dict(first.row))  # read back from the store, later
    assert again.received_at == first.received_at and again.row[FIRST_SEEN] == first.row[FIRST_SEEN]
    assert position(again) == Position(None, "5")
    dated = parse_row({"id": "6", "sender": NUMBER, "text": "RET", "date": "2026-11-27 09:15:00"})
    assert dated.date_known and FIRST_SEEN not in dated.row


def test_first_seen_is_the_consent_date_and_the_ledger_says_no_date_was_given() -> None:
    m = parse_row({"id": "5", "sender": NUMBER, "text": "RET"})
    assert consent_date(m) == consent_date_of(m.row[FIRST_SEEN])
    assert consent_date(parse_row(dict(m.row))) == consent_date(m)  # kept, not read again
    line = OptOut(NUMBER, "blacklist", "5", "RET", m.received_at.timestamp(), 1.0, dated=False)
    assert next(exports.ledger_rows([line]))["date_given"] == "no"
    assert "no date from the provider" in pages.received_text(line)
    assert pages.ledger_row(line, None, 2.0).received.endswith("no date from the provider)")
    dated = OptOut(NUMBER, "blacklist", "6", "RET", 1.0, 2.0)
    assert next(exports.ledger_rows([dated]))["date_given"] == "yes"
    assert "first seen" not in pages.received_text(dated)


# ---------------------------------------------------------------- through the real worker
@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.sqlite3'}"
    else:
        yield REDIS_URL


async def drop_namespace(url: str, namespace: str) -> None:
    if url.startswith("redis"):
        client = connect(url)
        try:
            async for key in client.scan_iter(match=Keys(namespace).pattern, count=1000):
                await client.delete(key)
        finally:
            await client.aclose()


async def poll(runtime: Any) -> int:
    return await Worker(runtime, asyncio.Event(), once=True).run()


def undated(row: dict[str, Any]) -> dict[str, Any]:
    del row["date"]
    return row


@pytest.mark.anyio
async def test_the_first_seen_time_is_decided_once_and_kept_by_the_store(store_url: str) -> None:
    """The fetch leader stamps an undated row once; every worker reading the shared row, later,
    and the dead letter it may become, carry that same time."""
    namespace = f"seen-{uuid4().hex[:12]}"
    store = open_store(store_url, namespace)
    try:
        with FakeIletiMerkezi() as provider:
            async with IletiMerkezi(provider.key, provider.hash, base_url=provider.base_url) as api:
                undated(provider.add_message("RET", sender=NUMBER, id="41"))
                leader = Intake(store, api, owner="a", lease=10.0)
                assert await leader.acquire(0)
                await leader.fetch()
                first = (await leader.read(full=True))[0]
                await asyncio.sleep(0.05)
                await leader.fetch()  # polled again: the row is not stamped anew
                other = (await Intake(store, None, owner="b", lease=10.0).read(full=True))[0]
        assert not first.date_known and other.received_at == first.received_at
        assert await store.dead_letter("41", "b", "x", rule="optout", row=other.row, now=1.0)
        kept = await store.get_dead_letter("41")
        assert kept is not None and parse_row(kept.row).received_at == first.received_at
    finally:
        await store.close()
        await drop_namespace(store_url, namespace)


@pytest.mark.anyio
@pytest.mark.parametrize("late", [False, True], ids=["one-poll", "basla-arrives-later"])
async def test_undated_basla_before_a_dated_ret_ends_blacklisted(store_url: str, tmp_path: Path,
                                                                 late: bool) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    namespace = f"order-{uuid4().hex[:12]}"
    with FakeIletiMerkezi() as provider:
        async with pipeline(rules, fake=provider, store=store_url, namespace=namespace) as runtime:
            try:
                basla = undated(provider.add_message("BASLA", sender=NUMBER, id="99"))
                if late:
                    provider.inbox.remove(basla)
                provider.add_message("RET", sender=NUMBER, id="100", date="2026-11-27 09:15:00")
                assert await poll(runtime) == 0
                if late:
                    provider.inbox.append(basla)
                    assert await poll(runtime) == 0
                ledger = await runtime.store.optouts()
            finally:
                await drop_namespace(store_url, namespace)
    assert NUMBER in provider.blacklist
    lines = {e.message_id: e for e in ledger}
    assert lines["100"].action == "blacklist" and lines["100"].dated
    if not late:  # it ran first, and the ledger says the provider gave it no date
        assert lines["99"].action == "unblacklist" and lines["99"].dated is False
    else:  # it came after the RET it precedes: it changed nothing
        assert "99" not in lines


@pytest.mark.anyio
@pytest.mark.parametrize("late", [False, True], ids=["one-poll", "basla-arrives-later"])
async def test_basla_99_and_ret_100_in_one_second_end_blacklisted(store_url: str, tmp_path: Path,
                                                                   late: bool) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    namespace = f"order-{uuid4().hex[:12]}"
    second = "2026-11-27 09:15:00"
    with FakeIletiMerkezi() as provider:
        async with pipeline(rules, fake=provider, store=store_url, namespace=namespace) as runtime:
            try:
                # the inbox lists the newest first: RET 100, then BASLA 99
                provider.add_message("RET", sender=NUMBER, id="100", date=second)
                if not late:
                    provider.add_message("BASLA", sender=NUMBER, id="99", date=second)
                assert await poll(runtime) == 0
                if late:
                    provider.add_message("BASLA", sender=NUMBER, id="99", date=second)
                    assert await poll(runtime) == 0
                latest = await runtime.store.latest_optout(NUMBER)
            finally:
                await drop_namespace(store_url, namespace)
    assert NUMBER in provider.blacklist
    assert latest is not None and (latest.message_id, latest.action) == ("100", "blacklist")


# ---------------------------------------------------------------- the property
PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[int]], list[int]]:
    """Messages from one sender (intent, id, date or none), how they reach the inbox across
    polls, and the inbox order of each poll.  Ids straddle 99/100 and 999/1000; dates come from
    three seconds, so ties are common; the provider's ids grow with time, as they do."""
    n = draw(st.integers(1, 7))
    start = draw(st.sampled_from([95, 996]))
    ids = sorted(draw(st.lists(st.integers(start, start + 9), min_size=n, max_size=n,
                               unique=True)))
    seconds = sorted(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    messages = []
    for i, (id, second) in enumerate(zip(ids, seconds, strict=True)):
        dated = draw(st.booleans())
        messages.append({"id": str(id), "intent": draw(st.sampled_from(["RET", "BASLA"])),
                         "date": f"2026-11-27 09:15:0{second}" if dated else None, "n": i})
    arrival = draw(st.permutations(range(n)))
    cuts = sorted(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=2, unique=True)))
    polls = [p for a, b in zip([0, *cuts], [*cuts, n], strict=True) if (p := list(arrival[a:b]))]
    shuffles = [draw(st.integers(0, 2**32)) for _ in polls]
    return messages, polls, shuffles


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeIletiMerkezi]:
    with FakeIletiMerkezi() as fake:
        yield fake


@PROPERTY
@given(history=histories())
def test_the_last_message_in_the_order_decides(provider: FakeIletiMerkezi, tmp_path: Path,
                                               history: Any) -> None:
    messages, polls, shuffles = history
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    with provider.lock:
        provider.inbox.clear()
        provider.blacklist.clear()

    async def run() -> None:
        inbox: list[dict[str, Any]] = []
        async with pipeline(rules, fake=provider, namespace=f"p-{uuid4().hex[:12]}") as runtime:
            for arriving, seed in zip(polls, shuffles, strict=True):
                for i in arriving:
                    m = messages[i]
                    row = {"id": m["id"], "sender": NUMBER, "number": "+908505550000",
                           "text": m["intent"]}
                    if m["date"] is not None:
                        row["date"] = m["date"]
                    inbox.append(row)
                random.Random(seed).shuffle(inbox)  # the inbox order is not the order
                report = await process(runtime, list(inbox))
                assert report.dead == 0

    asyncio.run(run())
    by_position = in_order(messages, lambda m: Position(None if m["date"] is None else
                                                        float(m["date"][-1]), m["id"]))
    last = by_position[-1]
    assert last["id"] == max(messages, key=lambda m: int(m["id"]))["id"]  # ids grow with time
    assert (NUMBER in provider.blacklist) == (last["intent"] == "RET"), (messages, polls)
