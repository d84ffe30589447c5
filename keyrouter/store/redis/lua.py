"""The Lua scripts of the Redis store that process messages: unfinished, claim, progress, finish,
failures, dead letters, the fetch lease and the shared rows.  Each runs atomically in one round
trip; KEYS and ARGV are listed above each.  The store (store.py) registers and calls them."""

# unfinished(ids, dead, first): the ids (input order) in no done SET KEYS[first..] and not in the
# dead HASH.  SMISMEMBER checks a chunk of ids per call; unpack() is capped by Lua's C stack.
PRELUDE = """
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

# KEYS: dead, done keys...  ARGV: ids (a JSON array).
UNFINISHED = "return as_json(unfinished(cjson.decode(ARGV[1]), KEYS[1], 2))"

# KEYS: dead, retry, holders, done keys...  ARGV: claim prefix, progress prefix, owner, lease ms,
# now, limit (-1: none), ids (a JSON array).  Returns JSON: [the claimed ids, then a flat list of
# id, attempts, taken over (0/1), #succeeded, succeeded entries... for each claimed id that has any
# of those] (most claims are first attempts: nothing to say about them).  `holders` remembers each
# id's last owner after its lease key expired, so a claim over a dead worker's lease is seen.
CLAIM = """
local ids, seen = {}, {}
for _, id in ipairs(cjson.decode(ARGV[7])) do
  if not seen[id] then seen[id] = true; ids[#ids + 1] = id end
end
ids = unfinished(ids, KEYS[1], 4)
local now, limit, claimed, out, n = tonumber(ARGV[5]), tonumber(ARGV[6]), {}, {}, 0
if limit < 0 then limit = #ids end
local retries = redis.call('EXISTS', KEYS[2]) == 1
local held = redis.call('EXISTS', KEYS[3]) == 1
for s = 1, #ids, 1000 do
  if n >= limit then break end
  local chunk, leases, progress = {}, {}, {}
  for j = s, math.min(s + 999, #ids) do
    chunk[#chunk + 1] = ids[j]; leases[#leases + 1] = ARGV[1] .. ids[j]
    progress[#progress + 1] = ARGV[2] .. ids[j]
  end
  local holders = redis.call('MGET', unpack(leases))
  -- most claims are first attempts: one EXISTS for the chunk instead of SMEMBERS for each
  local any_progress = redis.call('EXISTS', unpack(progress)) > 0
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
      local done = any_progress and redis.call('SMEMBERS', progress[j]) or {}
      claimed[#claimed + 1] = id
      if attempts > 0 or over == 1 or #done > 0 then
        out[#out + 1] = id; out[#out + 1] = attempts; out[#out + 1] = over; out[#out + 1] = #done
        for _, e in ipairs(done) do out[#out + 1] = e end
      end
      n = n + 1
    end
  end
  if #hold > 0 then redis.call('HSET', KEYS[3], unpack(hold)) end
end
return '[' .. as_json(claimed) .. ',' .. as_json(out) .. ']'
"""

# KEYS: any key of the namespace (Cluster routes by it).  ARGV: claim prefix, owner, lease ms, ids
# (a JSON array).
RENEW = """
local out, seen = {}, {}
for _, id in ipairs(cjson.decode(ARGV[4])) do
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
RECORD = """
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
# plain done SET first).  ARGV: claim prefix, progress prefix, bucket ttl (0: none), owner, done
# ids, skipped ids, forever ids (each a JSON array).  Returns the ids left alone (another owner's).
# A `forever` id goes in the plain done SET, even when an expiring bucket already holds it.
FINISH = """
local plain, owner = KEYS[8], ARGV[4]
local forever, left, seen, added, gone, names = {}, {}, {}, {0, 0}, {}, {}
for _, id in ipairs(cjson.decode(ARGV[7])) do forever[id] = true end
-- the ids a done key other than `target` holds already
local function known_elsewhere(ids, target)
  local known = {}
  for k = 8, #KEYS do
    if KEYS[k] ~= target and redis.call('EXISTS', KEYS[k]) == 1 then
      local hit = redis.call('SMISMEMBER', KEYS[k], unpack(ids))
      for j = 1, #hit do
        if hit[j] == 1 then known[ids[j]] = true end
      end
    end
  end
  return known
end
-- marks `ids` done in `target` and counts the new ones as `kind`; one known elsewhere is not
-- counted, and is added only when `always` (a `forever` id goes in the plain SET regardless)
local function mark(ids, target, kind, always)
  if #ids == 0 then return end
  local known, counted, again = known_elsewhere(ids, target), {}, {}
  for _, id in ipairs(ids) do
    if not known[id] then counted[#counted + 1] = id elseif always then again[#again + 1] = id end
  end
  if #counted > 0 then added[kind] = added[kind] + redis.call('SADD', target, unpack(counted)) end
  if #again > 0 then redis.call('SADD', target, unpack(again)) end
end
-- a thousand ids a step: another owner's live lease leaves its id alone
local function finish(list, kind)
  for s = 1, #list, 1000 do
    local chunk, leases = {}, {}
    for j = s, math.min(s + 999, #list) do
      chunk[#chunk + 1] = list[j]; leases[#leases + 1] = ARGV[1] .. list[j]
    end
    local holders = redis.call('MGET', unpack(leases))
    local mine, kept = {}, {}
    for j, id in ipairs(chunk) do
      if holders[j] and holders[j] ~= owner then
        if not seen[id] then seen[id] = true; left[#left + 1] = id end
      else
        if forever[id] then kept[#kept + 1] = id else mine[#mine + 1] = id end
        gone[#gone + 1] = id
        names[#names + 1] = leases[j]; names[#names + 1] = ARGV[2] .. id
      end
    end
    mark(mine, KEYS[1], kind, false)
    mark(kept, plain, kind, true)
  end
end
finish(cjson.decode(ARGV[5]), 1)
finish(cjson.decode(ARGV[6]), 2)
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
FAIL = """
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
DEAD = """
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

# KEYS: dead, retry, dead:at, published, published:order, published:seq.  ARGV: id, row JSON.
# The id is unfinished again and its row shared (unless it already is), in one step.
RETRY_DEAD = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[5], redis.call('INCR', KEYS[6]), ARGV[1])
end
return 1
"""

# KEYS: dead, target done key, retry, progress key, dead:at.  ARGV: id, bucket ttl (0: none).
DROP_DEAD = """
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
RELEASE = """
for i = 3, #ARGV do
  local lease = ARGV[1] .. ARGV[i]
  if redis.call('GET', lease) == ARGV[2] then redis.call('DEL', lease) end
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 0
"""

# KEYS: fetch, fetch:token.  ARGV: owner, lease ms.  The token while `owner` holds the lease
# (renewed), a new one when it was free, -1 when another owner holds it.
ACQUIRE = """
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
RELEASE_FETCH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: dead, fetch:token, published, published:order, published:seq, done keys...
# ARGV: token, (id, row) pairs...  The count added, -1 when `token` is not the current one.
PUBLISH = """
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
PUBLISHED = """
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
UNPUBLISH = """
for s = 1, #ARGV, 1000 do
  local chunk = {unpack(ARGV, s, math.min(s + 999, #ARGV))}
  redis.call('HDEL', KEYS[1], unpack(chunk))
  redis.call('ZREM', KEYS[2], unpack(chunk))
end
return 0
"""
