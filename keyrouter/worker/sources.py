"""Where messages come from besides a live poll: saved get-inbox answers and JSON-lines files."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from keyrouter import timefmt
from keyrouter.masking import mask_number
from keyrouter.message import (
    Message,
    RowError,
    content_id,
    parse_date,
    parse_row,
    row_id,
    row_sender,
    to_e164,
)

logger = logging.getLogger("keyrouter.sources")


class InputError(ValueError):
    """A saved file keyrouter cannot read; the text names the file and, where known, the line."""


ROW_FIELDS = ("id", "date", "sender", "number", "text")


def read_rows(path: str | Path, notes: list[str] | None = None) -> list[Any]:
    """Rows from a saved get-inbox JSON answer (`{"response": {"orders": {"order": [...]}}}`),
    a JSON list of rows, or a JSON-lines file with one row (or one saved answer) per line.

    A UTF-8 byte order mark is fine.  An empty file, JSON that is not an inbox (no object with
    any of id, date, sender, number, text) and a saved error answer (status other than 200) are
    InputErrors saying which: replaying them would silently do nothing.  `notes` hears what is
    odd but readable: a `totalRows` that is not a number or disagrees with the rows."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read: {exc}") from None
    if not text.strip():
        raise InputError(f"{p}: the file is empty: give a saved get-inbox answer or JSON lines of rows")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if document is not None:
        return _rows_of(document, f"{p}:1", notes)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}:{number}: invalid JSON: {exc.msg}") from None
        rows.extend(_rows_of(item, f"{p}:{number}", notes))
    return rows


def _not_inbox(where: str) -> InputError:
    return InputError(f"{where}: not an inbox: expected a get-inbox answer ({{\"response\": "
                      f"{{\"orders\": ...}}}}), a list of rows or JSON lines of rows (objects with "
                      f"{', '.join(ROW_FIELDS)})")


def _is_row(item: Any) -> bool:
    return isinstance(item, Mapping) and any(f in item for f in ROW_FIELDS)


def _rows_of(document: Any, where: str, notes: list[str] | None = None) -> list[Any]:
    if isinstance(document, list):
        if document and not any(_is_row(item) for item in document):
            raise _not_inbox(where)
        return document
    if not isinstance(document, Mapping):
        raise _not_inbox(where)
    if "response" in document:
        response = document.get("response") or {}
        if not isinstance(response, Mapping):
            raise _not_inbox(where)
        status = response.get("status")
        code = status.get("code") if isinstance(status, Mapping) else None
        if code is not None and str(code).strip() != "200":
            said = status.get("message") if isinstance(status, Mapping) else None
            raise InputError(f"{where}: a saved error answer, not an inbox: status {code}"
                             + (f" ({said})" if said else ""))
        orders = response.get("orders") or {}
        order = orders.get("order") if isinstance(orders, Mapping) else None
        found = [] if order is None else order if isinstance(order, list) else [order]
        if notes is not None and isinstance(orders, Mapping) and "totalRows" in orders:
            note = total_rows_note(orders["totalRows"], len(found))
            if note:
                notes.append(f"{where}: {note}")
        return found
    if not _is_row(document):
        raise _not_inbox(where)
    return [document]  # one row


def total_rows_note(total: Any, rows: int) -> str | None:
    """Why a saved answer's `totalRows` does not fit its rows (the provider's pagination may have
    cut the answer short), or None."""
    try:
        count = int(str(total).strip())
    except ValueError:
        return f"totalRows {total!r} is not a number ({rows} rows in the answer)"
    if count != rows:
        more = "; the provider had more rows than this answer holds" if count > rows else ""
        return f"totalRows is {count} but the answer holds {rows} rows{more}"
    return None


def shift_dates(rows: list[Any], now: datetime) -> tuple[list[Any], timedelta]:
    """The rows with every readable date moved by one offset so that the newest is `now` (Turkey
    time, the provider's format): an old saved inbox replays as if it had just arrived, so
    `max_age` and the reply handler treat it as live.  Rows without a readable date are kept."""
    dates = [parse_date(r.get("date")) if isinstance(r, Mapping) else None for r in rows]
    known = [d for d in dates if d is not None]
    if not known:
        return rows, timedelta(0)
    offset = timedelta(seconds=round((now - max(known)).total_seconds()))
    shifted = []
    for row, when in zip(rows, dates, strict=True):
        if when is not None:
            raw_id = row.get("id")
            has_id = raw_id is not None and not isinstance(raw_id, dict | list | bool)
            if not (has_id and str(raw_id).strip()):
                # an id-less row keeps the id of its content as saved, not of the shifted date,
                # so replaying the same file again (shifted again) finds it done
                row = {**row, "id": content_id(row)}
            row = {**row, "date": timefmt.iys(when + offset)}
        shifted.append(row)
    return shifted, offset


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


#: rows a part of a saved inbox starts with (a sender's later rows join its first one's part)
PART = 1_000
#: the rows of the first part: enough to fill the slots, few enough to start them soon
FIRST_PART = 200
#: rows parsed between two turns of the event loop: a part parsed at once would hold the loop for
#: milliseconds, and every running handler whose wait ended meanwhile with it
SLICE = 100


class SavedInbox:
    """A saved inbox's rows, parsed a part at a time as a replay offers them, so the first
    messages run while the rest of the file is still being read (docs/design.md, "Replay").

    Every row of one sender is in the part of that sender's first row, and so are rows that
    share an id: within a part the dispatcher orders a sender's messages and drops repeated ids,
    exactly as if the whole file were offered at once.  A file that repeats an id is one part
    (the first row of an id wins in file order, whoever sent the others).  The first part holds
    `first` rows (FIRST_PART, at most `part`), the others `part`."""

    def __init__(self, rows: Sequence[Any], part: int = PART, first: int = FIRST_PART) -> None:
        self.rows = rows
        #: the message ids of the rows that are objects, in file order (repeats kept)
        self.ids: list[str] = []
        ids = self.ids
        first = min(first, part)
        later = max(0, len(rows) - first)  # rows after the first part
        parts: list[list[Any]] = [[] for _ in range(1 + (later + part - 1) // part)]
        home: dict[str, int] = {}  # a sender's part
        for n, row in enumerate(rows):
            index = 0 if n < first else 1 + (n - first) // part
            if type(row) is dict or isinstance(row, Mapping):  # a dict: no ABC check
                try:
                    msg_id, sender = row_id(row), row_sender(row)
                except Exception:  # left to parse_rows, which logs and skips it
                    pass
                else:
                    ids.append(msg_id)
                    # the dispatcher's line of a sender (scheduling.sender_key): its number, else
                    # its text; rows without a sender share a part here (coarser, never split)
                    index = home.setdefault(to_e164(sender) or sender, index)
            parts[index].append(row)
        #: the same without repeats, in the order of their first row
        self.unique_ids = list(dict.fromkeys(ids))
        if len(self.unique_ids) < len(ids):
            parts = [list(rows)]
        self._parts = [p for p in parts if p]
        self._parsed: list[Message] = []
        self._next = 0

    @property
    def total(self) -> int:
        """How many messages the rows make (rows that are not objects are skipped)."""
        return len(self.ids)

    async def parts(self) -> AsyncIterator[list[Message]]:
        """The messages, a part at a time, each part parsed when it is asked for, SLICE rows at a
        time with a turn of the event loop between."""
        while (index := self._next) < len(self._parts):
            rows, part = self._parts[index], list[Message]()
            for start in range(0, len(rows), SLICE):
                if start:
                    await asyncio.sleep(0)
                part += parse_rows(rows[start : start + SLICE])
            if self._next != index:  # messages() read the rest meanwhile: nothing is given twice
                return
            self._keep(part)
            yield part

    def messages(self) -> list[Message]:
        """Every message of the file, in part order (the parts not asked for yet are parsed now,
        and `parts()` has nothing left to give)."""
        while self._next < len(self._parts):
            self._keep(list(parse_rows(self._parts[self._next])))
        return self._parsed

    def _keep(self, part: list[Message]) -> None:
        """The next part is parsed: keep its messages, move on."""
        self._parsed += part
        self._next += 1
