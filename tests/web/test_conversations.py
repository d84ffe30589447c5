"""The Surveys page draws each conversation's choice questions and its completion funnel."""

from __future__ import annotations

import asyncio
import html
import re
import time
from pathlib import Path

from starlette.testclient import TestClient

from keyrouter.conversations.steps import COMPLETED, OPEN, OPTED_OUT, Record
from keyrouter.store.memory import MemoryStore
from keyrouter.web.app import create_app
from keyrouter.web.pages import RulesInfo

RULES = """\
version: 1
rules:
  - {name: optout, keywords: [RET], priority: high, handlers: [blacklist]}
conversations:
  nps:
    start: [PUAN]
    questions:
      - {id: score, ask: "1-5?", choices: ["1", "2", "3", "4", "5"]}
      - {id: reason, ask: "Neden?", text: true}
      - {id: callback, ask: "Arayalim mi?", choices: [EVET, "<b>HAYIR</b>"]}
"""


def test_the_surveys_page_draws_a_conversation(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    store = MemoryStore("web-conv")
    now = time.time()

    async def seed() -> None:
        for i, (status, answers) in enumerate([
            (COMPLETED, {"score": "5", "reason": "iyi", "callback": "EVET"}),
            (COMPLETED, {"score": "5", "reason": "<script>", "callback": "<b>HAYIR</b>"}),
            (OPTED_OUT, {"score": "2"}),
            (OPEN, {}),
        ]):
            last = now - 90000 if status == OPEN else now  # the open one has expired
            record = Record("nps", f"+9053200000{i:02d}", status, len(answers), f"m{i}", last,
                            last, answers=answers)
            assert await store.save_conversation(record, None)

    asyncio.run(seed())
    app = create_app(lambda: store, RulesInfo.load(str(path), now))
    with TestClient(app) as client:
        r = client.get("/surveys")
    assert r.status_code == 200
    section = r.text.split('data-conversation="nps"')[1].split("</section>")[0]
    score = section.split('data-question="score"')[1].split("</figure>")[0]
    bars = re.findall(r'data-choice="([^"]+)" data-votes="(\d+)"', score)
    assert bars == [("1", "0"), ("2", "1"), ("3", "0"), ("4", "0"), ("5", "2")]
    callback = section.split('data-question="callback"')[1].split("</figure>")[0]
    assert html.escape("<b>HAYIR</b>") in callback and "<b>HAYIR</b>" not in callback
    assert '<td class="free-text">2</td>' in section and "<script>" not in r.text
    funnel = section.split('class="funnel"')[1]
    assert re.findall(r'data-choice="([^"]+)" data-votes="(\d+)"', funnel) == [
        ("started", "4"), ("completed", "2"), ("expired", "1"), ("incomplete", "0"),
        ("opted out", "1")]
