"""The Lua scripts of the Redis store for the opt-out ledger, survey votes and the dashboard's
paged reads, and `claim_decision`'s compare-and-set.  Scripts that need `unpack` define it
themselves (Lua 5.1 and 5.4)."""

from keyrouter.store.redis.lua import PRELUDE

# A ledger entry's place in keyrouter/ordering.py's order (`place` of its JSON), and `compare`,
# the same rule: both dated and different dates by date, else numeric ids by number, else id text.
ORDER = """
local function place(body)
  local doc = cjson.decode(body)
  local date = doc['received_at']
  if doc['dated'] == false then date = nil end
  return date, tostring(doc['message_id'])
end
local function numeric(id)
  if string.match(id, '^%d+$') then return (string.gsub(id, '^0+', '')) end
  return nil
end
local function compare(ad, aid, bd, bid)
  if ad and bd and ad ~= bd then if ad < bd then return -1 else return 1 end end
  local na, nb = numeric(aid), numeric(bid)
  if na and nb and na ~= nb then
    if #na ~= #nb then if #na < #nb then return -1 else return 1 end end
    if na < nb then return -1 else return 1 end
  end
  if aid ~= bid then if aid < bid then return -1 else return 1 end end
  return 0
end
"""

# KEYS: optouts HASH, optouts:at ZSET, optouts:latest HASH, optouts:pending HASH.  ARGV: member
# "message_id|action", received_at, JSON, number, "1" when the action decides (base.DECISIONS).
# The first write of a member wins, body and score together; a new deciding member becomes its
# number's latest when it comes at the same place or after the current one in the order (ORDER).
# The member's pending mark goes.
OPTOUT = ORDER + """
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  if ARGV[5] == '1' then
    local cur = redis.call('HGET', KEYS[3], ARGV[4])
    local body = cur and redis.call('HGET', KEYS[1], cur)
    local newer = true
    if body then
      local ad, aid = place(ARGV[3])
      local bd, bid = place(body)
      newer = compare(ad, aid, bd, bid) >= 0
    end
    if newer then
      redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
    end
  end
end
return 0
"""

# KEYS: optouts HASH, optouts:pending HASH.  ARGV: member, JSON.  1 when newly marked pending.
PENDING = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""

# KEYS: optouts HASH, optouts:latest HASH.  ARGV: number.  The latest entry's JSON, or nil.
LATEST = """
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then return false end
return redis.call('HGET', KEYS[1], member)
"""

# KEYS: optouts HASH, optouts:at ZSET.  ARGV: min score ("-inf" for all).  Bodies, oldest first.
OPTOUTS = """
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
VOTE = """
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
RESULTS = """
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
OPTOUTS_PAGE = """
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
DEAD_PAGE = """
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
