"""Redis store: many workers, one Redis.  Every batch operation is one Lua script, so it is atomic
and costs one round trip whatever the number of ids.  Key names live in `keys.py`.

Scripts build `claim:<id>` and `progress:<id>` names from prefixes passed as ARGV; every key of a
namespace shares one hash tag (keys.py), so this holds on a Redis Cluster too, where each script
declares at least one key for the client to route it by.  Done buckets are named from the store's
clock on the client side and passed as KEYS, so tests can move time and no script depends on the
server's clock.  Connecting, and moving keys written before the hash tag: `redis_connect.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from keyrouter.store import redis_lua as lua
from keyrouter.store import redis_lua_ledger as ledger_lua
from keyrouter.store.activity import ROUTED_ADD, ROUTED_READ, RedisActivity
from keyrouter.store.base import (
    DECISIONS,
    Claimed,
    DeadLetter,
    LedgerCursor,
    OptOut,
    Store,
    SurveyResults,
)
from keyrouter.store.codec import MARK, loads, read_row, row_json, unescape
from keyrouter.store.codec import escape as _escape
from keyrouter.store.conversations import SAVE as CONV_SAVE
from keyrouter.store.conversations import RedisConversations
from keyrouter.store.keys import Keys, bucket_ttl, check_policy, vote_ids_ttl
from keyrouter.store.reconciled import SAVE_ROWS, RedisReconciled
from keyrouter.store.redis_connect import connect, describe, move_legacy_keys
from keyrouter.store.retried import retried_row_json

COUNTERS = ("done", "skipped", "dead", "failed")

def escape(value: str) -> str:
    """codec.escape for Redis: NUL is fine in a Redis string (and earlier versions wrote it as is)."""
    return _escape(value, nul=False)


def _s(value: bytes | str) -> str:
    """A string the store wrote through `escape` (codec.py), as it was given."""
    return unescape(value.decode() if isinstance(value, bytes) else value)


def _json(reply: bytes | str) -> list[Any]:
    """A script's JSON list answer, its strings unescaped."""
    return [unescape(x) if type(x) is str and x[:1] == MARK else x for x in loads(reply)]


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


class RedisStore(RedisActivity, RedisConversations, RedisReconciled, Store):
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

        def script(source: str) -> _Script:
            return _Script(self, source)

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
        self._optout = script(ledger_lua.OPTOUT)
        self._optouts = script(ledger_lua.OPTOUTS)
        self._pending = script(ledger_lua.PENDING)
        self._latest = script(ledger_lua.LATEST)
        self._vote = script(ledger_lua.VOTE)
        self._results = script(ledger_lua.RESULTS)
        self._acquire = script(lua.ACQUIRE)
        self._release_fetch = script(lua.RELEASE_FETCH)
        self._publish = script(lua.PRELUDE + lua.PUBLISH)
        self._published = script(lua.PRELUDE + lua.PUBLISHED)
        self._unpublish = script(lua.PRELUDE + lua.UNPUBLISH)
        self._vote_ids_ttl = vote_ids_ttl(horizon)
        self._optouts_page = script(ledger_lua.OPTOUTS_PAGE)
        self._dead_page = script(ledger_lua.DEAD_PAGE)
        self._routed_add, self._routed_read = script(ROUTED_ADD), script(ROUTED_READ)
        self._conv_save = script(CONV_SAVE)
        self._save_rows = script(SAVE_ROWS)

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
            args=[member, repr(entry.received_at), body, entry.number,
                  "1" if entry.action in DECISIONS else "0"],
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
