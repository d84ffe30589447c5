"""Rows that share an id but not their content: kept once, and never dropped without a word.

The provider's id is what makes a message run once, so a second row with an id already seen is not
dispatched again.  When its content (date, sender, number, text) differs from the first, that is
not a harmless repeat: the provider (or an export) gave two messages one id, and one of them will
not run.  Each such row is logged (numbers masked) and counted (`keyrouter_duplicate_ids_total`),
so an operator can look; identical repeats stay silent (docs/ordering-and-masking.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from keyrouter.events import NO_EVENTS, Events
from keyrouter.masking import mask_number, mask_text
from keyrouter.message import CONTENT_FIELDS, Message, content_hash

__all__ = ["CONTENT_FIELDS", "content_digest", "note_duplicate"]

log = logging.getLogger("keyrouter.intake")


def content_digest(row: Mapping[str, Any]) -> str:
    """A short digest of the row's content fields (as text), for comparing two rows of one id."""
    fields = ["" if row.get(k) is None else str(row.get(k)) for k in CONTENT_FIELDS]
    return content_hash(fields)[:16]


def note_duplicate(first: Message | str, second: Message, events: Events = NO_EVENTS,
                   *, where: str = "get-inbox") -> bool:
    """`second` came with the id of `first` (a Message, or the digest of the row kept): when the
    content differs, log it and count it, and return True.  The first row is the one that runs."""
    kept = first if isinstance(first, str) else content_digest(first.row)
    if kept == content_digest(second.row):
        return False
    log.warning(
        "%s: a second row with id %r and different content was not dispatched (sender %s, "
        "text %r); the first row with that id is the one that runs",
        where, second.id, mask_number(second.sender), mask_text(second.text[:80]),
    )
    events.duplicate_id()
    return True
