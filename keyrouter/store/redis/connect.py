"""Connecting the Redis store: a single server or a Cluster from one URL, a repr without secrets,
what each server says about persistence, and the one-time move of keys written before the
namespace hash tag.

URLs: `redis://` and `rediss://` name one server (db from the path); `redis+cluster://` and
`rediss+cluster://` name any node of a Redis Cluster (db 0 only; the client discovers the others).
Query options as redis-py reads them, e.g. `?max_connections=200`.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from keyrouter.store.keys import Keys
from keyrouter.store.values import ServerFacts

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: Connections per node of a cluster: the cluster client raises, rather than waits, past its cap.
CLUSTER_MAX_CONNECTIONS = 1000


def connect(url: str) -> aioredis.Redis | RedisCluster:
    """A client for `url`: a pool that waits for a free connection on a single server (redis-py's
    default pool raises MaxConnectionsError once 100 calls are in flight; `?max_connections=` and
    `?timeout=` override), a cluster client for `redis+cluster://`."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() in CLUSTER_SCHEMES:
        plain = scheme.lower().removesuffix("+cluster")
        kw: dict[str, Any] = {}
        if "max_connections=" not in rest:
            kw["max_connections"] = CLUSTER_MAX_CONNECTIONS
        return RedisCluster.from_url(f"{plain}://{rest}", **kw)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=100, timeout=60)
    return aioredis.Redis.from_pool(pool)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def describe(client: Any) -> str:
    """Scheme, host, port and db only: never the password."""
    if isinstance(client, RedisCluster):
        tls = issubclass(client.connection_kwargs.get("connection_class", object),
                         aioredis.SSLConnection)
        nodes = getattr(client.nodes_manager, "startup_nodes", None) or {}
        where = next(iter(nodes), "?") if isinstance(nodes, dict) else "?"
        return f"{'rediss' if tls else 'redis'}+cluster://{where}"
    pool = getattr(client, "connection_pool", None)
    if pool is None:  # some other client object: say nothing about where it points
        return "redis://?"
    kw = pool.connection_kwargs
    scheme = "rediss" if issubclass(pool.connection_class, aioredis.SSLConnection) else "redis"
    where = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', 6379)}"
    return f"{scheme}://{where}/{kw.get('db', 0)}"


# KEYS: old key, new key.  ARGV: '1' when the key is a counter HASH (stats): fields add up.
# Renames when the new name is free (keeps the TTL), else merges the old into the new and drops
# the old: SET and ZSET members are added, HASH fields kept where the new key has them (counters
# add up), a STRING (a lease or a counter already in use) stays as the new key has it.
_MOVE = """
local unpack = table.unpack or unpack
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  return 1
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'set' then
  local members = redis.call('SMEMBERS', KEYS[1])
  for s = 1, #members, 1000 do
    redis.call('SADD', KEYS[2], unpack(members, s, math.min(s + 999, #members)))
  end
elseif kind == 'hash' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[2], all[i], all[i + 1])
    else redis.call('HSETNX', KEYS[2], all[i], all[i + 1]) end
  end
elseif kind == 'zset' then
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do redis.call('ZADD', KEYS[2], 'NX', all[i + 1], all[i]) end
end
redis.call('DEL', KEYS[1])
return 2
"""


async def move_legacy_keys(client: Any, keys: Keys) -> int:
    """Move the namespace's keys from `keyrouter:ns:` to `keyrouter:{ns}:` (one SCAN of the
    server, one script per key found); returns how many moved.  Safe to run from several workers
    at once and again later: a key already moved is simply not found.  Not on a cluster: versions
    before the hash tag could not run on one, so a cluster holds no old keys."""
    if is_cluster(client):
        return 0
    move = client.register_script(_MOVE)
    old = keys.legacy_prefix.encode()
    moved = 0
    async for key in client.scan_iter(match=old + b"*", count=1000):
        name = key if isinstance(key, bytes) else key.encode()
        new = keys.prefix.encode() + name[len(old):]
        counters = "1" if new == keys.stats.encode() else "0"
        moved += bool(await move(keys=[name, new], args=[counters]))
    return moved


async def server_facts(client: Any) -> tuple[ServerFacts, ...]:
    """What the server, or every primary of a cluster, says about persistence and eviction."""
    primaries = client.get_primaries() if is_cluster(client) else []
    return tuple([await _facts(client, node) for node in primaries or [None]])


async def _facts(client: Any, node: Any) -> ServerFacts:
    extra = {"target_nodes": node} if node is not None else {}
    name = node.name if node is not None else ""
    try:
        save = (await client.config_get("save", **extra)).get("save", "")
        config_error = ""
    except Exception as exc:  # CONFIG is often disabled on managed Redis
        save, config_error = None, type(exc).__name__
    try:
        info = await client.info(**extra)
    except Exception as exc:  # INFO refused (renamed away): say so, never raise
        return ServerFacts(name, f"{type(exc).__name__}: {exc}", config_error=config_error, save=save)
    return ServerFacts(name, "", str(info.get("redis_version", "unknown")),
                       str(info.get("aof_enabled", 0)) in ("1", "True"),
                       str(info.get("maxmemory_policy", "unknown")), config_error, save)
