"""The store's reconciliation state, on every backend (docs/reconciliation.md): one small JSON
document per namespace (the last run, the incremental watermark) and the synthetic rows of
opt-outs found only on the provider's blacklist, kept until their message is finished so the
next worker poll or reconcile can run their effects again.  Each call is one round trip; the
backends mix these classes in."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keyrouter.store.codec import escape, unescape
from keyrouter.store.keys import Keys
from keyrouter.store.mixins import SqlitePlumbing

if TYPE_CHECKING:  # memory_space.py imports this module
    from keyrouter.store.memory_space import Space

SCHEMA = """
CREATE TABLE IF NOT EXISTS reconcile_state (
    ns TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reconcile_rows (
    ns TEXT NOT NULL, id TEXT NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (ns, id)) WITHOUT ROWID
"""


def _dump(state: Mapping[str, Any]) -> str:
    return json.dumps(dict(state), ensure_ascii=True, sort_keys=True)


@dataclass
class Reconciled:
    """The memory backend's state for one namespace."""

    state: str | None = None
    rows: dict[str, str] = field(default_factory=dict)


class MemoryReconciled:
    """Kept on the namespace's `Space` (memory.py), so stores sharing spaces share it."""

    _s: Space

    @property
    def _rec(self) -> Reconciled:
        return self._s.reconciled

    async def reconcile_state(self) -> dict[str, Any] | None:
        return None if self._rec.state is None else json.loads(self._rec.state)

    async def save_reconcile_state(self, state: Mapping[str, Any]) -> None:
        self._rec.state = _dump(state)

    async def save_reconciled_rows(self, rows: Sequence[tuple[str, str]]) -> int:
        added = 0
        for id, row in rows:
            if id not in self._rec.rows:
                self._rec.rows[id] = row
                added += 1
        return added

    async def reconciled_rows(self) -> list[tuple[str, str]]:
        return sorted(self._rec.rows.items())

    async def drop_reconciled_rows(self, ids: Sequence[str]) -> None:
        for id in ids:
            self._rec.rows.pop(id, None)


class SqliteReconciled(SqlitePlumbing):
    """Tables `reconcile_state` and `reconcile_rows` (SCHEMA, created at open)."""


    async def reconcile_state(self) -> dict[str, Any] | None:
        rows = await self._read("SELECT state FROM reconcile_state WHERE ns = :ns", self._p())
        return json.loads(rows[0][0]) if rows else None

    async def save_reconcile_state(self, state: Mapping[str, Any]) -> None:
        p = self._p(state=_dump(state))
        await self._write(lambda db: db.execute(
            "INSERT INTO reconcile_state VALUES (:ns, :state) ON CONFLICT (ns) DO UPDATE"
            " SET state = excluded.state", p))

    async def save_reconciled_rows(self, rows: Sequence[tuple[str, str]]) -> int:
        params = [self._p(id=escape(id), row=escape(row)) for id, row in rows]

        def run(db: sqlite3.Connection) -> int:
            added = 0
            for p in params:
                added += db.execute("INSERT OR IGNORE INTO reconcile_rows VALUES (:ns, :id, :row)",
                                    p).rowcount
            return added

        return int(await self._write(run)) if params else 0

    async def reconciled_rows(self) -> list[tuple[str, str]]:
        rows = await self._read("SELECT id, row FROM reconcile_rows WHERE ns = :ns", self._p())
        return sorted((unescape(i), unescape(r)) for i, r in rows)

    async def drop_reconciled_rows(self, ids: Sequence[str]) -> None:
        params = [self._p(id=escape(id)) for id in ids]
        if params:
            await self._write(lambda db: db.executemany(
                "DELETE FROM reconcile_rows WHERE ns = :ns AND id = :id", params))


SAVE_ROWS = """
-- KEYS[1]: the rows HASH; ARGV: id, row pairs.  Adds the absent ones; returns how many.
local added = 0
for i = 1, #ARGV, 2 do
    added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
return added
"""


def _text(value: bytes | str) -> str:
    return unescape(value.decode() if isinstance(value, bytes) else value)


class RedisReconciled:
    """Keys `reconcile` (a JSON STRING) and `reconcile:rows` (a HASH id -> row), keys.py, in the
    namespace's slot."""

    keys: Keys
    client: Any
    _ready: Callable[[], Any]
    _save_rows: Callable[..., Any]  # SAVE_ROWS, registered by RedisStore

    async def reconcile_state(self) -> dict[str, Any] | None:
        await self._ready()
        raw = await self.client.get(self.keys.reconcile)
        return None if raw is None else json.loads(raw)

    async def save_reconcile_state(self, state: Mapping[str, Any]) -> None:
        await self._ready()
        await self.client.set(self.keys.reconcile, _dump(state))

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
        return sorted((_text(k), _text(v)) for k, v in found.items())

    async def drop_reconciled_rows(self, ids: Sequence[str]) -> None:
        if ids:
            await self._ready()
            await self.client.hdel(self.keys.reconcile_rows, *[escape(i, nul=False) for i in ids])
