"""The Redis store's parts for the activity figures, conversations and reconciliation state:
each is given the client, the namespace's keys (keys.py), the store's one-time key move and a way
to register its Lua script (script.py), and serves one role of the contract (roles.py)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from keyrouter.store.activity import ROUTED_TTL, hours
from keyrouter.store.conversations import Record, decode, encode
from keyrouter.store.keys import Keys
from keyrouter.store.reconciled import dump_state
from keyrouter.store.redis.script import Script, escape, unescaped
from keyrouter.store.roles import ActivityStore, ConversationStore, ReconcileStore

#: The store's one-time move of keys written before the hash tag, awaited before a plain command.
Ready = Callable[[], Awaitable[None]]
#: Registers a script's source with the store's client.
Register = Callable[[str], Script]

ROUTED_ADD = """
-- KEYS: the hour HASHes; ARGV[1] their TTL in seconds, then (key index, rule, count) triples
for i = 2, #ARGV, 3 do
    redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ARGV[1]) end
return 0
"""

ROUTED_READ = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
"""

CONVERSATION_SAVE = """
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

SAVE_ROWS = """
-- KEYS[1]: the rows HASH; ARGV: id, row pairs.  Adds the absent ones; returns how many.
local added = 0
for i = 1, #ARGV, 2 do
    added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
return added
"""


class RedisActivity(ActivityStore):
    """Keys `poll` ("at|rows"), `touch` and `routed:<hour>` HASHes (keys.py), all in the
    namespace's slot."""

    def __init__(self, client: Any, keys: Keys, ready: Ready, script: Register,
                 clock: Callable[[], float]) -> None:
        self.client, self.keys, self._ready, self._clock = client, keys, ready, clock
        self._routed_add = script(ROUTED_ADD)
        self._routed_read = script(ROUTED_READ)

    async def record_poll(self, at: float, rows: int) -> None:
        await self._ready()
        await self.client.set(self.keys.poll, f"{float(at)!r}|{int(rows)}")

    async def touch(self, at: float) -> None:
        await self._ready()
        await self.client.set(self.keys.touch, repr(float(at)), ex=86_400)

    async def last_poll(self) -> tuple[float, int] | None:
        await self._ready()
        raw = await self.client.get(self.keys.poll)
        if raw is None:
            return None
        at, _, rows = (raw.decode() if isinstance(raw, bytes) else raw).partition("|")
        return float(at), int(rows)

    async def count_routed(self, counts: Mapping[tuple[str, int], int]) -> None:
        index: dict[int, int] = {}
        args: list[Any] = [ROUTED_TTL]
        for (rule, hour), n in counts.items():
            if n:
                at = index.setdefault(int(hour), len(index) + 1)
                args += [at, rule, int(n)]
        if index:
            await self._routed_add(keys=[self.keys.routed(h) for h in index], args=args)

    async def routed_since(self, hour: int) -> dict[int, dict[str, int]]:
        span = list(hours(hour, self._clock()))
        replies = await self._routed_read(keys=[self.keys.routed(h) for h in span])
        out: dict[int, dict[str, int]] = {}
        for h, flat in zip(span, replies, strict=True):
            counts = {unescaped(k): int(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
            if any(counts.values()):
                out[h] = {k: v for k, v in counts.items() if v}
        return out


class RedisConversations(ConversationStore):
    """Keys `conv:last`, `conv:current` and `conv:<id>:runs` (keys.py), in the namespace's slot."""

    def __init__(self, client: Any, keys: Keys, ready: Ready, script: Register) -> None:
        self.client, self.keys, self._ready = client, keys, ready
        self._conv_save = script(CONVERSATION_SAVE)

    async def conversation_of(self, respondent: str) -> Record | None:
        await self._ready()
        raw = await self.client.hget(self.keys.conversation_current, escape(respondent))
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
        rows = sorted((unescaped(k), v) for k, v in found.items())
        return [decode(v) for _, v in rows]


class RedisReconciled(ReconcileStore):
    """Keys `reconcile` (a JSON STRING) and `reconcile:rows` (a HASH id -> row), keys.py, in the
    namespace's slot."""

    def __init__(self, client: Any, keys: Keys, ready: Ready, script: Register) -> None:
        self.client, self.keys, self._ready = client, keys, ready
        self._save_rows = script(SAVE_ROWS)

    async def reconcile_state(self) -> dict[str, Any] | None:
        await self._ready()
        raw = await self.client.get(self.keys.reconcile)
        return None if raw is None else json.loads(raw)

    async def save_reconcile_state(self, state: Mapping[str, Any]) -> None:
        await self._ready()
        await self.client.set(self.keys.reconcile, dump_state(state))

    async def save_reconciled_rows(self, rows: Sequence[tuple[str, str]]) -> int:
        if not rows:
            return 0
        args: list[str] = []
        for id, row in rows:
            args += [id, row]
        return int(await self._save_rows(keys=[self.keys.reconcile_rows], args=args))

    async def reconciled_rows(self) -> list[tuple[str, str]]:
        await self._ready()
        found = await self.client.hgetall(self.keys.reconcile_rows)
        return sorted((unescaped(k), unescaped(v)) for k, v in found.items())

    async def drop_reconciled_rows(self, ids: Sequence[str]) -> None:
        if ids:
            await self._ready()
            await self.client.hdel(self.keys.reconcile_rows, *[escape(i) for i in ids])
