"""Every time a person or İYS reads, formatted in one place: Turkey time (UTC+03:00).

Four forms: `iso` for files and JSON (`2026-11-26T09:47:53+03:00`, as the provider's dates),
`display` for the dashboard (`2026-11-26 09:47:53 +03:00`), `iys` for İYS's consentDate
(`2026-11-26 09:47:53`, Turkey time without an offset, as İYS wants it) and `minute` for lines
read at a glance (`2026-11-26 09:47`).
"""

from __future__ import annotations

from datetime import datetime

from keyrouter.message import TURKEY


def iso(epoch: float | None) -> str:
    """Epoch seconds -> ISO 8601 in Turkey time with its offset; "" for None."""
    return "" if epoch is None else datetime.fromtimestamp(epoch, TURKEY).isoformat(timespec="seconds")


def display(epoch: float | None) -> str:
    """Epoch seconds -> `2026-11-27 21:35:01 +03:00`; "" for None."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, TURKEY).strftime("%Y-%m-%d %H:%M:%S %z").replace(
        "+0300", "+03:00")


def iys(moment: datetime | float) -> str:
    """A moment (aware datetime or epoch seconds) as İYS's consentDate: Turkey time, no offset."""
    when = moment if isinstance(moment, datetime) else datetime.fromtimestamp(moment, TURKEY)
    return when.astimezone(TURKEY).strftime("%Y-%m-%d %H:%M:%S")


def minute(epoch: float) -> str:
    """Epoch seconds -> `2026-11-26 09:47`: Turkey time to the minute, no offset."""
    return datetime.fromtimestamp(epoch, TURKEY).strftime("%Y-%m-%d %H:%M")
