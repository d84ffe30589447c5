"""The dashboard's opt-out page and CSV say where each opt-out came from: inbox, provider (found
on the provider's blacklist alone, docs/reconciliation.md) or dashboard."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from keyrouter.store import OptOut
from keyrouter.store.memory import MemoryStore


def test_the_channel_column(make_app: Callable[..., Any]) -> None:
    store = MemoryStore("channels")
    for message_id, number in (("4242", "+905321110001"), ("provider:+905321110002:-", "+905321110002")):
        asyncio.run(store.record_optout(OptOut(number, "blacklist", message_id, None,
                                               1_790_000_000.0, 1_790_000_100.0)))
    with TestClient(make_app(store=store)) as client:
        html = client.get("/optouts").text
        rows = list(csv.DictReader(io.StringIO(client.get("/optouts.csv").text)))
    assert "<th>Channel</th>" in html
    assert "<td>provider</td>" in html and "<td>inbox</td>" in html
    assert {(r["message_id"], r["channel"]) for r in rows} == {
        ("4242", "inbox"), ("provider:+905321110002:-", "provider")}
