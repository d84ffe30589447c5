"""The dispatcher's memory of routes (dispatch/routing.py): a repeated text is routed once per set
of rules, every message still gets its own Route and Match, a reload forgets, long texts and
provider rows are routed each time, and the memory is bounded."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import recording

from keyrouter.compliance.channels import provider_row
from keyrouter.dispatch import Dispatcher
from keyrouter.dispatch import routing as routing_module
from keyrouter.message import TURKEY, Message, parse_row
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Route, Router
from keyrouter.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

RULES = """
version: 1
rules:
  - {name: survey, pattern: 'anket (?P<choice>[ab])', handlers: [recording:record]}
  - {name: optout, keywords: [RET], handlers: [recording:record]}
default:
  handlers: [recording:record]
"""


class CountingRouter(Router):
    """A router that counts the texts it was asked to route."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.routed: list[str] = []

    def route(self, text: str, receiver: str | None = None) -> Route:
        self.routed.append(text)
        return super().route(text, receiver)


def msg(id: str, text: str, receiver: str = "+908505550000") -> Message:
    when = (datetime.now(TURKEY) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    return parse_row({"id": id, "text": text, "sender": f"+9055500{int(id):05d}",
                      "number": receiver, "date": when})


@pytest.fixture
def router(write_rules: Callable[[str], Any]) -> CountingRouter:
    return CountingRouter(load_rules(write_rules(RULES)))


async def test_a_repeated_text_is_routed_once_and_each_message_has_its_own_match(router) -> None:
    dispatcher = Dispatcher(router, MemoryStore())
    report = await dispatcher.process([msg(str(i), "ANKET A" if i % 2 else "ret")
                                       for i in range(40)])
    assert report.done == 40
    assert sorted(router.routed) == ["ANKET A", "ret"]  # 40 messages, two distinct texts
    matches = [c["match"] for c in recording.CALLS]
    assert len({id(m) for m in matches}) == 40  # never one object shared by two messages
    surveys = [m for m in matches if m.rule == "survey"]
    assert len(surveys) == 20 and all(m.captures == {"choice": "a"} for m in surveys)
    surveys[0].captures["choice"] = "changed by a handler"
    assert surveys[1].captures == {"choice": "a"}
    assert {c["normalized"] for c in recording.CALLS} == {"anket a", "ret"}


async def test_the_receiver_is_part_of_what_is_remembered(router) -> None:
    dispatcher = Dispatcher(router, MemoryStore())
    await dispatcher.process([msg("1", "ret", "+908505550000"), msg("2", "ret", "3333"),
                              msg("3", "ret", "3333")])
    assert router.routed == ["ret", "ret"]


async def test_a_reload_forgets_the_routes_of_the_old_rules(router, write_rules) -> None:
    dispatcher = Dispatcher(router, MemoryStore())
    await dispatcher.process([msg("1", "ret")])
    new = CountingRouter(load_rules(write_rules(RULES.replace("[RET]", "[DUR]"))))
    dispatcher.use_router(new)
    await dispatcher.process([msg("2", "ret"), msg("3", "dur")])
    assert new.routed == ["ret", "dur"]
    assert [c["rule"] for c in recording.CALLS] == ["optout", "default", "optout"]


async def test_long_texts_and_provider_rows_are_routed_each_time(router) -> None:
    long_text = "bilgi " * 20  # beyond REMEMBERED_TEXT
    assert len(long_text) > routing_module.REMEMBERED_TEXT
    dispatcher = Dispatcher(router, MemoryStore())
    await dispatcher.process([msg("1", long_text), msg("2", long_text)])
    assert router.routed == [long_text, long_text]
    _, row = provider_row("+905551112233", None, "2026-12-07 10:00:00", None)
    provider = parse_row(json.loads(row))
    assert [e.name for e in dispatcher.route(provider).handlers] == [
        "keyrouter.handlers.provider_optout:blacklist"]  # its fixed route, not the rules
    assert len(router.routed) == 2


async def test_the_memory_is_bounded(router, monkeypatch) -> None:
    monkeypatch.setattr(routing_module, "ROUTES_KEPT", 5)
    dispatcher = Dispatcher(router, MemoryStore())
    await dispatcher.process([msg(str(i), f"text {i}") for i in range(12)])
    assert len(dispatcher.routing._routes) <= 5
    await dispatcher.process([msg("100", "text 11")])  # among the kept ones: not routed again
    assert router.routed.count("text 11") == 1
