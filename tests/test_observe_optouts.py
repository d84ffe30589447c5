"""The metrics endpoint's opt-out gauges: pending and overdue per effect, from the store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from keyrouter.ops.metrics import Metrics
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.store.base import OptOut
from keyrouter.store.memory import MemoryStore

pytestmark = pytest.mark.anyio


def gauges(metrics: Metrics) -> dict[tuple[str, str], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, s.labels.get("effect", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("keyrouter_optouts_")}


async def test_pending_and_overdue_opt_outs_are_exported(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - name: optout\n    keywords: [RET]\n"
                     "    handlers: [reply: {text: ok}, blacklist, iys]\n", encoding="utf-8")
    metrics = Metrics(process_metrics=False)
    metrics.bind(SimpleNamespace(router=Router(load_rules(str(rules)))))
    store = MemoryStore()
    await metrics.refresh(store)
    assert gauges(metrics) == {("keyrouter_optouts_pending", "blacklist"): 0,
                               ("keyrouter_optouts_pending", "iys_ret"): 0,
                               ("keyrouter_optouts_overdue", "blacklist"): 0,
                               ("keyrouter_optouts_overdue", "iys_ret"): 0}
    now = time.time()
    # Retrying, received a minute ago: pending, not overdue.
    await store.mark_optout_pending(OptOut("+905321112233", "iys_ret", "m1", "RET", now - 60, 0.0))
    # Dead before the opt-out entries, received 30 days ago: both effects pending and overdue.
    row = {"id": "m2", "date": "2026-01-05 10:00:00", "sender": "05324445566", "text": "RET"}
    assert await store.dead_letter("m2", "w", "reply failed", rule="optout", row=row, now=now)
    await metrics.refresh(store)
    assert gauges(metrics) == {("keyrouter_optouts_pending", "blacklist"): 1,
                               ("keyrouter_optouts_pending", "iys_ret"): 2,
                               ("keyrouter_optouts_overdue", "blacklist"): 1,
                               ("keyrouter_optouts_overdue", "iys_ret"): 1}
    # Fetched and shared, held up before its opt-out entries (or not started): pending too.
    token = await store.acquire_fetch("leader", 30, now)
    assert token is not None
    waiting = {"id": "m3", "date": "2026-01-06 10:00:00", "sender": "05327776655", "text": "ret",
               "number": "7889"}
    survey = {"id": "m4", "date": "2026-01-06 10:00:00", "sender": "05327776655", "text": "anket a"}
    assert await store.publish([("m3", json.dumps(waiting)), ("m4", json.dumps(survey))], token) == 2
    await metrics.refresh(store)
    assert gauges(metrics)[("keyrouter_optouts_overdue", "blacklist")] == 2
    assert gauges(metrics)[("keyrouter_optouts_pending", "iys_ret")] == 3
    await store.record_optout(OptOut("+905327776655", "blacklist", "m3", "RET", 1767682800.0, now))
    await metrics.refresh(store)
    assert gauges(metrics)[("keyrouter_optouts_pending", "blacklist")] == 1
    assert gauges(metrics)[("keyrouter_optouts_pending", "iys_ret")] == 3
