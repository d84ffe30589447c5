"""The one way phone numbers are masked: logs, dashboard pages, CSVs, exports and CLI listings.

A Turkish mobile number is shown as `+90532***2233` wherever keyrouter writes it for people, in
any of the ways it gets written (docs/ordering-and-masking.md, "Masking"):
- prefixes `+90`, `0090`, `90`, `0` or none, the operator code in parentheses or not
  (`(532)`, `(0532)`);
- digits grouped by spaces, dashes or dots (`0532-111-22-33`, `0532.111.22.33`,
  `+90 532 111 2233`), or not grouped at all;
- a number that went through a spreadsheet or JSON as a float (`5321112233.0`).
`mask_number` takes one value that is a number (a sender field, a ledger number); `mask_text`
finds numbers inside free text (a message body, a plugin's error, a log line); `mask_value`
walks a whole stored row.  Anything else (short codes, names) is kept only at its ends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["mask_number", "mask_text", "mask_value", "mobile_e164"]

_SEP = r"(?:\s*[.\-]?\s*)"  # between digit groups: spaces, one dash or dot, or nothing
_PREFIX = rf"(?:(?:\+\s*|00)?90{_SEP}|0{_SEP})?"
_AREA = r"(?:\(\s*0?\s*5\d\d\s*\)|5\d\d)"
#: A Turkish mobile number in free text, in any usual spelling, not inside a longer digit run
#: (an id), with a float's `.0` tail taken along.
_MOBILE = re.compile(
    rf"(?<![\d*+])(?<!\d[.\-])({_PREFIX}{_AREA}{_SEP}\d{{3}}{_SEP}\d{{2}}{_SEP}\d{{2}})"
    r"(?:\.0+)?(?![\d*])"
)
_NOT_DIGITS = re.compile(r"[\s\-().]")
_TR_MOBILE = re.compile(r"(?:\+?90|0)?(5\d{9})")
_FLOAT_TAIL = re.compile(r"\.0+$")


def mobile_e164(value: object) -> str | None:
    """`+905XXXXXXXXX` when `value` is a Turkish mobile number in any written form (spaces,
    dashes, dots, parentheses, +90/0090/90/0 prefixes, a float), else None."""
    if value is None or isinstance(value, bool):
        return None
    text = _as_text(value).strip()
    text = _NOT_DIGITS.sub("", _FLOAT_TAIL.sub("", text))
    if text.startswith("00"):
        text = "+" + text[2:]
    m = _TR_MOBILE.fullmatch(text)
    return f"+90{m.group(1)}" if m else None


def mask_number(number: object) -> str:
    """`+905354104818`, `0535 410 48 18`, `5354104818.0` -> `+90535***4818`; short codes and
    names are kept only at their ends (`78***89`)."""
    e164 = mobile_e164(number)
    if e164:
        return f"{e164[:6]}***{e164[-4:]}"
    text = "" if number is None else _as_text(number)
    if len(text) <= 4:
        return text
    return f"{text[:2]}***{text[-2:]}"


def mask_text(text: str) -> str:
    """Every Turkish mobile number inside `text` masked, the rest untouched."""
    if not any(c.isdigit() for c in text):
        return text
    return _MOBILE.sub(lambda m: mask_number(m.group(1)), text)


def mask_value(value: Any) -> Any:
    """A stored row (a dead letter's, an export's) with every phone number masked, keeping its
    shape; the `id` field is kept (a message id may look like a number)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {str(k): v if k == "id" else mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = _as_text(value)
        masked = mask_text(text)
        return value if masked == text else masked
    return value


def _as_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
