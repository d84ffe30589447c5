"""How the stores write arbitrary strings and rows, so any row the provider sends reads back.

Provider fields are any JSON: an id, sender or text may hold NUL or a lone surrogate (half an emoji
split across concatenated SMS segments, decoded by a lenient JSON parser).  Python strings hold
both; UTF-8 codecs refuse lone surrogates and SQLite's JSON functions cut strings at NUL.  So the
SQLite and Redis stores write every string (ids, entry keys, errors, voters, published rows...)
through `escape`.  A string with neither (for Redis: without a surrogate; it takes NUL as is) and
not starting with the marker U+0001 is written unchanged, so existing data reads as before.  Any
other is written as the marker followed by the string with each NUL, surrogate, backslash and
marker as `\\uXXXX`, one code point at a time; `unescape` turns it back exactly.  Key names built
from ids or survey names use the escaped form.

Rows (dead letters, ledger entries) are stored as `row_json`: JSON whose strings (keys too) went
through `escape` (a JSON reader would merge two escaped halves of a pair; these stay apart), with
non-JSON values as their `str()` and non-string keys as strings; `read_row` reverses it.  Every
backend, memory included, hands back what `read_row(row_json(row))` gives: the row itself for any
row parsed from JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

MARK = "\x01"
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED = re.compile("[\\\\\x00\x01\ud800-\udfff]")  # backslash, NUL, the marker, surrogates
_CODE = re.compile(r"\\u([0-9a-f]{4})")
# 20 digits in a row: maybe an integer beyond 64 bits, which orjson would read as a float
_LONG_DIGITS, _LONG_DIGITS_BYTES = re.compile(r"\d{20}"), re.compile(rb"\d{20}")


def escape(value: str, *, nul: bool = True) -> str:
    """A string without NUL or surrogates that `unescape` maps back to `value`: each of those
    characters (and backslash and the marker) becomes `\\uXXXX`, one code point at a time, so two
    lone halves of a pair stay two characters.  `nul=False` (Redis: binary-safe, and earlier
    versions stored NUL as is) leaves a string whose only oddity is NUL unchanged."""
    if value.isascii():  # the usual case, in C: no surrogate possible
        if not value.startswith(MARK) and not (nul and "\x00" in value):
            return value
    elif not value.startswith(MARK) and not (_UNSAFE if nul else _SURROGATE).search(value):
        return value
    return MARK + _ESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def unescape(value: str) -> str:
    if not value.startswith(MARK):
        return value
    return _CODE.sub(lambda m: chr(int(m.group(1), 16)), value[1:])


def row_json(row: Any) -> str:
    """JSON text for a row of any shape, valid UTF-8: every string (keys too) through `escape`,
    non-JSON values as their `str()`, non-string keys as strings.  `read_row` reverses it."""
    return dumps(_walk(row, escape, 0))


def read_row(text: str | bytes) -> Any:
    return _walk(loads(text), unescape, 0)


def dumps(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False)` through orjson (several times faster; this runs
    for rows and answers on the per-message path); the standard library for what orjson refuses
    (lone surrogates, integers beyond 64 bits) or writes as null (NaN, infinities), so the text
    reads back the same either way."""
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        encoded = b"null"
    if b"null" not in encoded:  # orjson writes NaN and infinities as null: those go the long way
        return encoded.decode()
    return json.dumps(value, ensure_ascii=False)


def dumps_ascii(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=True, default=str)`: orjson when its answer is ASCII
    already, else the standard library (which escapes every other character, lone surrogates
    included)."""
    try:
        encoded = orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:
        encoded = b"null"
    if encoded.isascii() and b"null" not in encoded:  # NaN and infinities: see `dumps`
        return encoded.decode()
    return json.dumps(value, ensure_ascii=True, default=str)


def loads(text: str | bytes) -> Any:
    """`json.loads` through orjson; the standard library for what orjson refuses (an escaped lone
    surrogate, NaN) and for a text with 20 digits in a row (orjson reads an integer beyond 64
    bits as a float), which it reads as before."""
    long = (_LONG_DIGITS if isinstance(text, str) else _LONG_DIGITS_BYTES).search(text)  # type: ignore[arg-type]
    if long is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _walk(value: Any, fix: Callable[[str], str], depth: int) -> Any:
    if isinstance(value, str):
        return fix(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 100:  # a cycle, or deeper than any provider row
        return fix(str(value))
    if isinstance(value, Mapping):
        return {fix(k if isinstance(k, str) else str(k)): _walk(v, fix, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, fix, depth + 1) for v in value]
    return fix(str(value))
