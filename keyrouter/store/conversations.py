"""Conversation records on every backend: the `Store` methods `conversation_of`,
`save_conversation` and `conversation_records` (keyrouter/store/base.py), mixed into each store
like the activity figures.  A record travels as ASCII JSON (`json.dumps` escapes every non-ASCII
character, lone surrogates of a free-text answer included), so it is stored and read back
exactly; the compare-and-set compares message ids, which go through each backend's own escaping.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from keyrouter.store.codec import MARK, unescape
from keyrouter.store.codec import escape as _escape
from keyrouter.store.mixins import SqlitePlumbing

if TYPE_CHECKING:  # base.py (through keys.py) and memory.py import this module
    from keyrouter.store.keys import Keys
    from keyrouter.store.memory_space import Space


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

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


@dataclass
class ConversationSpace:
    """The memory backend's records for one namespace."""

    current: dict[str, Record] = field(default_factory=dict)
    runs: dict[str, dict[str, Record]] = field(default_factory=dict)


class MemoryConversations:
    """Kept on the namespace's `Space` (memory.py)."""

    _s: Space

    async def conversation_of(self, respondent: str) -> Record | None:
        return self._s.conversations.current.get(respondent)

    async def save_conversation(self, record: Record, expect: str | None) -> bool:
        space: ConversationSpace = self._s.conversations
        current = space.current.get(record.respondent)
        if (current.message_id if current else None) != expect:
            return False
        record = decode(encode(record))  # a copy, as the other backends hand back
        space.current[record.respondent] = record
        space.runs.setdefault(record.conversation, {})[record.respondent] = record
        return True

    async def conversation_records(self, conversation: str) -> list[Record]:
        runs = self._s.conversations.runs.get(conversation, {})
        return [runs[r] for r in sorted(runs)]


class SqliteConversations(SqlitePlumbing):
    """Tables `conv_current` and `conv_runs` (sqlite/sql.py)."""


    async def conversation_of(self, respondent: str) -> Record | None:
        rows = await self._read("SELECT record FROM conv_current WHERE ns = :ns AND respondent = :r",
                                self._p(r=respondent))
        return decode(rows[0][0]) if rows else None

    async def save_conversation(self, record: Record, expect: str | None) -> bool:
        p = self._p(r=record.respondent, c=record.conversation, m=record.message_id,
                    j=encode(record), e=expect)

        def run(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT message_id FROM conv_current WHERE ns = :ns AND respondent = :r",
                             p).fetchone()
            if (row[0] if row else None) != expect:
                return False
            db.execute("INSERT INTO conv_current VALUES (:ns, :r, :m, :j) ON CONFLICT (ns, respondent)"
                       " DO UPDATE SET message_id = excluded.message_id, record = excluded.record", p)
            db.execute("INSERT INTO conv_runs VALUES (:ns, :c, :r, :j) ON CONFLICT"
                       " (ns, conversation, respondent) DO UPDATE SET record = excluded.record", p)
            return True

        return bool(await self._write(run))

    async def conversation_records(self, conversation: str) -> list[Record]:
        rows = await self._read("SELECT respondent, record FROM conv_runs WHERE ns = :ns AND"
                                " conversation = :c", self._p(c=conversation))
        return [decode(j) for _, j in sorted(rows)]


SAVE = """
-- KEYS: conv:last, conv:current, conv:<id>:runs
-- ARGV: respondent, '1' when a record is expected else '0', expected id, new id, record JSON
local last = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
    if last ~= ARGV[3] then return 0 end
elseif last then
    return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
return 1
"""


def escape(value: str) -> str:
    """codec.escape as the Redis store uses it (NUL is fine in a Redis string)."""
    return _escape(value, nul=False)


def _field(value: str) -> str:
    """A hash field as the store's scripts write it (`escape` for the unusual strings)."""
    return escape(value) if value[:1] == MARK or not value.isascii() else value


class RedisConversations:
    """Keys `conv:last`, `conv:current` and `conv:<id>:runs` (keys.py), in the namespace's slot."""

    keys: Keys
    client: Any
    _ready: Callable[[], Any]
    _conv_save: Callable[..., Any]  # SAVE, registered by RedisStore

    async def conversation_of(self, respondent: str) -> Record | None:
        await self._ready()
        raw = await self.client.hget(self.keys.conversation_current, _field(respondent))
        return None if raw is None else decode(raw)

    async def save_conversation(self, record: Record, expect: str | None) -> bool:
        keys = [self.keys.conversation_last, self.keys.conversation_current,
                self.keys.conversation_runs(escape(record.conversation))]
        args = [record.respondent, "0" if expect is None else "1", expect or "",
                record.message_id, encode(record)]
        return bool(await self._conv_save(keys=keys, args=args))

    async def conversation_records(self, conversation: str) -> list[Record]:
        await self._ready()
        found = await self.client.hgetall(self.keys.conversation_runs(escape(conversation)))
        rows = sorted((unescape(k.decode() if isinstance(k, bytes) else k), v)
                      for k, v in found.items())
        return [decode(v) for _, v in rows]
