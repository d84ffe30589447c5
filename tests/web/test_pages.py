"""The dashboard's pure parts: masking, Turkey time, cursors, the chart markup, the CSV stream."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from keyrouter.store import OptOut
from keyrouter.store.memory import MemoryStore
from keyrouter.timefmt import display as turkey_time
from keyrouter.web.charts import bar_chart
from keyrouter.web.pages import (
    LedgerFilter,
    decode_cursor,
    encode_cursor,
    ledger_csv,
    mask_text,
    mask_value,
)
from keyrouter.web.status import store_label


def test_turkey_time_carries_its_offset() -> None:
    assert turkey_time(0) == "1970-01-01 03:00:00 +03:00"
    assert turkey_time(None) == ""


def test_numbers_are_masked_in_free_text_and_rows_but_ids_kept() -> None:
    assert mask_text("call 0532 123 45 67 or +905321234567, ref 12345") == \
        "call +90532***4567 or +90532***4567, ref 12345"
    row = {"id": "5321234567", "sender": "5321234567", "nested": [{"n": 905321234567}], "ok": True}
    assert mask_value(row) == {"id": "5321234567", "sender": "+90532***4567",
                               "nested": [{"n": "+90532***4567"}], "ok": True}


def test_cursor_round_trips_any_id_and_rejects_garbage() -> None:
    e = OptOut("+905321234567", "iys_ret", "a|b/ç?&=", None, 1234.5678901, 0.0)
    assert decode_cursor(encode_cursor(e)) == (1234.5678901, "a|b/ç?&=", "iys_ret")
    for bad in ("", None, "!!!", "bm90IGpzb24", "WzEsIDJd"):
        assert decode_cursor(bad) is None


def test_store_label_never_shows_a_password() -> None:
    assert store_label("redis://:hunter2@cache:6379/0?x=1") == "redis://cache:6379/0"
    assert store_label("sqlite:////var/lib/k/keyrouter.sqlite3") == "sqlite:///keyrouter.sqlite3"
    assert store_label("memory://") == "memory://"


def test_chart_escapes_labels_and_draws_zero_bars() -> None:
    svg = str(bar_chart('t"<x>', [("<b>", 2, False), ("c", 0, True)]))
    assert "<b>" not in svg and "&lt;b&gt;" in svg and 'aria-label="t&quot;&lt;x&gt;"' in svg
    assert 'class="bar undeclared"' in svg and 'width="0" height' in svg and 'data-votes="0"' in svg


def test_ledger_csv_streams_in_chunks_newest_first() -> None:
    async def run() -> list[dict[str, str]]:
        store = MemoryStore("csv")
        for i in range(23):
            await store.record_optout(OptOut(f"+90532{i:07d}", "blacklist", f"m{i:02d}", "RET",
                                              1000.0 + i // 2, 2000.0))
        chunks = [c async for c in ledger_csv(store, LedgerFilter(), True, chunk=5)]
        assert len(chunks) == 5  # 5 + 5 + 5 + 5 + 3
        return list(csv.DictReader(io.StringIO("".join(chunks))))

    rows = asyncio.run(run())
    assert [r["message_id"] for r in rows] == [f"m{i:02d}" for i in range(22, -1, -1)]
    assert rows[0]["number"] == "+905320000022" and rows[0]["deadline"] == "1970-01-07T00:00:00+03:00"


def test_pending_agrees_with_the_compliance_count(write_rules) -> None:
    """The dashboard's paged reading of "pending" finds exactly what `optouts overdue` finds."""
    from keyrouter.compliance import overdue as compliance
    from keyrouter.rules.loader import load_rules
    from keyrouter.web.pending import effects_of, pending

    rules = load_rules(write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            handlers: [reply: {text: ok}, blacklist, iys: {status: RET}]
          - {name: survey, keywords: [ANKET], handlers: [log]}
    """))
    effects = effects_of(rules)
    assert effects == {"optout": ("blacklist", "iys_ret")}

    def row(id: str, minute: int) -> dict[str, str]:
        return {"id": id, "date": f"2026-11-23 10:{minute:02d}:00", "sender": "05321234567", "text": "RET"}

    def mark(id: str, action: str = "blacklist") -> OptOut:
        return OptOut("+905321234567", action, id, "RET", 1_795_000_000.0, 0.0)

    async def run() -> tuple[set[tuple[str, str, str, float]], set[tuple[str, str, str, float]]]:
        store = MemoryStore("pending")
        # a: dead before either effect began (the reply failed): both pending
        await store.dead_letter("a", "w", "e", rule="optout", row=row("a", 1), now=1.0)
        # b: blacklisted (ledger line), İYS marked then dead: only İYS pending
        await store.record_optout(OptOut("+905321234567", "blacklist", "b", "RET", 1_795_000_000.0, 5.0))
        await store.mark_optout_pending(mark("b", "iys_ret"))
        await store.dead_letter("b", "w", "e", rule="optout", row=row("b", 2), now=2.0)
        # c: marked, waiting for a retry
        await store.mark_optout_pending(mark("c"))
        await store.claim(["c"], "w", 30.0, 0.0)
        await store.fail("c", "w", "e", retry_at=9e9)
        # d: marked, but its message finished otherwise: not pending
        await store.mark_optout_pending(mark("d"))
        await store.finish(["d"], "w")
        # e: marked, dead under a rule without opt-out effects (the rules changed since)
        await store.mark_optout_pending(mark("e"))
        await store.dead_letter("e", "w", "e", rule="survey", row=row("e", 3), now=3.0)
        # f: in the ledger only
        await store.record_optout(OptOut("+905321234567", "iys_ret", "f", "RET", 1_795_000_000.0, 5.0))
        ours, _ = await pending(store, effects)
        theirs = [c for c in await compliance.collect(store, effects) if c.state == compliance.PENDING]
        return ({(p.entry.message_id, p.entry.action, p.where, p.entry.received_at) for p in ours},
                {(c.message_id, c.effect, c.where, c.received_at) for c in theirs})

    ours, theirs = asyncio.run(run())
    assert ours == theirs
    assert {(m, e, w) for m, e, w, _ in ours} == {
        ("a", "blacklist", "dead letter"), ("a", "iys_ret", "dead letter"),
        ("b", "iys_ret", "dead letter"), ("c", "blacklist", "retrying"), ("e", "blacklist", "dead letter")}


@given(st.floats(min_value=1_767_225_600, max_value=1_830_297_600))  # 2026-01-01 .. 2027-12-31
def test_the_per_day_deadline_cache_agrees_with_deadlines(received: float) -> None:
    from keyrouter.compliance import deadlines
    from keyrouter.web.pages import deadline_function

    fn = deadline_function()
    assert fn is not None and fn(received) == deadlines.deadline(received).timestamp()


def test_pending_counts_shared_rows_as_compliance_does(write_rules) -> None:
    """Rows the fetch leader shared (fetched, unfinished) that route to an opt-out effect are
    pending ("waiting"), unless that effect is in the ledger: the same answer as compliance."""
    from keyrouter.compliance import overdue as compliance
    from keyrouter.rules.loader import load_rules
    from keyrouter.rules.router import Router
    from keyrouter.web.pending import effects_of, pending

    rules = load_rules(write_rules("""
        version: 1
        rules:
          - {name: optout, keywords: [RET], handlers: [reply: {text: ok}, blacklist]}
          - {name: survey, keywords: [ANKET], handlers: [log]}
    """))
    router, effects = Router(rules), effects_of(rules)
    NOV23 = 1_795_417_200.0  # 2026-11-23 10:00:00 +03:00

    def row(id: str, text: str) -> tuple[str, str]:
        body = {"id": id, "date": "2026-11-23 10:00:00", "sender": "05321234567", "number": "+908501234567",
                "text": text}
        return id, json.dumps(body)

    async def run() -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]], Any]:
        store = MemoryStore("shared")
        token = await store.acquire_fetch("leader", 30.0, 0.0)
        assert token is not None
        await store.publish([row("w1", "RET"), row("w2", "ANKET"), row("w3", "ret")], token)
        await store.record_optout(OptOut("+905321234567", "blacklist", "w3", "RET", 1_795_000_000.0, 5.0))
        ours, _ = await pending(store, effects, router)
        theirs = [c for c in await compliance.collect(store, effects, router=router)
                  if c.state == compliance.PENDING]
        from keyrouter.web.status import inbox

        return ({(p.entry.message_id, p.entry.action, p.where) for p in ours},
                {(c.message_id, c.effect, c.where) for c in theirs}, await inbox(store, NOV23 + 3 * 3600))

    ours, theirs, waiting = asyncio.run(run())
    assert ours == theirs == {("w1", "blacklist", "waiting")}
    assert (waiting.waiting, waiting.oldest) == (3, "2026-11-23 10:00:00 +03:00")
    assert waiting.lag == "3.0 h"
