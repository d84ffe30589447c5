"""Durations as people write them in rules and settings: `30s`, `15m`, `12h`, `3d`.  Pure."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`30s`, `15m`, `12h` or `3d` -> timedelta; ValueError saying how to write one otherwise."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"'{text}' is not a duration: write a number and a unit, e.g. 30s, 15m, 12h, 3d")
    try:
        return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    except OverflowError:
        raise ValueError(f"'{text}' is too long a duration") from None


def interval_seconds(text: str) -> float:
    """Seconds ("3600", "1.5") or a duration ("1h", "30m") -> seconds above zero; ValueError."""
    text = str(text).strip()
    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else \
            parse_duration(text).total_seconds()
    except ValueError as exc:
        raise ValueError(f"give seconds or a duration such as 1h or 30m ({exc})") from None
    if seconds <= 0:
        raise ValueError("must be more than zero")
    return seconds


def parse_timeout(value: object) -> float:
    """A handler time limit: a duration (`30s`, `2m`) or a number of seconds (`1.5`), above 0."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: write e.g. 30s, 2m or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        try:
            seconds = float(str(value).strip())
        except ValueError:
            seconds = parse_duration(str(value)).total_seconds()
    if not 0 < seconds < float("inf"):
        raise ValueError(f"'{value}' must be more than 0 seconds")
    return seconds
