"""The one order of a sender's messages: scheduling, the ledger's latest-wins and İYS all use it.

A message's place is its `Position`: the provider's date (None when the row had none) and its id.
Two positions compare (docs/ordering-and-masking.md, "The total order"):
1. both dated, different dates: the earlier date first;
2. otherwise (same date, or one or both undated): by the provider's numeric id when both ids are
   numeric (`"99" < "100"`), else by the id text.
So an undated row is placed among its sender's messages by its id, never by the time it was
read.  Where the provider's ids grow with time (they do), this is one total order.  Where a dated
row's date and id disagree with an undated row's id, the pairwise rule can form a cycle; sorting
a whole set (`in_order`) then places each message after the last one already placed before it,
so the result is still one deterministic order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, TypeVar

from keyrouter.message import Message

__all__ = ["Position", "compare", "entry_position", "in_order", "insertion_index", "later",
           "numeric_id", "position"]

T = TypeVar("T")


class Position(NamedTuple):
    """Where a message stands among its sender's: provider date (epoch seconds) or None, id."""

    date: float | None
    id: str


def numeric_id(text: str) -> int | None:
    """The id as a number when it is ASCII digits only (the provider's ids), else None."""
    return int(text) if text.isascii() and text.isdigit() else None


def position(message: Message) -> Position:
    """A message's position: its provider date only when the provider gave one."""
    return Position(message.received_at.timestamp() if message.date_known else None, message.id)


def entry_position(received_at: float, dated: bool, message_id: str) -> Position:
    """The position of a ledger line (`OptOut`: received_at, dated, message_id)."""
    return Position(received_at if dated else None, message_id)


def compare(a: Position, b: Position) -> int:
    """-1 when `a` comes first, 1 when `b` does, 0 for the same place (the same id and date)."""
    if a.date is not None and b.date is not None and a.date != b.date:
        return -1 if a.date < b.date else 1
    na, nb = numeric_id(a.id), numeric_id(b.id)
    if na is not None and nb is not None and na != nb:
        return -1 if na < nb else 1
    if a.id != b.id:
        return -1 if a.id < b.id else 1
    return 0


def later(a: Position, b: Position) -> bool:
    """True when `a` comes strictly after `b`."""
    return compare(a, b) > 0


def insertion_index(placed: Sequence[T], new: Position, key: Callable[[T], Position]) -> int:
    """Where `new` goes in `placed` (already in order): after the last element that does not come
    after it (ties keep arrival order)."""
    for at in range(len(placed) - 1, -1, -1):
        if compare(key(placed[at]), new) <= 0:
            return at + 1
    return 0


def in_order(items: Iterable[T], key: Callable[[T], Position]) -> list[T]:
    """`items` in the total order (one sender's messages).  Placed in id order first, so the
    result does not depend on the order `items` came in, even where dates and ids disagree."""
    out: list[T] = []
    for item in sorted(items, key=lambda i: _id_key(key(i).id)):
        out.insert(insertion_index(out, key(item), key), item)
    return out


def _id_key(text: str) -> tuple[int, int, str]:
    number = numeric_id(text)
    return (0, number, "") if number is not None else (1, 0, text)
