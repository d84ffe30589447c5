"""The opt-out deadline: three Turkish business days after a refusal reached us.  Pure.

Law 6563's regulation on commercial electronic communication gives a service provider three
business days ("üç iş günü") from a refusal reaching it to stop messages and to record the refusal
(docs/compliance.md, "Deadlines").  How keyrouter counts, in Turkey time (UTC+03:00, no daylight saving):

- The day the refusal arrives is not counted, whatever the hour (as Turkish law counts periods
  in days); counting starts the next day.
- A business day is Monday to Friday and not an official holiday of the `holidays` package,
  country TR, category "public" (national days and the multi-day religious holidays, whose dates
  move every year).
- The eve of a religious holiday (and of Republic Day) is a half day off from 13:00: it counts as
  a whole business day here.  That is the cautious reading: counting it would only ever move the
  deadline earlier, never later.
- The deadline is the end of the third business day, i.e. 00:00 of the day after it: a refusal
  received on Monday at 23:59 or at 00:01 must be handled before Friday 00:00.

"Business time" (`business_seconds`, `business_hours_left`) counts only the hours of business days,
24 a day, so "5 business hours left" on a Friday evening before a holiday really is five hours of
working days, not a weekend's worth of calendar time.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import cache, lru_cache

import holidays

from keyrouter.message import TURKEY

__all__ = [
    "BUSINESS_DAYS",
    "business_hours_left",
    "business_seconds",
    "deadline",
    "deadline_epoch",
    "is_business_day",
    "turkey_time",
]

BUSINESS_DAYS = 3
_DAY = timedelta(days=1)


@cache
def _calendar() -> holidays.HolidayBase:
    """Turkey's public holidays; the object adds years as they are asked about."""
    return holidays.country_holidays("TR")


def is_business_day(day: date) -> bool:
    """Monday to Friday and not an official holiday in Turkey."""
    return day.weekday() < 5 and day not in _calendar()


def turkey_time(moment: datetime | float) -> datetime:
    """An aware datetime or epoch seconds -> the same moment in Turkey time."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("a naive datetime has no moment: give a timezone")
        return moment.astimezone(TURKEY)
    return datetime.fromtimestamp(moment, TURKEY)


def deadline(received: datetime | float, days: int = BUSINESS_DAYS) -> datetime:
    """00:00 Turkey time of the day after the `days`-th business day after the day `received`
    falls on (see the module doc)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    day = turkey_time(received).date()
    counted = 0
    while counted < days:
        day += _DAY
        if is_business_day(day):
            counted += 1
    return datetime.combine(day + _DAY, time(0), TURKEY)


@lru_cache(maxsize=4096)
def _deadline_of_day(day: date) -> float:
    return deadline(datetime.combine(day, time(12), TURKEY)).timestamp()


def deadline_epoch(received_at: float) -> float:
    """`deadline` in epoch seconds, computed once per Turkey-time day: it depends only on the day
    received, and a ledger export asks for it once per line."""
    return _deadline_of_day(turkey_time(received_at).date())


def business_seconds(start: datetime | float, end: datetime | float) -> float:
    """Seconds of business days between two moments; negative when `end` is before `start`."""
    a, b = turkey_time(start), turkey_time(end)
    if b < a:
        return -business_seconds(b, a)
    total = 0.0
    day = a.date()
    while day <= b.date():
        if is_business_day(day):
            day_start = datetime.combine(day, time(0), TURKEY)
            low, high = max(a, day_start), min(b, day_start + _DAY)
            if high > low:
                total += (high - low).total_seconds()
        day += _DAY
    return total


def business_hours_left(due: datetime | float, now: datetime | float) -> float:
    """Business hours from `now` to `due`; negative once `due` has passed (hours overdue)."""
    return business_seconds(now, due) / 3600
