"""`Store.claim_decision` on every backend: one atomic compare-and-set per number, so an inbox RET
and a provider opt-out (or two reconciles) processed at once on two workers never both apply one
decision (docs/reconciliation.md, "Once, whatever happens").

Each backend keeps, per number, the *holder*: the message that last claimed the number, when (the
store clock) and, on Redis, the members of its pending marks.  The holder keeps others waiting
only while all of these hold: it claimed less than DECISION_HOLD seconds ago, it has a pending
mark not yet in the ledger, and it is unfinished.  So a holder that recorded frees the number at
once, a dead one too (its opt-out can be recorded by the waiter), and a worker killed after its
claim blocks no one for ever: its message is claimed again and carries on (it is the holder), or
the hold runs out.  The backends mix these classes in."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from keyrouter.ordering import compare, entry_position
from keyrouter.store import sqlite_sql as stmt
from keyrouter.store.base import (
    BUSY,
    DECIDED,
    DECISION_HOLD,
    DECISIONS,
    GRANTED,
    LATER,
    OPT_OUT_ACTIONS,
    Decision,
    OptOut,
)
from keyrouter.store.codec import row_json, unescape
from keyrouter.store.keys import Keys
from keyrouter.store.mixins import SqlitePlumbing
from keyrouter.store.redis_lua import PRELUDE
from keyrouter.store.redis_lua_ledger import ORDER
from keyrouter.store.sqlite_ledger import _entry

if TYPE_CHECKING:  # memory.py imports this module
    from keyrouter.store.memory import Space

__all__ = ["DECIDE", "SCHEMA", "MemoryDecisions", "RedisDecisions", "SqliteDecisions", "judge"]

_ACTIONS = sorted(DECISIONS)

SCHEMA = """
CREATE TABLE IF NOT EXISTS optouts_holder (
    ns TEXT NOT NULL, number TEXT NOT NULL, message_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (ns, number)) WITHOUT ROWID
"""


def judge(entry: OptOut, latest: OptOut | None, *, defer: bool, has_line: Callable[[str], bool],
          holds: Callable[[str], bool]) -> Decision | None:
    """LATER, DECIDED or BUSY from the number's latest ledger entry, or None (the holder
    decides).  A deferring opt-out meets another message's opt-out: DECIDED when that message has
    this effect's line too (`has_line(message)`), BUSY while it still holds the number
    (`holds(message)`: it may write it yet), else None: it finished without this effect (dead,
    or its rule has none), so the deferring one records it and no effect is lost."""
    if latest is None or latest.message_id == entry.message_id:
        return None
    mine = entry_position(entry.received_at, entry.dated, entry.message_id)
    if compare(entry_position(latest.received_at, latest.dated, latest.message_id), mine) > 0:
        return Decision(LATER, latest.message_id)
    if defer and entry.action in OPT_OUT_ACTIONS and latest.action in OPT_OUT_ACTIONS:
        if has_line(latest.message_id):
            return Decision(DECIDED, latest.message_id)
        if holds(latest.message_id):
            return Decision(BUSY, latest.message_id)
    return None


class MemoryDecisions:
    """Holders in `Space.holders`: number -> (message id, claimed at)."""

    _s: Space
    _clock: Callable[[], float]
    _is_finished: Callable[[str], bool]

    async def claim_decision(self, entry: OptOut, *, defer: bool = False) -> Decision:
        s, now = self._s, self._clock()
        holder = s.holders.get(entry.number)

        def holds(message_id: str) -> bool:
            return holder is not None and holder[0] == message_id \
                and now - holder[1] < DECISION_HOLD and not self._is_finished(message_id)

        verdict = judge(entry, s.latest.get(entry.number), defer=defer, holds=holds,
                        has_line=lambda m: (m, entry.action) in s.optouts)
        if verdict is not None:
            return verdict
        if holder is not None and holder[0] != entry.message_id and holds(holder[0]) \
                and any((holder[0], a) in s.pending for a in DECISIONS):
            return Decision(BUSY, holder[0])
        s.holders[entry.number] = (entry.message_id, now)
        key = (entry.message_id, entry.action)
        first = key not in s.optouts and key not in s.pending
        if first:
            s.pending[key] = entry
        return Decision(GRANTED, first=first)


_HOLDER = ("SELECT message_id, at FROM optouts_holder WHERE ns = :ns AND number = :number")
_HOLDER_PENDING = ("SELECT 1 FROM optouts_pending WHERE ns = :ns AND message_id = :holder"
                   f" AND action IN ({', '.join(repr(a) for a in _ACTIONS)}) LIMIT 1")
_LINE = ("SELECT 1 FROM optouts WHERE ns = :ns AND message_id = :other AND action = :action")
_HOLDER_SET = """
INSERT INTO optouts_holder VALUES (:ns, :number, :message_id, :t)
ON CONFLICT (ns, number) DO UPDATE SET message_id = excluded.message_id, at = excluded.at"""


class SqliteDecisions(SqlitePlumbing):
    """Table `optouts_holder` (SCHEMA, created at open); one write transaction per claim."""

    async def claim_decision(self, entry: OptOut, *, defer: bool = False) -> Decision:
        p = self._p(**asdict(entry))

        def run(db: sqlite3.Connection) -> Decision:
            holder = db.execute(_HOLDER, p).fetchone()

            def holds(message_id: str) -> bool:
                return holder is not None and holder[0] == message_id \
                    and p["t"] - holder[1] < DECISION_HOLD \
                    and bool(db.execute(stmt.UNFINISHED, self._p(ids=stmt.json_ids([message_id]))
                                        ).fetchone())

            def has_line(message_id: str) -> bool:
                return bool(db.execute(_LINE, {**p, **self._p(other=message_id)}).fetchone())

            latest = db.execute(stmt.LATEST, p).fetchone()
            verdict = judge(entry, None if latest is None else _entry(latest), defer=defer,
                            has_line=has_line, holds=holds)
            if verdict is not None:
                return verdict
            if holder is not None and holder[0] != entry.message_id and holds(holder[0]) \
                    and db.execute(_HOLDER_PENDING, {**p, **self._p(holder=holder[0])}).fetchone():
                return Decision(BUSY, holder[0])
            db.execute(_HOLDER_SET, p)
            if db.execute("SELECT 1 FROM optouts WHERE ns = :ns AND message_id = :message_id"
                          " AND action = :action", p).fetchone():
                return Decision(GRANTED)
            first = db.execute(f"INSERT OR IGNORE INTO optouts_pending ({stmt.LEDGER_COLUMNS})"
                               f" VALUES ({stmt.LEDGER_VALUES})", p).rowcount
            return Decision(GRANTED, first=bool(first))

        return await self._write(run)


# KEYS: optouts HASH, optouts:latest HASH, optouts:pending HASH, optouts:holder HASH, dead HASH,
# done keys...  ARGV: number, message id, member "message_id|action", entry JSON, defer ('1'/'0'),
# opt-out action ('1'/'0'), now, DECISION_HOLD, then the members of the message's four DECISIONS
# (kept in the holder, so a waiter finds its pending marks), then the action.  The same steps as
# `judge` and the memory backend.  The latest entry's message id, as stored in members, is its
# member without "|action" (escaping leaves "|" and the action's letters alone).  All keys are the
# namespace's, in one hash slot (keys.py).  Returns {verdict, other id ('' for none), first
# ('1'/'0')}; the other id is escaped (codec.py) as stored.
DECIDE = PRELUDE + ORDER + """
local OPT_OUTS = {blacklist = true, iys_ret = true}
local now = tonumber(ARGV[7])
local raw = redis.call('HGET', KEYS[4], ARGV[1])
local h = nil
if raw then h = cjson.decode(raw) end
local function holds(id)
  return h ~= nil and h['id'] == id and now - tonumber(h['at']) < tonumber(ARGV[8])
    and #unfinished({id}, KEYS[5], 6) == 1
end
local member = redis.call('HGET', KEYS[2], ARGV[1])
local latest = member and redis.call('HGET', KEYS[1], member)
if latest then
  local ld, lid = place(latest)
  local ed, eid = place(ARGV[4])
  local action = cjson.decode(latest)['action']
  if lid ~= eid then
    if compare(ld, lid, ed, eid) > 0 then return {'later', lid, '0'} end
    if ARGV[5] == '1' and ARGV[6] == '1' and OPT_OUTS[action] then
      local other = string.sub(member, 1, #member - #action - 1)
      if redis.call('HEXISTS', KEYS[1], other .. '|' .. ARGV[13]) == 1 then
        return {'decided', lid, '0'}
      end
      if holds(other) then return {'busy', other, '0'} end
    end
  end
end
if h and h['id'] ~= ARGV[2] and holds(h['id']) then
  for _, m in ipairs(h['members']) do
    if redis.call('HEXISTS', KEYS[3], m) == 1 then return {'busy', h['id'], '0'} end
  end
end
redis.call('HSET', KEYS[4], ARGV[1], cjson.encode({id = ARGV[2], at = now,
  members = {ARGV[9], ARGV[10], ARGV[11], ARGV[12]}}))
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return {'granted', '', '0'} end
return {'granted', '', tostring(redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[4]))}
"""


def _text(value: bytes | str) -> str:
    return unescape(value.decode() if isinstance(value, bytes) else value)


class RedisDecisions:
    """Key `optouts:holder` (keys.py), with the ledger's keys, in one script (DECIDE)."""

    keys: Keys
    _clock: Callable[[], float]
    _done_keys: Callable[[], list[str]]
    _decide: Callable[..., Any]  # DECIDE, registered by RedisStore

    async def claim_decision(self, entry: OptOut, *, defer: bool = False) -> Decision:
        k, id = self.keys, entry.message_id
        verdict, other, first = await self._decide(
            keys=[k.optouts, k.optouts_latest, k.optouts_pending, k.optouts_holder, k.dead,
                  *self._done_keys()],
            args=[entry.number, id, f"{id}|{entry.action}", row_json(asdict(entry)),
                  "1" if defer else "0", "1" if entry.action in OPT_OUT_ACTIONS else "0",
                  repr(self._clock()), repr(DECISION_HOLD), *[f"{id}|{a}" for a in _ACTIONS],
                  entry.action],
        )
        return Decision(_text(verdict), _text(other) or None, _text(first) == "1")
