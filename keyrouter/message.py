"""Provider rows -> `Message`; Turkish mobile numbers -> E.164.

The provider's rows drift: any field may be a string, a number, null or missing.  Parsing never
raises for a row that is an object; everything else is made as usable as it can be, and a row
without an id gets one derived from its content (`content_id`), so no opt-out is dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from keyrouter.masking import mask_number

TURKEY = timezone(timedelta(hours=3), "+03:00")
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
#: "%Y-%m-%d %H:%M:%S" with two-digit fields, as the provider writes it (strptime's \d, too);
#: İYS's consentDate has the same form.
PROVIDER_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)")
#: The provider's date texts read lately and what they are (a burst's messages share their
#: seconds; a datetime is immutable): at most _DATES_KEPT, then the memory starts afresh.
_PROVIDER_DATES: dict[str, datetime] = {}
_DATES_KEPT = 4096
_NON_DIGITS = re.compile(r"[\s\-()]")
_TR_MOBILE = re.compile(r"(?:\+?90|0)?(5\d{9})")
#: The key a row without a provider date carries its first-seen time in (epoch seconds), added
#: the first time it is parsed and kept with the row in the store (published rows, dead letters).
FIRST_SEEN = "keyrouter_first_seen"
#: The row fields that make a message what it is (the id aside).
CONTENT_FIELDS = ("date", "sender", "number", "text")


class RowError(ValueError):
    """A provider row that cannot be tracked (not an object)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One inbound SMS, as handlers see it."""

    id: str
    received_at: datetime
    sender: str
    sender_e164: str | None
    receiver: str
    text: str
    normalized: str = ""
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: False when the row had no usable date and `received_at` is the time it was first seen
    #: (kept once, with the row: `FIRST_SEEN`): such a message is never aged out by a horizon
    #: (its done marker is kept for good), and it is ordered by its id (keyrouter/ordering.py).
    date_known: bool = True

    def __repr__(self) -> str:  # keeps personal data (number, text) out of reprs and tracebacks
        when = self.received_at.isoformat()
        return f"Message(id={self.id!r}, received_at={when}, sender={mask_number(self.sender)!r})"


def to_e164(number: object) -> str | None:
    """`5XXXXXXXXX`, `05XX…`, `905XX…`, `+905XX…` (spaces, dashes allowed) -> `+905XXXXXXXXX`."""
    if type(number) is str and len(number) == 13 and number.startswith("+905") \
            and number.isascii() and number[1:].isdigit():
        return number  # already in the form (the provider's usual one): what the rest would give
    if number is None or isinstance(number, bool):
        return None
    raw = _NON_DIGITS.sub("", _text(number))
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    m = _TR_MOBILE.fullmatch(raw)
    return f"+90{m.group(1)}" if m else None


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_date(value: object) -> datetime | None:
    """Provider dates are Turkey local time without an offset; accept ISO with an offset too."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).astimezone(TURKEY)
        except (ValueError, OverflowError, OSError):  # nan, 1e20, 20260301120000: not a time
            return None
    text = str(value).strip()
    known = _PROVIDER_DATES.get(text)
    if known is not None:
        return known
    fixed = PROVIDER_DATE.fullmatch(text)
    if fixed is not None:  # the provider's own form: what the first format reads, without strptime
        try:
            year, month, day, hour, minute, second = map(int, fixed.groups())
            parsed = datetime(year, month, day, hour, minute, second, tzinfo=TURKEY)
        except ValueError:  # month 13 and the like: the formats below decide, as always
            pass
        else:
            if len(_PROVIDER_DATES) >= _DATES_KEPT:
                _PROVIDER_DATES.clear()
            _PROVIDER_DATES[text] = parsed
            return parsed
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=TURKEY)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=TURKEY)


def parse_row(
    row: Mapping[str, Any],
    normalize: Callable[[str], str] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(TURKEY),
) -> Message:
    """Build a Message from one get-inbox row.  Raises RowError only for a row that is not an
    object; a missing, null or empty id is replaced by `content_id(row)`.

    A missing or unreadable date becomes the time the row was first seen, so the message is still
    processed (and `max_age` treats it as new), rather than being dropped: the row's `FIRST_SEEN`
    when an earlier parse stamped it, else now, stamped into the message's copy of the row (the
    store keeps that copy, so the time is decided once: docs/ordering-and-masking.md).
    """
    if type(row) is not dict and not isinstance(row, Mapping):  # a dict: no ABC check
        raise RowError(f"row is {type(row).__name__}, not an object")
    msg_id = row_id(row)
    sender = row_sender(row)
    text = _text(row.get("text"))
    received = parse_date(row.get("date"))
    kept = dict(row)
    when = received
    if when is None:
        when = _first_seen(kept.get(FIRST_SEEN))
        if when is None:
            when = now()
            kept[FIRST_SEEN] = when.timestamp()
    # positional (the fields' order): keywords cost a third more, for every row of every poll
    return Message(msg_id, when, sender, to_e164(sender), _text(row.get("number")).strip(), text,
                   normalize(text) if normalize else "", kept, received is not None)


def row_id(row: Mapping[str, Any]) -> str:
    """The id a row's message gets: its `id` as text, or `content_id(row)` when that is missing,
    null, empty or not a scalar."""
    raw_id = row.get("id")
    if type(raw_id) is str:
        msg_id = raw_id.strip()
    else:
        msg_id = _text(raw_id).strip() if not isinstance(raw_id, dict | list | bool) else ""
    return msg_id or content_id(row)


def row_sender(row: Mapping[str, Any]) -> str:
    """The sender a row's message gets (`Message.sender`; `to_e164` of it is `sender_e164`)."""
    return _text(row.get("sender")).strip()


def _first_seen(value: object) -> datetime | None:
    """A stamped first-seen time (epoch seconds), or None when absent or unusable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).astimezone(TURKEY)
        except (ValueError, OverflowError, OSError):
            return None
    return None


def content_id(row: Mapping[str, Any]) -> str:
    """The id of a row that came without one: `h-` and 32 hex digits of the SHA-256 of its date,
    sender, number and text (as text, in canonical JSON).  The same row polled again gets the
    same id, so it is dispatched once; two rows that differ in any of these get different ids."""
    return "h-" + content_hash([_text(row.get(key)) for key in CONTENT_FIELDS])[:32]


def content_hash(fields: list[str]) -> str:
    """The SHA-256 (hex) of the content fields as canonical JSON: one spelling, so a row hashes
    the same wherever it is compared."""
    canonical = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def canonical_receiver(number: object) -> str:
    """One spelling per receiving number, so `receivers: ["0850 123 45 67"]` meets `+908501234567`.
    Short codes and alphanumerics stay as they are (trimmed)."""
    raw = _NON_DIGITS.sub("", _text(number))
    digits = raw.lstrip("+")
    if not digits.isdigit():
        return raw
    if raw.startswith("+90") or (digits.startswith("90") and len(digits) == 12):
        return "+" + digits
    if digits.startswith("0") and len(digits) == 11:
        return "+90" + digits[1:]
    if len(digits) == 10 and not digits.startswith("0"):
        return "+90" + digits
    return raw
