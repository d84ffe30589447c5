"""The metrics endpoint's opt-out gauges: pending and overdue per effect, from the store."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from keyrouter.observe import Metrics
from keyrouter.rules import load_rules
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
    metrics.bind(SimpleNamespace(router=SimpleNamespace(rules=load_rules(str(rules)))))
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
