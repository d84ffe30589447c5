"""One masking function (keyrouter/masking.py) for every written form of a Turkish mobile number,
and every place that shows numbers to people uses it: logs, dashboard pages and CSVs, CLI
listings (a plugin's error quoting a number in `dead-letters list`)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from keyrouter import masking, message
from keyrouter.cli import main
from keyrouter.ops import logs
from keyrouter.store.sqlite import SqliteStore
from keyrouter.web import pages

MASKED = "+90532***2233"
FORMS = [
    "+905321112233", "905321112233", "05321112233", "5321112233", "00905321112233",
    "0532 111 22 33", "0532-111-22-33", "0532.111.22.33", "532 111 2233", "532-1112233",
    "(0532) 111 22 33", "(532) 111-22-33", "+90 (532) 111 22 33", "+90-532-111-22-33",
    "+90 532 111 2233", "90 532 111 22 33", "0 532 111 22 33", "+90.532.111.22.33",
    "5321112233.0", "905321112233.0",
]


@pytest.mark.parametrize("form", FORMS)
def test_every_written_form_is_masked_alone_and_in_free_text(form: str) -> None:
    assert masking.mask_number(form) == MASKED
    assert masking.mobile_e164(form) == "+905321112233"
    text = f"reply: provider refused {form}; try again"
    assert masking.mask_text(text) == f"reply: provider refused {MASKED}; try again"
    assert "1112233" not in masking.mask_text(text) and "111 22 33" not in masking.mask_text(text)


def test_numbers_stored_as_numbers_are_masked() -> None:
    assert masking.mask_number(5321112233.0) == MASKED
    assert masking.mask_number(905321112233) == MASKED
    row = {"id": "5321112233", "sender": 5321112233.0, "number": 905321112233,
           "text": "beni 0532-111-22-33 ten ara", "date": "2026-11-27 09:15:00",
           "keyrouter_first_seen": 1796607742.25, "nested": [{"n": "0532.111.22.33"}]}
    assert masking.mask_value(row) == {
        "id": "5321112233", "sender": MASKED, "number": MASKED,
        "text": f"beni {MASKED} ten ara", "date": "2026-11-27 09:15:00",
        "keyrouter_first_seen": 1796607742.25, "nested": [{"n": MASKED}]}


@pytest.mark.parametrize("text", [
    "id 15321112233 done", "order 1005321112233", "2026-11-27 09:15:00", "short code 7889",
    "RET 123456", "tx 53211122334", "no digits at all",
])
def test_what_is_not_a_mobile_number_is_left_alone(text: str) -> None:
    assert masking.mask_text(text) == text


def test_short_codes_and_names_keep_only_their_ends() -> None:
    assert masking.mask_number("7889") == "7889"
    assert masking.mask_number("ACME SA") == "AC***SA"
    assert masking.mask_number(None) == ""


def test_every_caller_uses_the_one_function() -> None:
    assert message.mask_number is masking.mask_number
    assert logs.mask_text is masking.mask_text
    assert pages.mask_text is masking.mask_text and pages.mask_value is masking.mask_value
    assert pages.mask_number is masking.mask_number


def test_log_lines_mask_every_form(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("keyrouter.plugin", logging.INFO, __file__, 1,
                               "called %s and %s", ("0532.111.22.33", "(0532) 111 22 33"), None)
    logs.MaskNumbers().filter(record)
    assert record.getMessage() == f"called {MASKED} and {MASKED}"
    document = json.loads(logs.JsonFormatter().format(record))
    assert document["message"] == f"called {MASKED} and {MASKED}"


def test_dead_letters_list_masks_a_plugin_error_quoting_a_number(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.sqlite3"

    async def seed() -> None:
        async with SqliteStore(path) as store:
            row = {"id": "41", "sender": "05321112233", "text": "RET"}
            await store.dead_letter("41", "w", "PermanentError: crm: no customer 0532-111-22-33 "
                                    "(also tried 5321112233.0)", rule="optout", row=row, now=1.0)

    asyncio.run(seed())
    store = f"sqlite:///{path}"
    assert main(["dead-letters", "list", "--store", store]) == 0
    out = capsys.readouterr().out
    assert f"no customer {MASKED} (also tried {MASKED})" in out and "111-22-33" not in out
    assert main(["dead-letters", "list", "--json", "--store", store]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["error"] == f"PermanentError: crm: no customer {MASKED} (also tried {MASKED})"


def test_dashboard_dead_letter_row_and_detail_mask_every_form() -> None:
    letter = pages.DeadLetter("41", "crm: no customer 0532 111 22 33", 1, 1.0, "optout",
                              {"id": "41", "sender": 5321112233.0, "text": "(0532) 111 22 33"})
    row = pages.dead_row(letter)
    assert row.error == f"crm: no customer {MASKED}"
    detail = pages.raw_row_text(letter)
    assert "111" not in detail.replace(MASKED, "") and detail.count(MASKED) == 2
