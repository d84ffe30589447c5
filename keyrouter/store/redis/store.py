"""Redis store: many workers, one Redis.  Every batch operation is one Lua script, so it is atomic
and costs one round trip whatever the number of ids.  Key names live in `keys.py`.

Scripts build `claim:<id>` and `progress:<id>` names from prefixes passed as ARGV; every key of a
namespace shares one hash tag (keys.py), so this holds on a Redis Cluster too, where each script
declares at least one key for the client to route it by.  Done buckets are named from the store's
clock on the client side and passed as KEYS, so tests can move time and no script depends on the
server's clock.  Connecting, and moving keys written before the hash tag: `redis/connect.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, MovedError

from keyrouter.store.assembled import Assembled
from keyrouter.store.base import (
    Claimed,
    DeadLetter,
    Description,
    Health,
    Kind,
)
from keyrouter.store.choice import redact_store_url
from keyrouter.store.codec import MARK, loads, row_json
from keyrouter.store.codec import escape as _escape
from keyrouter.store.keys import Keys, bucket_ttl, vote_ids_ttl
from keyrouter.store.probe import probe
from keyrouter.store.redis import lua as lua
from keyrouter.store.redis import lua_ledger as ledger_lua
from keyrouter.store.redis.connect import connect, is_cluster, move_legacy_keys, server_facts
from keyrouter.store.redis.connect import describe as where
from keyrouter.store.redis.ledger import RedisLedger
from keyrouter.store.redis.parts import RedisActivity, RedisConversations, RedisReconciled
from keyrouter.store.redis.script import (
    Script,
    escape,
    id_list,
    json_reply,
    millis,
    stored_body,
    unescaped,
)
from keyrouter.store.retried import retried_row_json
from keyrouter.store.values import COUNTERS


class RedisStore(Assembled):
    """Wraps an existing `redis.asyncio.Redis` (or fakeredis) client; closes it only when it
    built it (`from_url`).  `clock` (epoch seconds) names the done buckets, so tests move time."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
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

        def script(source: str) -> Script:
            return Script(self, source)

        self._unfinished = script(lua.PRELUDE + lua.UNFINISHED)
        self._claim = script(lua.PRELUDE + lua.CLAIM)
        self._renew = script(lua.RENEW)
        self._record = script(lua.RECORD)
        self._finish = script(lua.PRELUDE + lua.FINISH)
        self._fail = script(lua.PRELUDE + lua.FAIL)
        self._dead = script(lua.PRELUDE + lua.DEAD)
        self._retry_dead = script(lua.RETRY_DEAD)
        self._drop_dead = script(lua.DROP_DEAD)
        self._release = script(lua.RELEASE)
        self._acquire = script(lua.ACQUIRE)
        self._release_fetch = script(lua.RELEASE_FETCH)
        self._publish = script(lua.PRELUDE + lua.PUBLISH)
        self._published = script(lua.PRELUDE + lua.PUBLISHED)
        self._unpublish = script(lua.PRELUDE + lua.UNPUBLISH)
        self._dead_page = script(ledger_lua.DEAD_PAGE)
        keys = self.keys
        super().__init__(RedisActivity(client, keys, self._ready, script, clock),
                         RedisConversations(client, keys, self._ready, script),
                         RedisReconciled(client, keys, self._ready, script),
                         RedisLedger(client, keys, self._ready, script, vote_ids_ttl(horizon), clock,
                                     self._done_keys))

    @classmethod
    def from_url(
        cls, url: str, namespace: str = "default", horizon: timedelta | None = None, **kw: Any
    ) -> RedisStore:
        """`redis://`, `rediss://` (one server) or `redis+cluster://`, `rediss+cluster://` (any node
        of a cluster); see redis/connect.py."""
        return cls(connect(url), namespace, horizon, owns_client=True, **kw)

    def __repr__(self) -> str:
        """Scheme, host, port and db only: never the password."""
        return f"RedisStore({where(self.client)}, namespace={self.namespace!r})"

    async def health(self, timeout: float = 10.0) -> Health:
        found = await probe(self.counts, timeout, (MovedError, AskError))
        if not found.ok:
            return found
        try:
            servers = await asyncio.wait_for(server_facts(self.client), timeout)
        except Exception as exc:  # answered a read, then not INFO or CONFIG in time
            return Health(False, found.latency_ms, type(exc).__name__)
        return replace(found, servers=servers)

    def describe(self) -> Description:
        kind: Kind = "redis-cluster" if is_cluster(self.client) else "redis"
        return Description(kind, redact_store_url(where(self.client)), self.namespace, persistent=True)

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
        found = await self._unfinished(keys=[self.keys.dead, *self._done_keys()], args=[id_list(ids)])
        return json_reply(found)

    async def claim(
        self, ids: Sequence[str], owner: str, lease: float, now: float, *, limit: int | None = None
    ) -> list[Claimed]:
        if not ids or limit == 0:
            return []
        k = self.keys
        limit = -1 if limit is None else limit
        claimed, flat = loads(await self._claim(
            keys=[k.dead, k.retry, k.holders, *self._done_keys()],
            args=[k.claim_prefix, k.progress_prefix, owner, millis(lease), repr(now), limit, id_list(ids)],
        ))
        known: dict[str, Claimed] = {}
        i = 0
        while i < len(flat):  # the claims that are not first attempts
            n = int(flat[i + 3])
            id = unescaped(flat[i])
            known[id] = Claimed(id, int(flat[i + 1]), frozenset(map(unescaped, flat[i + 4 : i + 4 + n])),
                                flat[i + 2] == 1)
            i += 4 + n
        out: list[Claimed] = []
        for id in claimed:
            if id[:1] == MARK:
                id = unescaped(id)
            out.append(known.get(id) or Claimed(id))
        return out

    async def renew(self, ids: Sequence[str], owner: str, lease: float) -> list[str]:
        if not ids:
            return []
        k = self.keys
        kept = await self._renew(keys=[k.holders], args=[k.claim_prefix, owner, millis(lease), id_list(ids)])
        return [unescaped(id) for id in kept]

    async def record_success(self, entries: Sequence[tuple[str, str]], owner: str) -> list[str]:
        if not entries:
            return []
        k = self.keys
        flat = [x for pair in entries for x in pair]
        lost = await self._record(keys=[k.holders], args=[k.claim_prefix, k.progress_prefix, owner, *flat])
        return [unescaped(id) for id in lost]

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
        left = await self._finish(
            keys=[target, k.stats, k.retry, k.dead, k.holders, k.published, k.published_order,
                  *done_keys],
            args=[k.claim_prefix, k.progress_prefix, self._ttl, owner, id_list(ids),
                  id_list(skipped), id_list(forever)],
        )
        return [unescaped(id) for id in left]

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
        out = [_dead(unescaped(id), body) for id, body in raw.items()]
        return sorted(out, key=lambda d: (d.failed_at, d.id))

    async def retry_dead(self, id: str) -> bool:
        letter = await self.get_dead_letter(id)
        if letter is None:
            return False
        k = self.keys
        keys = [k.dead, k.retry, k.dead_by_time, k.published, k.published_order, k.published_seq]
        # run again from its row, whatever the inbox holds (store/retried.py)
        return bool(await self._retry_dead(keys=keys, args=[id, retried_row_json(letter.row)]))

    async def drop_dead(self, id: str) -> bool:
        k = self.keys
        keys = [k.dead, k.done_target(self.horizon, self._clock()), k.retry, k.progress(escape(id)),
                k.dead_by_time]
        return bool(await self._drop_dead(keys=keys, args=[id, self._ttl]))

    async def counts(self) -> dict[str, int]:
        await self._ready()
        raw = await self.client.hgetall(self.keys.stats)
        return {**dict.fromkeys(COUNTERS, 0), **{unescaped(k): int(v) for k, v in raw.items()}}

    async def release(self, ids: Sequence[str], owner: str) -> None:
        if ids:
            await self._release(keys=[self.keys.holders], args=[self.keys.claim_prefix, owner, *ids])

    async def acquire_fetch(self, owner: str, lease: float, now: float) -> int | None:
        k = self.keys
        token = int(await self._acquire(keys=[k.fetch, k.fetch_token], args=[owner, millis(lease)]))
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
        cursor, *flat = json_reply(await self._published(keys=keys, args=[str(int(after))]))
        return int(cursor), list(zip(flat[::2], flat[1::2], strict=True))

    async def unpublish(self, ids: Sequence[str]) -> None:
        if ids:
            await self._unpublish(keys=[self.keys.published, self.keys.published_order], args=ids)

    # -- dead-letter pages (the dashboard) ------------------------------------------------------

    async def dead_letters_page(self, offset: int = 0, limit: int = 50,
                                rules: Sequence[str] | None = None,
                                oldest_first: bool = False) -> list[DeadLetter]:
        if limit <= 0 or (rules is not None and not rules):
            return []
        flat = await self._dead_page(keys=[self.keys.dead, self.keys.dead_by_time],
                                     args=[max(0, offset), limit, int(oldest_first),
                                           # as the bodies hold them (row_json): bytes, not re-escaped
                                           *(_escape(r).encode() for r in rules or ())])
        return [_dead(unescaped(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

    async def get_dead_letter(self, id: str) -> DeadLetter | None:
        await self._ready()
        body = await self.client.hget(self.keys.dead, escape(id))
        return None if body is None else _dead(id, body)

    async def dead_letter_count(self) -> int:
        await self._ready()
        return int(await self.client.hlen(self.keys.dead))

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def _dead(id: str, body: bytes | str) -> DeadLetter:
    d = stored_body(body)
    return DeadLetter(id, d["error"], d["attempts"], d["failed_at"], d["rule"], d["row"])
