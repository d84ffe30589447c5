"""Deadline arithmetic: properties against a plain day-by-day count, and the 2026/2027 calendar
(holiday dates read from the `holidays` package, never written here)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrouter.compliance.deadlines import business_hours_left, business_seconds, deadline, is_business_day
from keyrouter.message import TURKEY

CALENDAR = holidays.country_holidays("TR", years=range(2024, 2031))
HALF_DAYS = holidays.country_holidays("TR", years=range(2024, 2031), categories=("half_day",))
DAY = timedelta(days=1)


def plain_business_days(first: date, last: date) -> int:
    """Business days in [first, last], one day at a time."""
    n, day = 0, first
    while day <= last:
        if day.weekday() not in (5, 6) and day not in CALENDAR:
            n += 1
        day += DAY
    return n


moments = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2029, 12, 1),
                       timezones=st.just(UTC))


@settings(max_examples=300)
@given(moments)
def test_deadline_is_the_end_of_the_third_business_day_counted_plainly(received: datetime) -> None:
    due = deadline(received)
    assert due.tzinfo is not None and due.time() == time(0)
    last_day = due.date() - DAY
    received_day = received.astimezone(TURKEY).date()
    assert plain_business_days(received_day + DAY, last_day) == 3
    assert plain_business_days(last_day, last_day) == 1  # the deadline's day itself is worked
    assert 3 * 86400 < (due - received).total_seconds() < 15 * 86400


@settings(max_examples=200)
@given(moments, st.integers(min_value=0, max_value=10 * 86400))
def test_deadline_never_moves_earlier_for_a_later_refusal(received: datetime, later: int) -> None:
    assert deadline(received + timedelta(seconds=later)) >= deadline(received)


@settings(max_examples=200)
@given(moments)
def test_the_three_days_are_72_business_hours_after_the_day_of_receipt(received: datetime) -> None:
    next_day = datetime.combine(received.astimezone(TURKEY).date() + DAY, time(0), TURKEY)
    assert business_seconds(next_day, deadline(received)) == 3 * 86400
    assert business_hours_left(deadline(received), next_day) == 72
    assert business_hours_left(next_day, deadline(received)) == -72


def at(day: date, hour: int = 10) -> datetime:
    return datetime.combine(day, time(hour), TURKEY)


def first_day(name: str, year: int) -> date:
    return min(d for d, n in CALENDAR.items() if d.year == year and name in n)


def test_a_weekend_is_skipped() -> None:
    thursday = date(2026, 11, 5)
    assert thursday.weekday() == 3 and plain_business_days(thursday, thursday + 6 * DAY) == 5
    # Fri, (Sat, Sun), Mon, Tue: due before Wednesday.
    assert deadline(at(thursday, 23)) == datetime(2026, 11, 11, tzinfo=TURKEY)
    assert deadline(datetime(2026, 11, 5, 20, 59, tzinfo=UTC)) == datetime(2026, 11, 11, tzinfo=TURKEY)
    # 21:00 UTC on Thursday is already Friday in Turkey: one day later.
    assert deadline(datetime(2026, 11, 5, 21, 0, tzinfo=UTC)) == datetime(2026, 11, 12, tzinfo=TURKEY)


@pytest.mark.parametrize("year", [2026, 2027])
def test_a_national_holiday_is_skipped(year: int) -> None:
    republic = first_day("Republic Day", year)
    assert not is_business_day(republic)
    received = republic - 2 * DAY
    while not is_business_day(received) or not is_business_day(received + DAY):
        received -= DAY
    expected, day, counted = received, received, 0
    while counted < 3:
        day += DAY
        if day.weekday() < 5 and day not in CALENDAR:
            counted += 1
    expected = day + DAY
    due = deadline(at(received))
    assert due == datetime.combine(expected, time(0), TURKEY)
    assert due.date() > republic  # the holiday pushed it past
    assert (due.date() - received).days >= 5


@pytest.mark.parametrize("year", [2026, 2027])
@pytest.mark.parametrize("feast", ["Eid al-Adha", "Eid al-Fitr"])
def test_a_multi_day_religious_holiday_is_skipped(year: int, feast: str) -> None:
    days = sorted(d for d, n in CALENDAR.items() if d.year == year and feast in n)
    assert len(days) >= 3 and days[-1] - days[0] == (len(days) - 1) * DAY  # consecutive
    eve = days[0] - DAY
    assert eve in HALF_DAYS  # the half day counts as a business day unless it is a weekend
    assert is_business_day(eve) == (eve.weekday() < 5)
    due = deadline(at(eve, 15))  # received on the eve, after the 13:00 close
    after = days[-1] + DAY
    worked = [d for d in (after + i * DAY for i in range(10)) if is_business_day(d)][:3]
    assert due == datetime.combine(worked[-1] + DAY, time(0), TURKEY)
    eve_left = 3600 if is_business_day(eve) else 0
    assert business_seconds(at(eve, 23), due) == pytest.approx(3 * 86400 + eve_left)


def test_the_eve_is_counted_as_a_whole_business_day() -> None:
    eve = first_day("Eid al-Adha", 2026) - DAY
    before = eve - DAY
    assert is_business_day(before)
    due = deadline(at(before))
    # eve (1) then the holiday and the weekend, then two more working days
    worked = [eve, *[d for d in (eve + i * DAY for i in range(1, 15)) if is_business_day(d)][:2]]
    assert due == datetime.combine(worked[-1] + DAY, time(0), TURKEY)


def test_business_hours_left_ignore_weekends() -> None:
    friday_evening = datetime(2026, 11, 6, 20, tzinfo=TURKEY)
    monday_noon = datetime(2026, 11, 9, 12, tzinfo=TURKEY)
    assert business_hours_left(monday_noon, friday_evening) == pytest.approx(4 + 12)
    assert business_hours_left(friday_evening, monday_noon) == pytest.approx(-16)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        deadline(datetime(2026, 1, 1))
