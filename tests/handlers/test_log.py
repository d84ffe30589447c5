"""`log`: one JSON line, the number masked, no text unless asked."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from keyrouter.handlers.log import handle, params_problem
from keyrouter.retries import PermanentError

from .support import NUMBER, match

pytestmark = pytest.mark.anyio

TEXT = 'Ret lütfen "hemen"\nsahte satır\u2028ikinci'


async def logged(caplog, message, m, context) -> tuple[str, dict]:
    caplog.clear()
    with caplog.at_level(logging.INFO, "test"):
        await handle(message, m, context)
    [record] = caplog.records
    assert (record.name, record.levelno) == ("test", logging.INFO)
    line = record.getMessage()
    assert line.startswith("inbound sms ")
    return line, json.loads(line.removeprefix("inbound sms "))


async def test_the_line_has_the_routing_facts_and_a_masked_sender(caplog, make_message, make_context) -> None:
    message = make_message(TEXT, id="42")
    line, fields = await logged(caplog, message, match("optout", "RET", choice="a"), make_context())
    assert fields == {
        "id": "42",
        "rule": "optout",
        "matched": True,
        "keyword": "RET",
        "captures": {"choice": "a"},
        "fuzzy": False,
        "sender": "+90535***4818",
        "receiver": "7889",
        "received_at": message.received_at.isoformat(),
    }
    for leak in (NUMBER, "5354104818", "Ret", "hemen", "lütfen"):
        assert leak not in line
    assert "\n" not in line and "\u2028" not in line


async def test_include_text_adds_the_text_on_one_line(caplog, make_message, make_context) -> None:
    line, fields = await logged(caplog, make_message(TEXT), None, make_context({"include_text": True}))
    assert fields["text"] == TEXT
    assert "\n" not in line and "\u2028" not in line
    assert NUMBER not in line


async def test_no_match_logs_the_default_rule(caplog, make_message, make_context) -> None:
    _, fields = await logged(caplog, make_message("merhaba"), None, make_context(rule="default"))
    assert (fields["rule"], fields["matched"], fields["keyword"], fields["captures"]) == (
        "default",
        False,
        None,
        {},
    )


async def test_free_text_and_numbers_in_captures_stay_out(caplog, make_message, make_context) -> None:
    m = match("fwd", "BILGI", rest="adresim şu", phone="05354104818")
    line, fields = await logged(caplog, make_message("BILGI adresim şu"), m, make_context())
    assert fields["captures"] == {"phone": "+90535***4818"}
    assert "adresim" not in line and "5354104818" not in line
    _, fields = await logged(caplog, make_message("x"), m, make_context({"include_text": True}))
    assert fields["captures"]["rest"] == "adresim şu"


async def test_fuzzy_matches_are_marked(caplog, make_message, make_context) -> None:
    m = dataclasses.replace(match(), fuzzy=True)
    _, fields = await logged(caplog, make_message("IPTL"), m, make_context())
    assert fields["fuzzy"] is True


async def test_short_codes_and_names_are_masked_too(caplog, make_message, make_context) -> None:
    _, fields = await logged(caplog, make_message(sender="ACMEBANK"), None, make_context())
    assert fields["sender"] == "AC***NK"


async def test_bad_params(make_message, make_context) -> None:
    assert params_problem({"include_text": True}) is None
    assert "true or false" in (params_problem({"include_text": "yes"}) or "")
    with pytest.raises(PermanentError, match="unknown param"):
        await handle(make_message(), None, make_context({"level": "debug"}))
