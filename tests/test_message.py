from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrouter import message as message_module
from keyrouter.message import (
    TURKEY,
    RowError,
    canonical_receiver,
    mask_number,
    parse_date,
    parse_row,
    to_e164,
)


@pytest.mark.parametrize(
    "number",
    ["5354104818", "05354104818", "905354104818", "+905354104818", "+90 535 410 48 18",
     "0535-410-4818", "00905354104818", 905354104818, 5354104818],
)
def test_turkish_mobiles_become_e164(number) -> None:
    assert to_e164(number) == "+905354104818"


@pytest.mark.parametrize(
    "number",
    ["7889", "AHKTEST", "02125551234", "+902125551234", "+15551234567", "535410481", "",
     None, True, 9053541048.18, "4354104818"],
)
def test_anything_else_is_none(number) -> None:
    assert to_e164(number) is None


def test_masking() -> None:
    assert mask_number("905354104818") == "+90535***4818"
    assert mask_number("7889") == "7889"
    assert mask_number("AHKTEST") == "AH***ST"
    assert mask_number(None) == ""


def test_receivers_have_one_spelling() -> None:
    for spelling in ["+908501234567", "908501234567", "08501234567", "8501234567", "0850 123 45 67"]:
        assert canonical_receiver(spelling) == "+908501234567"
    assert canonical_receiver("7889") == "7889"
    assert canonical_receiver(7889) == "7889"
    assert canonical_receiver(" AHKTEST ") == "AHKTEST"


def test_a_provider_row_becomes_a_message() -> None:
    row = {"id": "5", "date": "2026-04-09 11:18:44", "sender": "+905354104818",
           "number": "+908501234567", "text": "ILT AHKTEST RET"}
    m = parse_row(row, normalize=str.lower)
    assert m.id == "5"
    assert m.received_at == datetime(2026, 4, 9, 8, 18, 44, tzinfo=TURKEY) + timedelta(hours=3)
    assert m.received_at.utcoffset() == timedelta(hours=3)
    assert (m.sender, m.sender_e164, m.receiver) == ("+905354104818", "+905354104818", "+908501234567")
    assert (m.text, m.normalized) == ("ILT AHKTEST RET", "ilt ahktest ret")


def test_numbers_nulls_and_missing_fields_are_tolerated() -> None:
    now = datetime(2026, 1, 1, tzinfo=TURKEY)
    m = parse_row({"id": 12, "sender": 905354104818, "number": None, "text": None, "date": None},
                  now=lambda: now)
    assert (m.id, m.sender, m.sender_e164, m.receiver, m.text, m.received_at) == (
        "12", "905354104818", "+905354104818", "", "", now)
    assert parse_row({"id": 7.0}).id == "7"


@pytest.mark.parametrize("row", ["junk", None, [1], 42])
def test_rows_that_are_not_objects_raise(row) -> None:  # id-less rows: tests/test_idless_rows.py
    with pytest.raises(RowError):
        parse_row(row)  # type: ignore[arg-type]


def test_dates() -> None:
    assert parse_date("2026-04-09T11:18:44+00:00").utcoffset() == timedelta(0)
    assert parse_date("2026-04-09 11:18").tzinfo is TURKEY
    assert parse_date("yesterday") is None
    assert parse_date(0).year == 1970


def test_repr_hides_personal_data() -> None:
    m = parse_row({"id": "1", "sender": "05354104818", "text": "secret words"})
    assert "4104818" not in repr(m).replace("***4818", "") and "secret" not in repr(m)


@given(st.text(alphabet="0123456789٣²５ -", min_size=9, max_size=9))
def test_numbers_already_in_e164_form_read_as_the_full_parse_reads_them(rest: str) -> None:
    number = "+905" + rest
    assert to_e164(number) == to_e164(number + " ")  # 14 characters: the full parse


def test_provider_dates_are_remembered_and_the_memory_is_bounded(monkeypatch) -> None:
    first = parse_date("2026-12-07 09:00:00")
    assert first == datetime(2026, 12, 7, 9, 0, 0, tzinfo=TURKEY)
    assert parse_date(" 2026-12-07 09:00:00 ") is first  # read once, then remembered
    assert parse_date("2026-13-07 09:00:00") is None  # not a date: never remembered
    assert "2026-13-07 09:00:00" not in message_module._PROVIDER_DATES
    monkeypatch.setattr(message_module, "_DATES_KEPT", 3)
    for second in range(10):
        assert parse_date(f"2026-12-07 09:00:{second:02d}").second == second
    assert len(message_module._PROVIDER_DATES) <= 3
