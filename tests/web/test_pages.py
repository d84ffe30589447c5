"""The dashboard's pure parts: masking, Turkey time, cursors, the chart markup, the CSV stream."""

from __future__ import annotations

import asyncio
import csv
import io

from keyrouter.store import OptOut
from keyrouter.store.memory import MemoryStore
from keyrouter.web.charts import bar_chart
from keyrouter.web.pages import (
    LedgerFilter,
    decode_cursor,
    encode_cursor,
    ledger_csv,
    mask_text,
    mask_value,
    store_label,
    turkey_time,
)


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
        chunks = [c async for c in ledger_csv(store, LedgerFilter(), True, None, chunk=5)]
        assert len(chunks) == 5  # 5 + 5 + 5 + 5 + 3
        return list(csv.DictReader(io.StringIO("".join(chunks))))

    rows = asyncio.run(run())
    assert [r["message_id"] for r in rows] == [f"m{i:02d}" for i in range(22, -1, -1)]
    assert rows[0]["number"] == "+905320000022" and rows[0]["deadline"] == "not tracked"
