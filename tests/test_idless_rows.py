"""Rows without an id: never dropped, given a stable id from their content, so a
row seen twice, in one poll or in two, is dispatched once."""

from __future__ import annotations

import re

import pytest
import recording

from keyrouter.cli import main
from keyrouter.message import RowError, content_id, parse_row
from keyrouter.testing import FakeIletiMerkezi

ROW = {"date": "2026-03-01 10:00:00", "sender": "+905551112233", "number": "+908505550000",
       "text": "RET"}


@pytest.mark.parametrize("missing", [{}, {"id": None}, {"id": ""}, {"id": "  "}, {"id": [1]},
                                     {"id": {"a": 1}}, {"id": True}])
def test_a_row_without_a_usable_id_gets_one_from_its_content(missing) -> None:
    message = parse_row({**ROW, **missing})
    assert re.fullmatch(r"h-[0-9a-f]{32}", message.id)
    assert message.id == content_id(ROW) == parse_row(dict(ROW)).id  # same row, same id
    assert (message.text, message.sender_e164) == ("RET", "+905551112233")


def test_the_id_changes_with_any_field_and_survives_type_drift() -> None:
    ids = {content_id({**ROW, field: "other"}) for field in ("date", "sender", "number", "text")}
    assert len(ids | {content_id(ROW)}) == 5
    assert content_id({**ROW, "sender": 905551112233}) == content_id({**ROW, "sender": "905551112233"})
    assert content_id({"text": "a\ud83d"}) != content_id({"text": "a"})  # half an emoji is kept
    with pytest.raises(RowError):
        parse_row("not an object")  # type: ignore[arg-type]


def test_an_idless_row_is_dispatched_once_within_a_poll_and_across_polls(
        write_rules, tmp_path, monkeypatch) -> None:
    recording.CALLS.clear()
    rules = write_rules("""
        version: 1
        rules:
          - {name: optout, keywords: [RET], handlers: [recording:record, blacklist]}
        default: {handlers: [recording:record]}
    """)
    idless = dict(ROW, date="2026-11-27 10:00:00")
    with FakeIletiMerkezi() as fake:
        fake.add_message("merhaba", sender="+905559998877")
        with fake.lock:  # the same id-less row twice in one answer, then in every answer
            fake.inbox += [dict(idless, id=None), dict(idless)]
        monkeypatch.setenv("ILETIMERKEZI_BASE_URL", fake.base_url)
        monkeypatch.setenv("ILETIMERKEZI_API_KEY", fake.key)
        monkeypatch.setenv("ILETIMERKEZI_API_HASH", fake.hash)
        store = f"sqlite:///{tmp_path / 'state.sqlite3'}"
        for _ in range(2):
            assert main(["run", "--once", "--rules", str(rules), "--store", store]) == 0
        assert fake.blacklist == {"+905551112233"}
    calls = sorted((c["rule"], c["id"]) for c in recording.CALLS)
    assert calls == [("default", "1"), ("optout", content_id(idless))]
    recording.CALLS.clear()
