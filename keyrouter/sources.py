"""Where messages come from besides a live poll: saved get-inbox answers and JSON-lines files."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from keyrouter.message import Message, RowError, mask_number, parse_row

logger = logging.getLogger("keyrouter.sources")


class InputError(ValueError):
    """A saved file keyrouter cannot read; the text names the file and, where known, the line."""


def read_rows(path: str | Path) -> list[Any]:
    """Rows from a saved get-inbox JSON answer (`{"response": {"orders": {"order": [...]}}}`),
    a JSON list of rows, or a JSON-lines file with one row (or one saved answer) per line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if document is not None:
        rows = _rows_of(document)
        if rows is None:
            raise InputError(f"{p}:1: not a get-inbox answer, a list of rows, or JSON lines")
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}:{number}: invalid JSON: {exc.msg}") from None
        found = _rows_of(item)
        if found is None:
            raise InputError(f"{p}:{number}: a line must be a row object or a get-inbox answer")
        rows.extend(found)
    return rows


def _rows_of(document: Any) -> list[Any] | None:
    if isinstance(document, list):
        return document
    if not isinstance(document, Mapping):
        return None
    if "response" in document:
        response = document.get("response") or {}
        if not isinstance(response, Mapping):
            return None
        orders = response.get("orders") or {}
        order = orders.get("order") if isinstance(orders, Mapping) else None
        if order is None:
            return []
        return order if isinstance(order, list) else [order]
    return [document]  # one row


def parse_rows(rows: Iterable[Any]) -> Iterator[Message]:
    """Messages from provider rows; a row that cannot be read (not an object) is logged (number
    masked) and skipped, and never stops the batch.  Rows without an id get one from their
    content (message.content_id)."""
    for row in rows:
        try:
            yield parse_row(row)
        except Exception as exc:  # RowError, or drift nobody foresaw: never stop the batch
            sender = row.get("sender") if isinstance(row, Mapping) else None
            why = exc if isinstance(exc, RowError) else f"unreadable row ({type(exc).__name__})"
            logger.warning("skipping a row: %s (sender %s)", why, mask_number(sender))
