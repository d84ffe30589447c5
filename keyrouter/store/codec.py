"""How the stores write arbitrary strings and rows, so any row the provider sends reads back.

Provider fields are any JSON: an id, sender or text may hold NUL or a lone surrogate (half an emoji
split across concatenated SMS segments, decoded by a lenient JSON parser).  Python strings hold
both; UTF-8 codecs and C strings do not.  Each backend therefore writes:

- Redis: every string as UTF-8 with `surrogatepass` (a lone surrogate becomes its 3-byte form,
  NUL stays a byte: Redis strings are binary-safe), read back with `surrogatepass`: exact.
- SQLite: strings through `to_sql` / `from_sql`: unchanged unless they hold NUL, a surrogate or
  start with the marker U+0001; those are stored as the marker followed by their JSON escape
  (pure ASCII), so existing data reads as before and every string round-trips exactly.
- Rows (dead letters): `row_json`, JSON with non-JSON values as `str()` and non-string keys as
  strings; every backend, memory included, hands back what that JSON reads as.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

MARK = "\x01"
_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def to_bytes(value: Any) -> Any:
    """A string as UTF-8 bytes that keep lone surrogates; other values unchanged."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value


def from_bytes(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def to_sql(value: str) -> str:
    """A string SQLite stores and hands back unchanged (no NUL, no surrogate)."""
    if value.startswith(MARK) or _UNSAFE.search(value):
        return MARK + json.dumps(value)[1:-1]
    return value


def from_sql(value: str) -> str:
    return json.loads(f'"{value[1:]}"') if value.startswith(MARK) else value


def row_json(row: Any, *, ascii: bool = False) -> str:
    """JSON text for a row of any shape: non-JSON values become `str()`, keys strings."""
    try:
        return json.dumps(row, default=str, ensure_ascii=ascii)
    except (TypeError, ValueError):  # non-string keys json cannot take, or a cycle
        return json.dumps(_plain(row, 0), default=str, ensure_ascii=ascii)


def _plain(value: Any, depth: int) -> Any:
    if depth > 100:
        return str(value)
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    return value
