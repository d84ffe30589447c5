"""Redis store: many workers, one Redis.  Every batch operation is one Lua script, so it is atomic
and costs one round trip whatever the number of ids.  Key names live in `keys.py`.

Scripts build `claim:<id>` and `progress:<id>` names from prefixes passed as ARGV; every key of a
namespace shares one hash tag (keys.py), so this holds on a Redis Cluster too, where each script
declares at least one key for the client to route it by.  Done buckets are named from the store's
clock on the client side and passed as KEYS, so tests can move time and no script depends on the
server's clock.  Connecting, and moving keys written before the hash tag: `redis_connect.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis

from keyrouter.store.base import Claimed, DeadLetter, LedgerCursor, OptOut, Store, SurveyResults
from keyrouter.store.codec import MARK, read_row, row_json, unescape
from keyrouter.store.codec import escape as _escape
from keyrouter.store.keys import Keys, bucket_ttl, check_policy, vote_ids_ttl
from keyrouter.store.redis_connect import connect, describe, move_legacy_keys

COUNTERS = ("done", "skipped", "dead", "failed")

# unfinished(ids, dead, first): the ids (input order) in no done SET KEYS[first..] and not in the
# dead HASH.  SMISMEMBER checks a chunk of ids per call; unpack() is capped by Lua's C stack.
_PRELUDE = """
local unpack = table.unpack or unpack
-- Long answers go back as one JSON string: the client reads one reply instead of one per item,
-- which is most of a big batch's cost on the Python side.
local function as_json(list)
  if #list == 0 then return '[]' end
  return cjson.encode(list)
end
local function unfinished(ids, dead, first)
  for k = first, #KEYS do
    if #ids == 0 then return ids end
    if redis.call('EXISTS', KEYS[k]) == 1 then
      local keep = {}
      for s = 1, #ids, 1000 do
        local hit = redis.call('SMISMEMBER', KEYS[k], unpack(ids, s, math.min(s + 999, #ids)))
        for j = 1, #hit do
          if hit[j] == 0 then keep[#keep + 1] = ids[s + j - 1] end
        end
      end
      ids = keep
    end
  end
  if #ids == 0 or redis.call('EXISTS', dead) == 0 then return ids end
  local keep = {}
  for _, id in ipairs(ids) do
    if redis.call('HEXISTS', dead, id) == 0 then keep[#keep + 1] = id end
  end
  return keep
end
-- one command per 1000 ids: HDEL/ZREM/DEL of many members or keys, skipped when the key is absent
local function drop_all(cmd, key, items)
  if #items == 0 or (key and redis.call('EXISTS', key) == 0) then return end
  for s = 1, #items, 1000 do
    if key then redis.call(cmd, key, unpack(items, s, math.min(s + 999, #items)))
    else redis.call(cmd, unpack(items, s, math.min(s + 999, #items))) end
  end
end
-- another owner holds a live lease on the claim key: finish, fail and dead_letter leave it be
local function taken(claim, owner)
  local holder = redis.call('GET', claim)
  return holder ~= false and holder ~= owner
end
local function attempts_of(retry, id)
  local r = redis.call('HGET', retry, id)
  if not r then return 0, 0 end
  local a, at = string.match(r, '^(%d+)|(.*)$')
  return tonumber(a), tonumber(at)
end
"""

# KEYS: dead, done keys...  ARGV: ids...
_UNFINISHED = "return as_json(unfinished(ARGV, KEYS[1], 2))"

# KEYS: dead, retry, holders, done keys...  ARGV: claim prefix, progress prefix, owner, lease ms,
# now, limit (-1: none), ids...  Returns JSON: a flat list of id, attempts, taken over (0/1),
# #succeeded, succeeded entries..., per claimed id.  `holders` remembers each id's last owner
# after its lease key expired, so a claim over a dead worker's lease is seen.
_CLAIM = """
local ids, seen = {}, {}
for i = 7, #ARGV do
  if not seen[ARGV[i]] then seen[ARGV[i]] = true; ids[#ids + 1] = ARGV[i] end
end
ids = unfinished(ids, KEYS[1], 4)
local now, limit, out, n = tonumber(ARGV[5]), tonumber(ARGV[6]), {}, 0
if limit < 0 then limit = #ids end
local retries = redis.call('EXISTS', KEYS[2]) == 1
local held = redis.call('EXISTS', KEYS[3]) == 1
for s = 1, #ids, 1000 do
  if n >= limit then break end
  local chunk, leases = {}, {}
  for j = s, math.min(s + 999, #ids) do
    chunk[#chunk + 1] = ids[j]; leases[#leases + 1] = ARGV[1] .. ids[j]
  end
  local holders = redis.call('MGET', unpack(leases))
  local states = retries and redis.call('HMGET', KEYS[2], unpack(chunk)) or {}
  local lasts = held and redis.call('HMGET', KEYS[3], unpack(chunk)) or {}
  local hold = {}
  for j, id in ipairs(chunk) do
    if n >= limit then break end
    local attempts, retry_at = 0, 0
    if states[j] then
      local a, at = string.match(states[j], '^(%d+)|(.*)$')
      attempts, retry_at = tonumber(a), tonumber(at)
    end
    local holder = holders[j]
    if retry_at <= now and (not holder or holder == ARGV[3]) then
      redis.call('SET', leases[j], ARGV[3], 'PX', ARGV[4])
      local last, over = lasts[j], 0
      if last ~= ARGV[3] then
        if last and not holder then over = 1 end
        hold[#hold + 1] = id; hold[#hold + 1] = ARGV[3]
      end
      local done = redis.call('SMEMBERS', ARGV[2] .. id)
      out[#out + 1] = id; out[#out + 1] = attempts; out[#out + 1] = over; out[#out + 1] = #done
      for _, e in ipairs(done) do out[#out + 1] = e end
      n = n + 1
    end
  end
  if #hold > 0 then redis.call('HSET', KEYS[3], unpack(hold)) end
end
return as_json(out)
"""

# KEYS: any key of the namespace (Cluster routes by it).  ARGV: claim prefix, owner, lease ms, ids...
_RENEW = """
local out, seen = {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if not seen[id] then
    seen[id] = true
    if redis.call('GET', ARGV[1] .. id) == ARGV[2] then
      redis.call('PEXPIRE', ARGV[1] .. id, ARGV[3]); out[#out + 1] = id
    end
  end
end
return out
"""

# KEYS: any key of the namespace.  ARGV: claim prefix, progress prefix, owner, (id, entry) pairs...
# Returns the lost ids.
_RECORD = """
local lost, held = {}, {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  if held[id] == nil then
    held[id] = redis.call('GET', ARGV[1] .. id) == ARGV[3]
    if not held[id] then lost[#lost + 1] = id end
  end
  if held[id] then redis.call('SADD', ARGV[2] .. id, ARGV[i + 1]) end
end
return lost
"""

# KEYS: target done key, stats, retry, dead, holders, published, published:order, done keys... (the
# plain done SET first).  ARGV: claim prefix, progress prefix, bucket ttl (0: none), owner, number of
# done ids, number of skipped ids, ids..., skipped..., forever...  Returns the ids left alone
# (another owner's).  A `forever` id goes in the plain done SET, even when an expiring bucket
# already holds it.
_FINISH = """
local n, m = tonumber(ARGV[5]), tonumber(ARGV[6])
local last, plain = 6 + n + m, KEYS[8]
local forever, left, seen, added, gone, names = {}, {}, {}, {0, 0}, {}, {}
for i = last + 1, #ARGV do forever[ARGV[i]] = true end
for i = 7, last do
  local id = ARGV[i]
  if taken(ARGV[1] .. id, ARGV[4]) then
    if not seen[id] then seen[id] = true; left[#left + 1] = id end
  else
    local target, known = forever[id] and plain or KEYS[1], false
    for k = 8, #KEYS do
      if KEYS[k] ~= target and redis.call('SISMEMBER', KEYS[k], id) == 1 then
        known = true; break
      end
    end
    if (forever[id] or not known) and redis.call('SADD', target, id) == 1 and not known then
      local kind = (i - 6 <= n) and 1 or 2
      added[kind] = added[kind] + 1
    end
    gone[#gone + 1] = id
    names[#names + 1] = ARGV[1] .. id; names[#names + 1] = ARGV[2] .. id
  end
end
for k = 3, 6 do drop_all('HDEL', KEYS[k], gone) end
drop_all('ZREM', KEYS[7], gone)
drop_all('DEL', nil, names)
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if added[1] > 0 then redis.call('HINCRBY', KEYS[2], 'done', added[1]) end
if added[2] > 0 then redis.call('HINCRBY', KEYS[2], 'skipped', added[2]) end
return left
"""

# KEYS: retry, stats, claim key, holders.  ARGV: owner, id, retry_at.  -1 when another owner holds
# the id.
_FAIL = """
if taken(KEYS[3], ARGV[1]) then return -1 end
local attempts = attempts_of(KEYS[1], ARGV[2]) + 1
redis.call('HSET', KEYS[1], ARGV[2], attempts .. '|' .. ARGV[3])
redis.call('HINCRBY', KEYS[2], 'failed', 1)
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[2])
return attempts
"""

# KEYS: retry, stats, dead, claim key, dead:at, holders, published, published:order.  ARGV: owner,
# id, JSON object without "attempts", failed_at.  -1 when another owner holds the id.
_DEAD = """
if taken(KEYS[4], ARGV[1]) then return -1 end
local attempts = attempts_of(KEYS[1], ARGV[2]) + 1
redis.call('HSET', KEYS[3], ARGV[2], '{"attempts":' .. attempts .. ',' .. string.sub(ARGV[3], 2))
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'dead', 1)
redis.call('HINCRBY', KEYS[2], 'failed', 1)
redis.call('DEL', KEYS[4])
redis.call('HDEL', KEYS[6], ARGV[2])
if redis.call('HDEL', KEYS[7], ARGV[2]) == 1 then redis.call('ZREM', KEYS[8], ARGV[2]) end
return attempts
"""

# KEYS: dead, retry, dead:at.  ARGV: id.
_RETRY_DEAD = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: dead, target done key, retry, progress key, dead:at.  ARGV: id, bucket ttl (0: none).
_DROP_DEAD = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
return 1
"""

# KEYS: holders.  ARGV: claim prefix, owner, ids...  Drops the leases `owner` holds (a clean
# hand-over: the next claim is no take-over); retry state and progress stay.
_RELEASE = """
for i = 3, #ARGV do
  local lease = ARGV[1] .. ARGV[i]
  if redis.call('GET', lease) == ARGV[2] then redis.call('DEL', lease) end
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 0
"""

# KEYS: fetch, fetch:token.  ARGV: owner, lease ms.  The token while `owner` holds the lease
# (renewed), a new one when it was free, -1 when another owner holds it.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2])) or redis.call('INCR', KEYS[2])
end
if holder then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

# KEYS: fetch.  ARGV: owner.
_RELEASE_FETCH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: dead, fetch:token, published, published:order, published:seq, done keys...
# ARGV: token, (id, row) pairs...  The count added, -1 when `token` is not the current one.
_PUBLISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local ids, rows = {}, {}
for i = 2, #ARGV, 2 do
  if rows[ARGV[i]] == nil then ids[#ids + 1] = ARGV[i]; rows[ARGV[i]] = ARGV[i + 1] end
end
ids = unfinished(ids, KEYS[1], 6)
local seq = tonumber(redis.call('GET', KEYS[5]) or '0')
local added = 0
for _, id in ipairs(ids) do
  if redis.call('HSETNX', KEYS[3], id, rows[id]) == 1 then
    added = added + 1
    redis.call('ZADD', KEYS[4], seq + added, id)
  end
end
if added > 0 then redis.call('SET', KEYS[5], seq + added) end
return added
"""

# KEYS: published, published:order, published:seq.  ARGV: after.  JSON: cursor, then id, row pairs.
_PUBLISHED = """
local last = redis.call('GET', KEYS[3]) or '0'
local after = ARGV[1]
if tonumber(after) > tonumber(last) then after = '0' end
local ids, out = redis.call('ZRANGE', KEYS[2], '(' .. after, '+inf', 'BYSCORE'), {tonumber(last)}
for s = 1, #ids, 1000 do
  local rows = redis.call('HMGET', KEYS[1], unpack(ids, s, math.min(s + 999, #ids)))
  for j = 1, #rows do
    if rows[j] then out[#out + 1] = ids[s + j - 1]; out[#out + 1] = rows[j] end
  end
end
return cjson.encode(out)
"""

# KEYS: published, published:order.  ARGV: ids...
_UNPUBLISH = """
for s = 1, #ARGV, 1000 do
  local chunk = {unpack(ARGV, s, math.min(s + 999, #ARGV))}
  redis.call('HDEL', KEYS[1], unpack(chunk))
  redis.call('ZREM', KEYS[2], unpack(chunk))
end
return 0
"""

# KEYS: optouts HASH, optouts:at ZSET, optouts:latest HASH, optouts:pending HASH.  ARGV: member
# "message_id|action", received_at, JSON, number.  The first write of a member wins, body and score
# together; a new member becomes its number's latest when received at the same time or after the
# current one.  The member's pending mark goes.
_OPTOUT = """
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  local cur = redis.call('HGET', KEYS[3], ARGV[4])
  local at = cur and redis.call('ZSCORE', KEYS[2], cur)
  if not at or tonumber(ARGV[2]) >= tonumber(at) then
    redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
  end
end
return 0
"""

# KEYS: optouts HASH, optouts:pending HASH.  ARGV: member, JSON.  1 when newly marked pending.
_PENDING = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""

# KEYS: optouts HASH, optouts:latest HASH.  ARGV: number.  The latest entry's JSON, or nil.
_LATEST = """
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then return false end
return redis.call('HGET', KEYS[1], member)
"""

# KEYS: optouts HASH, optouts:at ZSET.  ARGV: min score ("-inf" for all).  Bodies, oldest first.
_OPTOUTS = """
local unpack = table.unpack or unpack
local members, out = redis.call('ZRANGE', KEYS[2], ARGV[1], '+inf', 'BYSCORE'), {}
for s = 1, #members, 1000 do
  local got = redis.call('HMGET', KEYS[1], unpack(members, s, math.min(s + 999, #members)))
  for _, body in ipairs(got) do out[#out + 1] = body end
end
return out
"""

# KEYS: votes, counts, meta, seen (keys.py).  ARGV: voter, choice, policy, now, valid (1/0),
# vote id ("" for none), seen ttl.  Returns 1 when the counted vote changed.  `last` keeps the
# string the client sent: Lua's tostring() would round an epoch to 14 digits.
_VOTE = """
if ARGV[6] ~= '' then
  if redis.call('SADD', KEYS[4], ARGV[6]) == 0 then return 0 end
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end
if ARGV[5] ~= '1' then
  redis.call('HINCRBY', KEYS[3], 'rejected', 1)
  return 0
end
local last = redis.call('HGET', KEYS[3], 'last')
if not last or tonumber(ARGV[4]) > tonumber(last) then redis.call('HSET', KEYS[3], 'last', ARGV[4]) end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old == ARGV[2] or (old and ARGV[3] == 'first') then return 0 end
if old and redis.call('HINCRBY', KEYS[2], old, -1) <= 0 then redis.call('HDEL', KEYS[2], old) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return 1
"""

# KEYS: votes, counts, meta.  Returns voters, last, rejected, then choice, n pairs: one snapshot.
_RESULTS = """
local meta = redis.call('HMGET', KEYS[3], 'last', 'rejected')
local out = {redis.call('HLEN', KEYS[1]), meta[1] or '', meta[2] or '0'}
for _, x in ipairs(redis.call('HGETALL', KEYS[2])) do out[#out + 1] = x end
return out
"""


# KEYS: optouts HASH, optouts:at ZSET.  ARGV: start score ('+inf', or the cursor's or `until`'s,
# as a number), start exclusive ('1'/'0'), cursor score ('' for none), cursor member, since ('-inf'
# or a number), action ('' for any), limit, scan (0: no bound).  Walks the ZSET newest first BY RANK
# from the first entry at or below the start (ZCOUNT finds its rank), a chunk at a time, so a
# filtered page reads only the entries it passes over, at most `scan` of them.  Returns: '1' when
# it stopped early (page full or scan done) else '0', the last examined member and its score, then
# the bodies, newest first.
_OPTOUTS_PAGE = """
local unpack = table.unpack or unpack
local zset, limit, scan = KEYS[2], tonumber(ARGV[7]), tonumber(ARGV[8])
-- the rank of the first entry to look at: how many come before it, newest first
local rank = 0
if ARGV[1] ~= '+inf' then
  rank = redis.call('ZCOUNT', zset, (ARGV[2] == '1' and '' or '(') .. ARGV[1], '+inf')
end
local cscore = ARGV[3] ~= '' and tonumber(ARGV[3]) or nil
local since = tonumber(ARGV[5])
local suffix = ARGV[6] ~= '' and ('|' .. ARGV[6]) or nil
local members, examined, stopped, last, lastscore = {}, 0, '0', '', ''
while stopped == '0' do
  local got = redis.call('ZREVRANGE', zset, rank, rank + 999, 'WITHSCORES')
  if #got == 0 then break end
  rank = rank + #got / 2
  local ended = false
  for i = 1, #got, 2 do
    local m, score = got[i], tonumber(got[i + 1])
    if score < since then ended = true; break end
    if not (cscore ~= nil and score == cscore and m >= ARGV[4]) then
      examined = examined + 1
      last, lastscore = m, got[i + 1]
      if not suffix or string.sub(m, -#suffix) == suffix then members[#members + 1] = m end
      if #members >= limit or (scan > 0 and examined >= scan) then stopped = '1'; break end
    end
  end
  if ended then break end
end
local out = {stopped, last, lastscore}
if #members > 0 then
  for _, body in ipairs(redis.call('HMGET', KEYS[1], unpack(members))) do out[#out + 1] = body end
end
return out
"""

# KEYS: dead HASH, dead:at ZSET.  ARGV: offset, limit, oldest first ('1'/'0'), rules... (none:
# all).  Rebuilds the index when its size differs from the hash's (dead letters written by an
# older version, or removed by a path that does not keep the index), then reads one page by rank
# (or, with rules, walks it until the page is full).  Returns id, body pairs, newest failed first.
_DEAD_PAGE = """
local unpack = table.unpack or unpack
if redis.call('HLEN', KEYS[1]) ~= redis.call('ZCARD', KEYS[2]) then
  redis.call('DEL', KEYS[2])
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local ok, d = pcall(cjson.decode, all[i + 1])
    local at = ok and type(d) == 'table' and tonumber(d['failed_at']) or 0
    redis.call('ZADD', KEYS[2], string.format('%.17g', at), all[i])
  end
end
local first, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local range = ARGV[3] == '1' and 'ZRANGE' or 'ZREVRANGE'
if #ARGV == 3 then
  local ids = redis.call(range, KEYS[2], first, first + limit - 1)
  if #ids == 0 then return {} end
  local bodies, out = redis.call('HMGET', KEYS[1], unpack(ids)), {}
  for i, id in ipairs(ids) do
    if bodies[i] then out[#out + 1] = id; out[#out + 1] = bodies[i] end
  end
  return out
end
-- only the rules ARGV[4..]: walk the index in order, a chunk at a time, until the page is full
local want, out, rank, skip = {}, {}, 0, first
for i = 4, #ARGV do want[ARGV[i]] = true end
while #out < 2 * limit do
  local ids = redis.call(range, KEYS[2], rank, rank + 499)
  if #ids == 0 then break end
  rank = rank + #ids
  local bodies = redis.call('HMGET', KEYS[1], unpack(ids))
  for i, id in ipairs(ids) do
    local ok, d = false, nil
    if bodies[i] then ok, d = pcall(cjson.decode, bodies[i]) end
    if ok and type(d) == 'table' and type(d['rule']) == 'string' and want[d['rule']] then
      if skip > 0 then
        skip = skip - 1
      else
        out[#out + 1] = id; out[#out + 1] = bodies[i]
        if #out >= 2 * limit then break end
      end
    end
  end
end
return out
"""


def escape(value: str) -> str:
    """codec.escape for Redis: NUL is fine in a Redis string (and earlier versions wrote it as is)."""
    return _escape(value, nul=False)


def _s(value: bytes | str) -> str:
    """A string the store wrote through `escape` (codec.py), as it was given."""
    return unescape(value.decode() if isinstance(value, bytes) else value)


def _json(reply: bytes | str) -> Any:
    """A script's JSON list answer, its strings unescaped."""
    return [unescape(x) if type(x) is str and x[:1] == MARK else x for x in json.loads(reply)]


def _body(value: bytes | str) -> Any:
    """A stored JSON body, written by row_json."""
    return read_row(value)


class _Script:
    """A registered script whose string arguments go out through `escape` (codec.py), so any id,
    NUL and lone surrogates included, reaches Redis and Lua as valid UTF-8 and comes back exactly.
    Key names are built from escaped parts by the caller."""

    def __init__(self, store: RedisStore, source: str) -> None:
        self._store = store
        self._script = store.client.register_script(source)

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
        if not self._store.moved:
            await self._store.move_legacy_keys()
        # inline fast path (most ids are plain ASCII): this runs for every id of every batch
        args = [escape(a) if type(a) is str and (a[:1] == MARK or not a.isascii()) else a for a in args]
        return await self._script(keys=keys, args=args)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore(Store):
    """Wraps an existing `redis.asyncio.Redis` (or fakeredis) client; closes it only when it
    built it (`from_url`).  `clock` (epoch seconds) names the done buckets, so tests move time."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str = "default",
        horizon: timedelta | None = None,
        *,
        clock: Callable[[], float] = time.time,
        owns_client: bool = False,
    ) -> None:
        self.keys = Keys(namespace)
        self.namespace = namespace
        self.horizon = horizon
        self.client = client
        self._clock = clock
        self._owns_client = owns_client
        self._ttl = 0 if horizon is None else bucket_ttl(horizon)
        #: Keys written before the hash tag were looked for (once, before the first command).
        self.moved = False

        def script(source: str) -> _Script:
            return _Script(self, source)

        self._unfinished = script(_PRELUDE + _UNFINISHED)
        self._claim = script(_PRELUDE + _CLAIM)
        self._renew = script(_RENEW)
        self._record = script(_RECORD)
        self._finish = script(_PRELUDE + _FINISH)
        self._fail = script(_PRELUDE + _FAIL)
        self._dead = script(_PRELUDE + _DEAD)
        self._retry_dead = script(_RETRY_DEAD)
        self._drop_dead = script(_DROP_DEAD)
        self._release = script(_RELEASE)
        self._optout = script(_OPTOUT)
        self._optouts = script(_OPTOUTS)
        self._pending = script(_PENDING)
        self._latest = script(_LATEST)
        self._vote = script(_VOTE)
        self._results = script(_RESULTS)
        self._acquire = script(_ACQUIRE)
        self._release_fetch = script(_RELEASE_FETCH)
        self._publish = script(_PRELUDE + _PUBLISH)
        self._published = script(_PRELUDE + _PUBLISHED)
        self._unpublish = script(_PRELUDE + _UNPUBLISH)
        self._vote_ids_ttl = vote_ids_ttl(horizon)
        self._optouts_page = script(_OPTOUTS_PAGE)
        self._dead_page = script(_DEAD_PAGE)

    @classmethod
    def from_url(
        cls, url: str, namespace: str = "default", horizon: timedelta | None = None, **kw: Any
    ) -> RedisStore:
        """`redis://`, `rediss://` (one server) or `redis+cluster://`, `rediss+cluster://` (any node
        of a cluster); see redis_connect.connect."""
        return cls(connect(url), namespace, horizon, owns_client=True, **kw)

    def __repr__(self) -> str:
        """Scheme, host, port and db only: never the password."""
        return f"RedisStore({describe(self.client)}, namespace={self.namespace!r})"

    async def move_legacy_keys(self) -> int:
        """Move this namespace's keys from their names before the hash tag (`keyrouter:ns:...`) to
        today's, once per store, before its first command: data written by an older version is
        kept across the upgrade.  Returns how many keys moved."""
        moved = await move_legacy_keys(self.client, self.keys)
        self.moved = True
        return moved

    async def _ready(self) -> None:
        if not self.moved:
            await self.move_legacy_keys()

    def _done_keys(self) -> list[str]:
        return self.keys.done_keys(self.horizon, self._clock())

    async def unfinished(self, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        found = await self._unfinished(keys=[self.keys.dead, *self._done_keys()], args=list(ids))
        return _json(found)

    async def claim(
        self, ids: Sequence[str], owner: str, lease: float, now: float, *, limit: int | None = None
    ) -> list[Claimed]:
        if not ids or limit == 0:
            return []
        k = self.keys
        limit = -1 if limit is None else limit
        flat = _json(await self._claim(
            keys=[k.dead, k.retry, k.holders, *self._done_keys()],
            args=[k.claim_prefix, k.progress_prefix, owner, _ms(lease), repr(now), limit, *ids],
        ))
        out: list[Claimed] = []
        i = 0
        while i < len(flat):
            n = int(flat[i + 3])
            entries = frozenset(flat[i + 4 : i + 4 + n])
            out.append(Claimed(flat[i], int(flat[i + 1]), entries, flat[i + 2] == 1))
            i += 4 + n
        return out

    async def renew(self, ids: Sequence[str], owner: str, lease: float) -> list[str]:
        if not ids:
            return []
        k = self.keys
        kept = await self._renew(keys=[k.holders], args=[k.claim_prefix, owner, _ms(lease), *ids])
        return [_s(id) for id in kept]

    async def record_success(self, entries: Sequence[tuple[str, str]], owner: str) -> list[str]:
        if not entries:
            return []
        k = self.keys
        flat = [x for pair in entries for x in pair]
        lost = await self._record(keys=[k.holders], args=[k.claim_prefix, k.progress_prefix, owner, *flat])
        return [_s(id) for id in lost]

    async def finish(
        self,
        ids: Sequence[str],
        owner: str,
        *,
        skipped: Sequence[str] = (),
        forever: Sequence[str] = (),
    ) -> list[str]:
        if not ids and not skipped:
            return []
        k, now = self.keys, self._clock()
        target, done_keys = k.done_target(self.horizon, now), k.done_keys(self.horizon, now)
        args = [k.claim_prefix, k.progress_prefix, self._ttl, owner, len(ids), len(skipped)]
        left = await self._finish(
            keys=[target, k.stats, k.retry, k.dead, k.holders, k.published, k.published_order,
                  *done_keys],
            args=[*args, *ids, *skipped, *forever],
        )
        return [_s(id) for id in left]

    async def fail(self, id: str, owner: str, error: str, retry_at: float) -> int:
        k = self.keys
        keys = [k.retry, k.stats, k.claim(escape(id)), k.holders]
        return int(await self._fail(keys=keys, args=[owner, id, repr(retry_at)]))

    async def dead_letter(
        self, id: str, owner: str, error: str, *, rule: str | None, row: Mapping[str, Any], now: float
    ) -> bool:
        k = self.keys
        record = {"error": error, "failed_at": now, "rule": rule, "row": dict(row)}
        body = row_json(record)
        keys = [k.retry, k.stats, k.dead, k.claim(escape(id)), k.dead_by_time, k.holders, k.published,
                k.published_order]
        return int(await self._dead(keys=keys, args=[owner, id, body, repr(now)])) != -1

    async def dead_letters(self) -> list[DeadLetter]:
        await self._ready()
        raw = await self.client.hgetall(self.keys.dead)
        out = [_dead(_s(id), body) for id, body in raw.items()]
        return sorted(out, key=lambda d: (d.failed_at, d.id))

    async def retry_dead(self, id: str) -> bool:
        k = self.keys
        return bool(await self._retry_dead(keys=[k.dead, k.retry, k.dead_by_time], args=[id]))

    async def drop_dead(self, id: str) -> bool:
        k = self.keys
        keys = [k.dead, k.done_target(self.horizon, self._clock()), k.retry, k.progress(escape(id)),
                k.dead_by_time]
        return bool(await self._drop_dead(keys=keys, args=[id, self._ttl]))

    async def counts(self) -> dict[str, int]:
        await self._ready()
        raw = await self.client.hgetall(self.keys.stats)
        return {**dict.fromkeys(COUNTERS, 0), **{_s(k): int(v) for k, v in raw.items()}}

    async def release(self, ids: Sequence[str], owner: str) -> None:
        if ids:
            await self._release(keys=[self.keys.holders], args=[self.keys.claim_prefix, owner, *ids])

    async def acquire_fetch(self, owner: str, lease: float, now: float) -> int | None:
        k = self.keys
        token = int(await self._acquire(keys=[k.fetch, k.fetch_token], args=[owner, _ms(lease)]))
        return None if token < 0 else token

    async def release_fetch(self, owner: str) -> None:
        await self._release_fetch(keys=[self.keys.fetch], args=[owner])

    async def publish(self, rows: Sequence[tuple[str, str]], token: int) -> int:
        k = self.keys
        keys = [k.dead, k.fetch_token, k.published, k.published_order, k.published_seq]
        flat = [x for pair in rows for x in pair]
        return int(await self._publish(keys=[*keys, *self._done_keys()], args=[str(token), *flat]))

    async def published(self, after: int) -> tuple[int, list[tuple[str, str]]]:
        k = self.keys
        keys = [k.published, k.published_order, k.published_seq]
        cursor, *flat = _json(await self._published(keys=keys, args=[str(int(after))]))
        return int(cursor), list(zip(flat[::2], flat[1::2], strict=True))

    async def unpublish(self, ids: Sequence[str]) -> None:
        if ids:
            await self._unpublish(keys=[self.keys.published, self.keys.published_order], args=ids)

    async def record_optout(self, entry: OptOut) -> None:
        k = self.keys
        body = row_json(asdict(entry))
        member = f"{entry.message_id}|{entry.action}"
        await self._optout(
            keys=[k.optouts, k.optouts_by_time, k.optouts_latest, k.optouts_pending],
            args=[member, repr(entry.received_at), body, entry.number],
        )

    async def latest_optout(self, number: str) -> OptOut | None:
        k = self.keys
        body = await self._latest(keys=[k.optouts, k.optouts_latest], args=[number])
        return None if body is None else OptOut(**_body(body))

    async def optouts(self, since: float | None = None) -> list[OptOut]:
        k = self.keys
        low = "-inf" if since is None else repr(since)
        bodies = await self._optouts(keys=[k.optouts, k.optouts_by_time], args=[low])
        return [OptOut(**_body(body)) for body in bodies]

    async def mark_optout_pending(self, entry: OptOut) -> bool:
        k = self.keys
        body = row_json(asdict(entry))
        member = f"{entry.message_id}|{entry.action}"
        return bool(await self._pending(keys=[k.optouts, k.optouts_pending], args=[member, body]))

    async def pending_optouts(self) -> list[OptOut]:
        await self._ready()
        found = await self.client.hgetall(self.keys.optouts_pending)
        entries = [(_s(m), OptOut(**_body(b))) for m, b in found.items()]
        return [e for _, e in sorted(entries, key=lambda me: (me[1].received_at, escape(me[0]).encode()))]

    # -- paginated reads (the dashboard) --------------------------------------------------------

    async def optouts_scan(
        self,
        *,
        before: LedgerCursor | None = None,
        limit: int = 50,
        scan: int | None = None,
        since: float | None = None,
        until: float | None = None,
        action: str | None = None,
    ) -> tuple[list[OptOut], LedgerCursor | None]:
        if limit <= 0:
            return [], None
        start, exclusive, cscore, cmember = "+inf", "0", "", ""
        if until is not None:
            start, exclusive = repr(until), "1"
        if before is not None and (until is None or before[0] < until):
            start, exclusive = repr(before[0]), "0"
            cscore, cmember = repr(before[0]), f"{before[1]}|{before[2]}"
        low = "-inf" if since is None else repr(since)
        k = self.keys
        stopped, last, score, *bodies = await self._optouts_page(
            keys=[k.optouts, k.optouts_by_time],
            args=[start, exclusive, cscore, cmember, low, action or "", limit, max(0, scan or 0)],
        )
        found = [OptOut(**_body(body)) for body in bodies if body is not None]
        if _s(stopped) != "1":
            return found, None
        message_id, _, act = _s(last).rpartition("|")
        return found, (float(score), message_id, act)

    async def dead_letters_page(self, offset: int = 0, limit: int = 50,
                                rules: Sequence[str] | None = None,
                                oldest_first: bool = False) -> list[DeadLetter]:
        if limit <= 0 or (rules is not None and not rules):
            return []
        flat = await self._dead_page(keys=[self.keys.dead, self.keys.dead_by_time],
                                     args=[max(0, offset), limit, int(oldest_first),
                                           # as the bodies hold them (row_json): bytes, not re-escaped
                                           *(_escape(r).encode() for r in rules or ())])
        return [_dead(_s(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

    async def optouts_recorded(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not keys:
            return set()
        pairs = [(str(m), str(a)) for m, a in keys]
        await self._ready()
        got = await self.client.hmget(self.keys.optouts, [escape(f"{m}|{a}") for m, a in pairs])
        return {pair for pair, body in zip(pairs, got, strict=True) if body is not None}

    async def get_dead_letter(self, id: str) -> DeadLetter | None:
        await self._ready()
        body = await self.client.hget(self.keys.dead, escape(id))
        return None if body is None else _dead(id, body)

    async def dead_letter_count(self) -> int:
        await self._ready()
        return int(await self.client.hlen(self.keys.dead))

    async def vote(
        self,
        survey: str,
        voter: str,
        choice: str,
        *,
        policy: str,
        now: float,
        valid: bool = True,
        vote_id: str = "",
    ) -> bool:
        check_policy(policy)
        args = [voter, choice, policy, repr(now), int(valid), vote_id, self._vote_ids_ttl]
        return bool(await self._vote(keys=self.keys.survey(escape(survey)), args=args))

    async def survey_results(self, survey: str) -> SurveyResults:
        voters, last, rejected, *pairs = await self._results(keys=self.keys.survey(escape(survey))[:3])
        votes = {_s(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        return SurveyResults(survey, votes, int(voters), float(last) if last else None, int(rejected))

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def _dead(id: str, body: bytes | str) -> DeadLetter:
    d = _body(body)
    return DeadLetter(id, d["error"], d["attempts"], d["failed_at"], d["rule"], d["row"])
