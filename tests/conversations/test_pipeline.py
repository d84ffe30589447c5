"""Conversations through the real dispatcher and the fake provider (in one process): the issue's
survey with three respondents interleaved, expiry, re-sends and re-polls."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keyrouter.conversations.results import funnel
from keyrouter.message import TURKEY
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.testing import FakeIletiMerkezi, pipeline, process

from .support import ASK1, ASK2, ASK3, DONE, RETRY1, write_rules

pytestmark = pytest.mark.anyio

A, B, C = "+905321110001", "+905321110002", "+905321110003"


def texts_to(fake: FakeIletiMerkezi, number: str) -> list[str]:
    return [s.text for s in fake.sent if number in s.numbers]


def rows(fake: FakeIletiMerkezi, said: list[tuple[str, str]]) -> list[dict[str, Any]]:
    start = datetime.now(TURKEY) - timedelta(minutes=5)
    return [fake.add_message(text, sender=sender, date=start + timedelta(seconds=i))
            for i, (sender, text) in enumerate(said)]


async def test_three_respondents_interleaved(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    with FakeIletiMerkezi() as fake:
        async with pipeline(rules, fake=fake) as runtime:
            inbox = rows(fake, [
                (A, "ANKET"), (B, "survey"), (C, "Anket"),
                (A, "👍🏽"), (B, "4"), (C, "3"),
                (A, "hizli teslimat"), (B, "kargo  geç geldi!"), (C, "RET"),
                (A, "Evet"), (B, "hayr"),
            ])
            report = await process(runtime, inbox)
            assert (report.done, report.dead) == (11, 0)
            store = runtime.store
            records = {r.respondent: r for r in await store.conversation_records("nps-2026")}
            # again: a re-poll of the same inbox changes nothing
            await process(runtime, inbox)
            assert {r.respondent: r for r in await store.conversation_records("nps-2026")} == records
    assert records[A].status == "completed"
    assert records[A].answers == {"score": "5", "reason": "hizli teslimat", "callback": "EVET"}
    assert records[B].status == "completed"
    assert records[B].answers == {"score": "4", "reason": "kargo  geç geldi!", "callback": "HAYIR"}
    assert records[C].status == "opted_out" and records[C].answers == {"score": "3"}
    assert texts_to(fake, A) == [ASK1, ASK2, ASK3, DONE]
    assert texts_to(fake, B) == [ASK1, ASK2, ASK3, DONE]
    assert texts_to(fake, C) == [ASK1, ASK2, "Listeden cikarildiniz."]
    assert C in fake.blacklist and A not in fake.blacklist
    assert funnel(list(records.values()), None, 0.0) == {
        "started": 3, "completed": 2, "expired": 0, "incomplete": 0, "opted_out": 1}


async def test_start_again_resends_and_misses_end_it(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    with FakeIletiMerkezi() as fake:
        async with pipeline(rules, fake=fake) as runtime:
            await process(runtime, rows(fake, [
                (A, "ANKET"), (A, "5"), (A, "ANKET"), (A, "anket"),  # re-sent at a text question
                (A, "harika"),
                (A, "belki"), (A, "bilmem"), (A, "sonra"),  # three misses in a row
            ]))
            record = await runtime.store.conversation_of(A)
    assert record is not None and record.status == "incomplete"
    assert record.answers == {"score": "5", "reason": "harika"}
    # a re-send of the same text within ten minutes is varied, so the provider takes it
    assert texts_to(fake, A) == [ASK1, ASK2, f"{ASK2} (2)", f"{ASK2} (3)", ASK3, f"{ASK3} (2)",
                                 f"{ASK3} (3)"]


async def test_a_miss_gets_the_retry_text(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    with FakeIletiMerkezi() as fake:
        async with pipeline(rules, fake=fake) as runtime:
            await process(runtime, rows(fake, [(A, "ANKET"), (A, "on"), (A, "yedi"), (A, "👎🏿")]))
            record = await runtime.store.conversation_of(A)
    assert record is not None and record.answers == {"score": "1"} and record.step == 1
    assert texts_to(fake, A) == [ASK1, RETRY1, f"{RETRY1} (2)", ASK2]


async def test_an_answer_after_expiry_is_routed_by_the_rules(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    with FakeIletiMerkezi() as fake:
        async with pipeline(rules, fake=fake) as runtime:
            await process(runtime, rows(fake, [(A, "ANKET")]))
            clock = runtime.dispatcher.clock
            runtime.dispatcher.conversations.clock = lambda: clock() + 25 * 3600
            report = await process(runtime, rows(fake, [(A, "merhaba")]))
            record = await runtime.store.conversation_of(A)
            assert runtime.dispatcher.tally is not None
    assert report.done == 1
    assert texts_to(fake, A) == [ASK1, "Merhaba!"]  # the rule `hello`, not an answer
    assert record is not None and record.answers == {}
    assert record.final_status(runtime.dispatcher.conversations.by_id["nps-2026"],
                               clock() + 25 * 3600) == "expired"


async def test_a_short_code_cannot_start_one(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    with FakeIletiMerkezi() as fake:
        async with pipeline(rules, fake=fake) as runtime:
            report = await process(runtime, rows(fake, [("7889", "ANKET")]))
            letters = await runtime.store.dead_letters()
            assert await runtime.store.conversation_of("7889") is None
    assert report.dead == 1 and "not a mobile number" in letters[0].error
    assert fake.sent == []


async def test_an_opt_out_without_a_conversation_runs_as_usual(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    with FakeIletiMerkezi() as fake:
        async with pipeline(rules, fake=fake) as runtime:
            await process(runtime, rows(fake, [(A, "RET"), (B, "ANKET"), (B, "5")]))
            assert await runtime.store.conversation_of(A) is None
            record = await runtime.store.conversation_of(B)
    assert texts_to(fake, A) == ["Listeden cikarildiniz."] and A in fake.blacklist
    assert record is not None and record.answers == {"score": "5"} and record.status == "open"


async def test_a_reload_without_the_conversation_routes_by_the_rules(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    with FakeIletiMerkezi() as fake:
        async with pipeline(rules, fake=fake) as runtime:
            await process(runtime, rows(fake, [(A, "ANKET")]))
            text = rules.read_text(encoding="utf-8")
            (tmp_path / "new").mkdir()
            plain = write_rules(tmp_path / "new", text[:text.index("conversations:")])
            runtime.dispatcher.use_router(Router(load_rules(plain)))
            assert runtime.dispatcher.conversations is None
            await process(runtime, rows(fake, [(A, "merhaba")]))
    assert texts_to(fake, A) == [ASK1, "Merhaba!"]
