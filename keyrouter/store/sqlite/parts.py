"""The SQLite store's parts for the activity figures, conversations and reconciliation state:
each is given the store's connection (db.py) and serves one role of the contract (roles.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from keyrouter.store.activity import HOUR, hours
from keyrouter.store.codec import escape, unescape
from keyrouter.store.conversations import Record, decode, encode
from keyrouter.store.reconciled import dump_state
from keyrouter.store.roles import ActivityStore, ConversationStore, ReconcileStore
from keyrouter.store.sqlite.db import Db
from keyrouter.store.values import ROUTED_HOURS

#: The reconciliation tables, created at open with the rest of the schema (sql.py).
RECONCILE_SCHEMA = """
CREATE TABLE IF NOT EXISTS reconcile_state (
    ns TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reconcile_rows (
    ns TEXT NOT NULL, id TEXT NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (ns, id)) WITHOUT ROWID
"""


class SqliteActivity(ActivityStore):
    """Tables `polls` and `touches` (one row per namespace) and `routed` (ns, hour, rule, n), in
    sqlite/sql.py."""

    def __init__(self, sql: Db) -> None:
        self._sql = sql

    async def record_poll(self, at: float, rows: int) -> None:
        p = self._sql.params(at=float(at), rows=int(rows))
        await self._sql.write(lambda db: db.execute(
            "INSERT INTO polls VALUES (:ns, :at, :rows) ON CONFLICT (ns) DO UPDATE"
            " SET at = excluded.at, rows = excluded.rows", p))

    async def touch(self, at: float) -> None:
        p = self._sql.params(at=float(at))
        await self._sql.write(lambda db: db.execute(
            "INSERT INTO touches VALUES (:ns, :at) ON CONFLICT (ns) DO UPDATE SET at = excluded.at",
            p))

    async def last_poll(self) -> tuple[float, int] | None:
        rows = await self._sql.read("SELECT at, rows FROM polls WHERE ns = :ns", self._sql.params())
        return (float(rows[0][0]), int(rows[0][1])) if rows else None

    async def count_routed(self, counts: Mapping[tuple[str, int], int]) -> None:
        params = [self._sql.params(hour=int(hour), rule=rule, n=int(n))
                  for (rule, hour), n in counts.items()]
        oldest = int(self._sql.clock() // HOUR) - ROUTED_HOURS + 1

        def run(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO routed VALUES (:ns, :hour, :rule, :n) ON CONFLICT"
                           " (ns, hour, rule) DO UPDATE SET n = n + excluded.n", params)
            db.execute("DELETE FROM routed WHERE ns = :ns AND hour < :oldest",
                       self._sql.params(oldest=oldest))

        await self._sql.write(run)

    async def routed_since(self, hour: int) -> dict[int, dict[str, int]]:
        span = hours(hour, self._sql.clock())
        out: dict[int, dict[str, int]] = {}
        for h, rule, n in await self._sql.read(
                "SELECT hour, rule, n FROM routed WHERE ns = :ns AND hour >= :lo AND hour < :hi",
                self._sql.params(lo=span.start, hi=span.stop)):
            if n:
                out.setdefault(int(h), {})[rule] = int(n)
        return out


class SqliteConversations(ConversationStore):
    """Tables `conv_current` and `conv_runs` (sqlite/sql.py)."""

    def __init__(self, sql: Db) -> None:
        self._sql = sql

    async def conversation_of(self, respondent: str) -> Record | None:
        rows = await self._sql.read("SELECT record FROM conv_current WHERE ns = :ns AND respondent = :r",
                                self._sql.params(r=respondent))
        return decode(rows[0][0]) if rows else None

    async def save_conversation(self, record: Record, expect: str | None) -> bool:
        p = self._sql.params(r=record.respondent, c=record.conversation, m=record.message_id,
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

        return bool(await self._sql.write(run))

    async def conversation_records(self, conversation: str) -> list[Record]:
        rows = await self._sql.read("SELECT respondent, record FROM conv_runs WHERE ns = :ns AND"
                                " conversation = :c", self._sql.params(c=conversation))
        return [decode(j) for _, j in sorted(rows)]


class SqliteReconciled(ReconcileStore):
    """Tables `reconcile_state` and `reconcile_rows` (RECONCILE_SCHEMA, created at open)."""

    def __init__(self, sql: Db) -> None:
        self._sql = sql

    async def reconcile_state(self) -> dict[str, Any] | None:
        rows = await self._sql.read("SELECT state FROM reconcile_state WHERE ns = :ns", self._sql.params())
        return json.loads(rows[0][0]) if rows else None

    async def save_reconcile_state(self, state: Mapping[str, Any]) -> None:
        p = self._sql.params(state=dump_state(state))
        await self._sql.write(lambda db: db.execute(
            "INSERT INTO reconcile_state VALUES (:ns, :state) ON CONFLICT (ns) DO UPDATE"
            " SET state = excluded.state", p))

    async def save_reconciled_rows(self, rows: Sequence[tuple[str, str]]) -> int:
        params = [self._sql.params(id=escape(id), row=escape(row)) for id, row in rows]

        def run(db: sqlite3.Connection) -> int:
            added = 0
            for p in params:
                added += db.execute("INSERT OR IGNORE INTO reconcile_rows VALUES (:ns, :id, :row)",
                                    p).rowcount
            return added

        return int(await self._sql.write(run)) if params else 0

    async def reconciled_rows(self) -> list[tuple[str, str]]:
        rows = await self._sql.read("SELECT id, row FROM reconcile_rows WHERE ns = :ns", self._sql.params())
        return sorted((unescape(i), unescape(r)) for i, r in rows)

    async def drop_reconciled_rows(self, ids: Sequence[str]) -> None:
        params = [self._sql.params(id=escape(id)) for id in ids]
        if params:
            await self._sql.write(lambda db: db.executemany(
                "DELETE FROM reconcile_rows WHERE ns = :ns AND id = :id", params))
