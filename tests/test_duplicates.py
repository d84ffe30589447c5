"""A second row with an id already seen and different content is logged and counted, never
dropped without a word; an identical repeat (the inbox read again) stays silent."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from keyrouter.events import Events
from keyrouter.ops.metrics import Metrics
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.store.memory import MemoryStore
from keyrouter.testing import FakeIletiMerkezi, pipeline, process
from keyrouter.worker.intake import Intake

pytestmark = pytest.mark.anyio
NUMBER = "+905321112233"


class Counted(Events):
    def __init__(self) -> None:
        self.duplicates = 0

    def duplicate_id(self) -> None:
        self.duplicates += 1


@pytest.fixture
async def api(fake: FakeIletiMerkezi) -> AsyncIterator[IletiMerkezi]:
    async with IletiMerkezi(fake.key, fake.hash, base_url=fake.base_url) as client:
        yield client


async def test_the_leader_logs_and_counts_a_changed_row_once(
        fake: FakeIletiMerkezi, api: IletiMerkezi, caplog: pytest.LogCaptureFixture) -> None:
    store, events = MemoryStore("dup"), Counted()
    leader = Intake(store, api, owner="a", lease=10.0, events=events)
    assert await leader.acquire(0)
    first = fake.add_message("RET", sender=NUMBER, id="7", date="2026-11-27 09:15:00")
    await leader.fetch()
    assert events.duplicates == 0
    await leader.fetch()  # the same row again: a repeat, silent
    assert events.duplicates == 0 and "different content" not in caplog.text
    fake.add_message("BASLA", sender="0532 111 22 33", id="7", date="2026-11-27 09:16:00")
    with caplog.at_level(logging.WARNING, "keyrouter.intake"):
        await leader.fetch()
        await leader.fetch()  # the provider keeps returning it: reported once
    assert events.duplicates == 1
    warned = [r.getMessage() for r in caplog.records if "different content" in r.getMessage()]
    assert len(warned) == 1 and "'7'" in warned[0] and "+90532***2233" in warned[0]
    shared = (await store.published(0))[1]
    assert len(shared) == 1 and shared[0][0] == first["id"] and '"RET"' in shared[0][1]


async def test_a_batch_with_two_contents_for_one_id_is_reported(
        fake: FakeIletiMerkezi, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - name: optout\n    keywords: [RET]\n"
                     "    handlers: [log]\n", encoding="utf-8")
    metrics = Metrics(process_metrics=False)
    rows = [{"id": "9", "sender": NUMBER, "text": "RET", "date": "2026-11-27 09:15:00"},
            {"id": "9", "sender": NUMBER, "text": "RET", "date": "2026-11-27 09:15:00"},
            {"id": "9", "sender": NUMBER, "text": "BASLA", "date": "2026-11-27 09:15:00"}]
    async with pipeline(rules, fake=fake) as runtime:
        runtime.dispatcher.events = metrics
        with caplog.at_level(logging.WARNING):
            report = await process(runtime, rows)
    assert report.done == 1 and report.ignored == 2
    assert sum("different content" in r.getMessage() for r in caplog.records) == 1
    exposed = generate_latest(metrics.registry).decode()
    assert "keyrouter_duplicate_ids_total 1.0" in exposed
