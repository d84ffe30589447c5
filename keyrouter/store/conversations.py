"""Conversation records on every backend: the `ConversationStore` role (roles.py), served by each
backend's part (memory_parts.py, sqlite/parts.py, redis/parts.py).  A record travels as ASCII
JSON (`json.dumps` escapes every non-ASCII character, lone surrogates of a free-text answer
included), so it is stored and read back exactly; the compare-and-set compares message ids,
which go through each backend's own escaping.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Protocol


class HasExpiry(Protocol):
    """What a record needs of its conversation (keyrouter.rules.conversations.Conversation)."""

    @property
    def expires(self) -> timedelta: ...


OPEN, COMPLETED, INCOMPLETE, OPTED_OUT, EXPIRED = (
    "open", "completed", "incomplete", "opted_out", "expired")
#: The provider refuses the same text to the same number within this many seconds (451).
DUPLICATE_WINDOW = 600.0


@dataclass(frozen=True)
class Record:
    conversation: str
    respondent: str  # the sender's E.164 number, or the sender as received
    status: str  # open, completed, incomplete or opted_out (expired is read from last_at)
    step: int  # the question asked now (index)
    message_id: str  # the last message applied
    started_at: float
    last_at: float  # epoch seconds of the last SMS (the worker's clock): expiry counts from it
    answers: dict[str, str] = field(default_factory=dict)
    misses: int = 0  # answers in a row that fit no choice
    reply: str | None = None  # the SMS `message_id` calls for, None: none
    repeats: int = 0  # times `base` was sent within the provider's duplicate window
    base: str | None = None  # the last SMS before any variation

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def is_open(self, conv: HasExpiry | None, now: float) -> bool:
        """Open and not expired (by the worker's clock); a conversation no longer in the rules
        is never open."""
        return (conv is not None and self.status == OPEN
                and now - self.last_at < conv.expires.total_seconds())

    def final_status(self, conv: HasExpiry | None, now: float) -> str:
        if self.status == OPEN and not self.is_open(conv, now):
            return EXPIRED
        return self.status


def encode(record: Record) -> str:
    return json.dumps(asdict(record), ensure_ascii=True, separators=(",", ":"))


def decode(raw: bytes | str) -> Record:
    return Record.from_json(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
