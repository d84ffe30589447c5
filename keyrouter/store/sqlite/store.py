"""SQLite store: the embedded default, safe for several worker processes on one host.

WAL lets readers run beside a writer; every write is a `BEGIN IMMEDIATE` transaction, which takes
the database's write lock up front, so two processes' claims serialize instead of interleaving.
Id lists travel as one JSON parameter (`json_each`), so a batch is one statement, not one per id.
Blocking calls run in a thread; one connection per store, serialized by a lock.
Strings are stored through `codec.escape` (unchanged unless they hold NUL or a lone surrogate)
and every row read is decoded by the connection's row factory, so any id or text round-trips.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from keyrouter.store.assembled import Assembled
from keyrouter.store.base import (
    HORIZON_MARGIN,
    Claimed,
    DeadLetter,
    Description,
    Health,
)
from keyrouter.store.codec import escape, read_row, row_json
from keyrouter.store.keys import check_namespace
from keyrouter.store.probe import probe
from keyrouter.store.retried import retried_row_json
from keyrouter.store.sqlite import sql as stmt
from keyrouter.store.sqlite.db import Db
from keyrouter.store.sqlite.ledger import SqliteLedger
from keyrouter.store.sqlite.parts import (
    RECONCILE_SCHEMA,
    SqliteActivity,
    SqliteConversations,
    SqliteReconciled,
)
from keyrouter.store.sqlite.sql import json_ids as _ids
from keyrouter.store.values import COUNTERS


class SqliteStore(Assembled):
    """`clock` (epoch seconds) drives lease and horizon expiry, so tests can move time."""

    def __init__(
        self,
        path: str | Path,
        namespace: str = "default",
        horizon: timedelta | None = None,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 30.0,
    ) -> None:
        self.namespace = check_namespace(namespace)
        self.horizon = horizon
        self.path = str(path)
        if self.path != ":memory:" and not Path(self.path).parent.is_dir():
            # Never create folders: a typo in the path would start an empty store, and every
            # message would be dispatched again.  The file itself is created.
            raise ValueError(f"the SQLite store's folder {Path(self.path).parent} does not exist: "
                             "create it, or fix the store URL (KEYROUTER_STORE / --store)")
        self._sql = Db(self.path, self.namespace, clock, busy_timeout)
        super().__init__(SqliteActivity(self._sql), SqliteConversations(self._sql),
                         SqliteReconciled(self._sql), SqliteLedger(self._sql))
        schema = ";".join((stmt.SCHEMA, RECONCILE_SCHEMA, stmt.DECISIONS_SCHEMA))
        self._sql.tx(lambda db: [db.execute(sql) for sql in schema.split(";") if sql.strip()])
        self._sql.tx(stmt.add_ledger_columns)

    def __repr__(self) -> str:
        return f"SqliteStore(sqlite:///{self.path}, namespace={self.namespace!r})"

    async def health(self, timeout: float = 10.0) -> Health:
        return await probe(self.counts, timeout)

    def describe(self) -> Description:
        in_memory = self.path == ":memory:"
        location = "sqlite://" if in_memory else f"sqlite:///{self.path}"
        return Description("sqlite", location, self.namespace, persistent=not in_memory, file=self.path)

    # -- plumbing -------------------------------------------------------------------------------

    def _bump(self, db: sqlite3.Connection, name: str, by: int = 1) -> None:
        if by:
            db.execute(
                "INSERT INTO stats VALUES (:ns, :name, :by)"
                " ON CONFLICT (ns, name) DO UPDATE SET value = value + :by",
                self._sql.params(name=name, by=by),
            )

    def _mark(
        self, db: sqlite3.Connection, ids: Sequence[str], kind: str, forever: bool = False
    ) -> int:
        """Mark the not yet finished `ids` finished; returns how many were newly marked.  A
        `forever` marker (expires_at NULL) also replaces an expiring one."""
        if not ids:
            return 0
        window = None if self.horizon is None else (self.horizon + HORIZON_MARGIN).total_seconds()
        p = self._sql.params(ids=_ids(ids), kind=kind)
        p["exp"] = None if window is None or forever else p["t"] + window
        db.execute(f"DELETE FROM dead WHERE {stmt.IN}", p)
        db.execute(f"DELETE FROM finished WHERE {stmt.IN} AND expires_at <= :t", p)
        cur = db.execute(
            "INSERT OR IGNORE INTO finished SELECT :ns, value, :kind, :exp FROM json_each(:ids)", p
        )
        if forever:
            db.execute(f"UPDATE finished SET expires_at = NULL WHERE {stmt.IN}", p)
        return cur.rowcount

    def _taken(self, db: sqlite3.Connection, ids: Sequence[str], owner: str) -> set[str]:
        p = self._sql.params(ids=_ids(ids), owner=owner)
        return {r[0] for r in db.execute(stmt.TAKEN, p)}

    # -- contract -------------------------------------------------------------------------------

    async def unfinished(self, ids: Sequence[str]) -> list[str]:
        rows = await self._sql.read(stmt.UNFINISHED, self._sql.params(ids=_ids(ids)))
        return [r[0] for r in rows]

    async def claim(
        self, ids: Sequence[str], owner: str, lease: float, now: float, *, limit: int | None = None
    ) -> list[Claimed]:
        def run(db: sqlite3.Connection) -> list[Claimed]:
            unique = _ids(dict.fromkeys(ids))
            p = self._sql.params(ids=unique, owner=owner, now=now, limit=-1 if limit is None else limit)
            found = {id: (n, over) for id, n, over in db.execute(stmt.CLAIMABLE, p)}
            if not found:
                return []
            p.update(ids=_ids(found), until=p["t"] + lease)
            db.execute(stmt.LEASE, p)
            done: dict[str, set[str]] = {}
            for id, entry in db.execute(f"SELECT id, entry FROM progress WHERE {stmt.IN}", p):
                done.setdefault(id, set()).add(entry)
            return [
                Claimed(id, n, frozenset(done.get(id, ())), bool(over))
                for id, (n, over) in found.items()
            ]

        if not ids or limit == 0:
            return []
        return await self._sql.write(run)

    async def renew(self, ids: Sequence[str], owner: str, lease: float) -> list[str]:
        def run(db: sqlite3.Connection) -> list[str]:
            p = self._sql.params(ids=_ids(ids), owner=owner)
            p["until"] = p["t"] + lease
            rows = db.execute(
                f"UPDATE work SET lease_until = :until WHERE {stmt.IN} AND owner = :owner"
                " AND lease_until > :t RETURNING id",
                p,
            ).fetchall()
            kept = {r[0] for r in rows}
            return [id for id in dict.fromkeys(ids) if id in kept]

        return await self._sql.write(run)

    async def record_success(self, entries: Sequence[tuple[str, str]], owner: str) -> list[str]:
        def run(db: sqlite3.Connection) -> list[str]:
            p = self._sql.params(ids=_ids([id for id, _ in entries]), owner=owner)
            held = {
                r[0]
                for r in db.execute(
                    f"SELECT id FROM work WHERE {stmt.IN} AND owner = :owner AND lease_until > :t", p
                )
            }
            db.executemany(
                "INSERT OR IGNORE INTO progress VALUES (?, ?, ?)",
                [(self.namespace, escape(id), escape(entry)) for id, entry in entries if id in held],
            )
            return [id for id in dict.fromkeys(id for id, _ in entries) if id not in held]

        return await self._sql.write(run)

    async def finish(
        self,
        ids: Sequence[str],
        owner: str,
        *,
        skipped: Sequence[str] = (),
        forever: Sequence[str] = (),
    ) -> list[str]:
        def run(db: sqlite3.Connection) -> list[str]:
            taken = self._taken(db, [*ids, *skipped], owner)
            keep = set(forever)
            db.execute("DELETE FROM finished WHERE ns = :ns AND expires_at <= :t", self._sql.params())
            for kind, batch in (("done", ids), ("skipped", skipped)):
                free = [id for id in batch if id not in taken]
                marked = self._mark(db, [id for id in free if id not in keep], kind)
                marked += self._mark(db, [id for id in free if id in keep], kind, forever=True)
                self._bump(db, kind, marked)
            p = self._sql.params(ids=_ids([id for id in (*ids, *skipped) if id not in taken]))
            for table in ("work", "progress", "published"):
                db.execute(f"DELETE FROM {table} WHERE {stmt.IN}", p)
            return [id for id in dict.fromkeys((*ids, *skipped)) if id in taken]

        if not ids and not skipped:
            return []
        return await self._sql.write(run)

    async def fail(self, id: str, owner: str, error: str, retry_at: float) -> int:
        def run(db: sqlite3.Connection) -> int:
            if self._taken(db, [id], owner):
                return -1
            (attempts,) = db.execute(
                "INSERT INTO work (ns, id, attempts, retry_at) VALUES (:ns, :id, 1, :at)"
                " ON CONFLICT (ns, id) DO UPDATE SET attempts = attempts + 1, retry_at = :at,"
                " owner = NULL, lease_until = NULL"
                " RETURNING attempts",
                self._sql.params(id=id, at=retry_at),
            ).fetchone()
            self._bump(db, "failed")
            return int(attempts)

        return await self._sql.write(run)

    async def dead_letter(
        self, id: str, owner: str, error: str, *, rule: str | None, row: Mapping[str, Any], now: float
    ) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            if self._taken(db, [id], owner):
                return False
            p = self._sql.params(id=id, error=error, rule=rule, row=row_json(dict(row)), now=now)
            got = db.execute("SELECT attempts FROM work WHERE ns = :ns AND id = :id", p).fetchone()
            p["attempts"] = (got[0] if got else 0) + 1
            db.execute(
                "INSERT OR REPLACE INTO dead VALUES (:ns, :id, :error, :attempts, :now, :rule, :row)",
                p,
            )
            db.execute("DELETE FROM work WHERE ns = :ns AND id = :id", p)
            db.execute("DELETE FROM published WHERE ns = :ns AND id = :id", p)
            self._bump(db, "dead")
            self._bump(db, "failed")
            return True

        return await self._sql.write(run)

    async def dead_letters(self) -> list[DeadLetter]:
        rows = await self._sql.read(
            "SELECT id, error, attempts, failed_at, rule, row FROM dead WHERE ns = :ns"
            " ORDER BY failed_at, id",
            self._sql.params(),
        )
        return [DeadLetter(i, e, a, f, r, read_row(row)) for i, e, a, f, r, row in rows]

    async def retry_dead(self, id: str) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            p = self._sql.params(id=id)
            got = db.execute("SELECT row FROM dead WHERE ns = :ns AND id = :id", p).fetchone()
            if got is None:
                return False
            db.execute("DELETE FROM dead WHERE ns = :ns AND id = :id", p)
            db.execute("DELETE FROM work WHERE ns = :ns AND id = :id", p)
            # run again from its row, whatever the inbox holds (store/retried.py)
            db.execute("INSERT OR IGNORE INTO published (ns, id, row) VALUES (:ns, :id, :row)",
                       self._sql.params(id=id, row=retried_row_json(read_row(got[0]))))
            return True

        return await self._sql.write(run)

    async def drop_dead(self, id: str) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            p = self._sql.params(id=id)
            if not db.execute("SELECT 1 FROM dead WHERE ns = :ns AND id = :id", p).fetchone():
                return False
            self._mark(db, [id], "done")
            for table in ("work", "progress"):
                db.execute(f"DELETE FROM {table} WHERE ns = :ns AND id = :id", p)
            return True

        return await self._sql.write(run)

    async def counts(self) -> dict[str, int]:
        rows = await self._sql.read("SELECT name, value FROM stats WHERE ns = :ns", self._sql.params())
        return {**dict.fromkeys(COUNTERS, 0), **dict(rows)}

    async def release(self, ids: Sequence[str], owner: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute(
                f"UPDATE work SET owner = NULL, lease_until = NULL WHERE {stmt.IN} AND owner = :owner",
                self._sql.params(ids=_ids(ids), owner=owner),
            )

        if ids:
            await self._sql.write(run)

    async def acquire_fetch(self, owner: str, lease: float, now: float) -> int | None:
        def run(db: sqlite3.Connection) -> int | None:
            p = self._sql.params(owner=owner)
            p["until"] = p["t"] + lease
            got = db.execute("SELECT owner, lease_until, token FROM fetch WHERE ns = :ns", p).fetchone()
            holder, until, token = got if got else (None, None, 0)
            if holder is not None and until > p["t"]:
                if holder != owner:
                    return None
                db.execute("UPDATE fetch SET lease_until = :until WHERE ns = :ns", p)
                return int(token)
            p["token"] = token + 1  # taken, not renewed: a new token fences the previous holder
            db.execute("INSERT OR REPLACE INTO fetch VALUES (:ns, :owner, :until, :token)", p)
            return int(p["token"])

        return await self._sql.write(run)

    async def release_fetch(self, owner: str) -> None:
        await self._sql.write(lambda db: db.execute(
            "UPDATE fetch SET owner = NULL, lease_until = NULL WHERE ns = :ns AND owner = :owner",
            self._sql.params(owner=owner),
        ))

    async def publish(self, rows: Sequence[tuple[str, str]], token: int) -> int:
        def run(db: sqlite3.Connection) -> int:
            got = db.execute("SELECT token FROM fetch WHERE ns = :ns", self._sql.params()).fetchone()
            if got is None or got[0] != token:
                return -1
            if not rows:
                return 0
            pairs = json.dumps([[escape(id), escape(row)] for id, row in rows])
            return db.execute(stmt.PUBLISH, self._sql.params(rows=pairs)).rowcount

        return await self._sql.write(run)

    async def published(self, after: int) -> tuple[int, list[tuple[str, str]]]:
        def run(db: sqlite3.Connection) -> tuple[int, list[tuple[str, str]]]:
            got = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'published'").fetchone()
            last = got[0] if got else 0
            rows = db.execute(
                "SELECT id, row FROM published WHERE ns = :ns AND seq > :after ORDER BY seq",
                self._sql.params(after=after if after <= last else 0),
            ).fetchall()
            return last, [(id, row) for id, row in rows]

        return await self._sql.snapshot(run)  # one snapshot for the cursor and the rows

    async def unpublish(self, ids: Sequence[str]) -> None:
        if ids:
            await self._sql.write(lambda db: db.execute(
                f"DELETE FROM published WHERE {stmt.IN}", self._sql.params(ids=_ids(ids))
            ))

    # -- dead-letter pages (the dashboard) ------------------------------------------------------
    async def dead_letters_page(self, offset: int = 0, limit: int = 50,
                                rules: Sequence[str] | None = None,
                                oldest_first: bool = False) -> list[DeadLetter]:
        only = "" if rules is None else " AND rule IN (SELECT value FROM json_each(:rules))"
        way = "" if oldest_first else " DESC"
        rows = await self._sql.read(
            f"SELECT id, error, attempts, failed_at, rule, row FROM dead WHERE ns = :ns{only}"
            f" ORDER BY failed_at{way}, id{way} LIMIT :limit OFFSET :offset",
            self._sql.params(limit=max(0, limit), offset=max(0, offset),
                             rules=None if rules is None else _ids(rules)),
        )
        return [DeadLetter(i, e, a, f, r, read_row(row)) for i, e, a, f, r, row in rows]

    async def get_dead_letter(self, id: str) -> DeadLetter | None:
        rows = await self._sql.read(
            "SELECT id, error, attempts, failed_at, rule, row FROM dead WHERE ns = :ns AND id = :id",
            self._sql.params(id=id),
        )
        if not rows:
            return None
        id_, error, attempts, failed_at, rule, row = rows[0]
        return DeadLetter(id_, error, attempts, failed_at, rule, read_row(row))

    async def dead_letter_count(self) -> int:
        rows = await self._sql.read("SELECT count(*) FROM dead WHERE ns = :ns", self._sql.params())
        return int(rows[0][0])

    async def close(self) -> None:
        await self._sql.close()
