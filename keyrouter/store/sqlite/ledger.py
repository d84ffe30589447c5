"""The SQLite store's part for the opt-out ledger, its pages and survey votes, given the store's
connection (db.py); processing state (claims, leases, dead letters, the shared inbox) stays in
store.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from keyrouter.ordering import compare
from keyrouter.store.base import (
    BUSY,
    DECISION_HOLD,
    DECISIONS,
    GRANTED,
    Decision,
    LedgerCursor,
    OptOut,
    SurveyResults,
    ledger_cursor,
)
from keyrouter.store.codec import escape, unescape
from keyrouter.store.decisions import judge, position
from keyrouter.store.keys import check_policy
from keyrouter.store.roles import LedgerStore, VoteStore
from keyrouter.store.sqlite import sql as stmt
from keyrouter.store.sqlite.db import Db


class SqliteLedger(LedgerStore, VoteStore):
    """The ledger, its pages and the votes over the store's connection."""

    def __init__(self, sql: Db) -> None:
        self._sql = sql


    async def record_optout(self, entry: OptOut) -> None:
        def run(db: sqlite3.Connection) -> None:
            p = self._sql.params(**asdict(entry))
            db.execute("DELETE FROM optouts_pending WHERE ns = :ns AND message_id = :message_id"
                       " AND action = :action", p)
            if db.execute(
                f"INSERT OR IGNORE INTO optouts ({stmt.LEDGER_COLUMNS}) VALUES ({stmt.LEDGER_VALUES})",
                p,
            ).rowcount and entry.action in DECISIONS:
                current = db.execute(stmt.LATEST, p).fetchone()
                if current is None or compare(position(entry), position(_entry(current))) >= 0:
                    db.execute(stmt.LATEST_UPDATE, p)

        await self._sql.write(run)

    async def latest_optout(self, number: str) -> OptOut | None:
        rows = await self._sql.read(stmt.LATEST, self._sql.params(number=number))
        return _entry(rows[0]) if rows else None

    async def optouts(self, since: float | None = None) -> list[OptOut]:
        after = "" if since is None else " AND received_at >= :since"  # an OR would skip the index
        rows = await self._sql.read(
            f"SELECT {stmt.ENTRY} FROM optouts"
            f" WHERE ns = :ns{after} ORDER BY received_at, message_id || '|' || action",
            self._sql.params(since=since),  # ties in the order Redis gives them (by member bytes)
        )
        return [_entry(row) for row in rows]

    async def mark_optout_pending(self, entry: OptOut) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            return _mark_pending(db, self._sql.params(**asdict(entry)))

        return await self._sql.write(run)

    async def claim_decision(self, entry: OptOut, *, defer: bool = False) -> Decision:
        q = self._sql.params
        p = q(**asdict(entry))

        def run(db: sqlite3.Connection) -> Decision:
            holder = db.execute(stmt.HOLDER, p).fetchone()
            unfinished: dict[str, bool] = {}  # judge and the BUSY check may both ask

            def holds(message_id: str) -> bool:
                if holder is None or holder[0] != message_id \
                        or not p["t"] - holder[1] < DECISION_HOLD:
                    return False
                if message_id not in unfinished:
                    unfinished[message_id] = bool(db.execute(
                        stmt.UNFINISHED, q(ids=stmt.json_ids([message_id]))).fetchone())
                return unfinished[message_id]

            def has_line(message_id: str) -> bool:
                return bool(db.execute(stmt.LINE, {**p, "other": escape(message_id)}).fetchone())

            latest = db.execute(stmt.LATEST, p).fetchone()
            verdict = judge(entry, None if latest is None else _entry(latest), defer=defer,
                            has_line=has_line, holds=holds)
            if verdict is not None:
                return verdict
            if holder is not None and holder[0] != entry.message_id and holds(holder[0]) \
                    and db.execute(stmt.HOLDER_PENDING, {**p, **q(holder=holder[0])}).fetchone():
                return Decision(BUSY, holder[0])
            db.execute(stmt.HOLDER_SET, p)
            return Decision(GRANTED, first=_mark_pending(db, p))

        return await self._sql.write(run)

    async def pending_optouts(self) -> list[OptOut]:
        rows = await self._sql.read(
            f"SELECT {stmt.ENTRY} FROM optouts_pending WHERE ns = :ns"
            " ORDER BY received_at, message_id || '|' || action", self._sql.params())
        return [_entry(row) for row in rows]

    # -- paginated reads (the dashboard): index range scans, LIMIT rows read ---------------------

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
        where = ["ns = :ns"]
        if since is not None:
            where.append("received_at >= :since")
        if until is not None:
            where.append("received_at < :until")
        if before is not None:
            where.append("(received_at, message_id || '|' || action) < (:bt, :bm)")
        bounded = scan is not None and scan > 0
        order = " ORDER BY received_at DESC, message_id || '|' || action DESC"
        p = self._sql.params(since=since, until=until, action=action, limit=limit, scan=scan,
                    bt=before[0] if before else None,
                    bm=f"{before[1]}|{before[2]}" if before else None)
        if action is None or not bounded:  # a plain index range read of one page
            if action is not None:
                where.append("action = :action")
            if bounded:
                p["limit"] = min(limit, scan)  # type: ignore[type-var]
            rows = await self._sql.read(
                f"SELECT {stmt.ENTRY} FROM optouts WHERE {' AND '.join(where)}{order} LIMIT :limit", p)
            found = [_entry(row) for row in rows]
            return found, ledger_cursor(found[-1]) if len(found) >= p["limit"] else None
        # bounded, with an action: the scan-th entry examined bounds the matching read (both are
        # index walks), and is the next cursor when the page stays short
        edge = await self._sql.read(
            f"SELECT received_at, message_id, action FROM optouts WHERE {' AND '.join(where)}{order}"
            " LIMIT 1 OFFSET :scan - 1", p)
        if edge:
            where.append("(received_at, message_id || '|' || action) >= (:et, :em)")
            p.update(et=edge[0][0], em=escape(f"{edge[0][1]}|{edge[0][2]}"))  # as _p would
        rows = await self._sql.read(
            f"SELECT {stmt.ENTRY} FROM optouts WHERE {' AND '.join([*where, 'action = :action'])}{order}"
            " LIMIT :limit", p)
        found = [_entry(row) for row in rows]
        if len(found) >= limit:
            return found, ledger_cursor(found[-1])
        return found, (edge[0][0], edge[0][1], edge[0][2]) if edge else None

    async def optouts_recorded(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not keys:
            return set()
        rows = await self._sql.read(
            "SELECT o.message_id, o.action FROM json_each(:keys) j JOIN optouts o ON o.ns = :ns"
            " AND o.message_id = json_extract(j.value, '$[0]') AND o.action = json_extract(j.value, '$[1]')",
            self._sql.params(keys=json.dumps([[escape(str(m)), escape(str(a))] for m, a in keys])),
        )
        return {(m, a) for m, a in rows}

    async def vote(
        self, survey: str, voter: str, choice: str, *, policy: str, now: float,
        valid: bool = True, vote_id: str = "",
    ) -> bool:
        check_policy(policy)

        def run(db: sqlite3.Connection) -> bool:
            p = self._sql.params(survey=survey, voter=voter, choice=choice, now=now, vote_id=vote_id)
            if vote_id and not db.execute(
                "INSERT OR IGNORE INTO vote_ids VALUES (:ns, :survey, :vote_id)", p
            ).rowcount:
                return False
            p["rejected"], p["at"] = (0, now) if valid else (1, None)
            db.execute(
                "INSERT INTO surveys VALUES (:ns, :survey, :at, :rejected)"
                " ON CONFLICT (ns, survey) DO UPDATE SET rejected = rejected + :rejected,"
                " last_vote_at = max(coalesce(last_vote_at, :at), coalesce(:at, last_vote_at))",
                p,
            )
            if not valid:
                return False
            sql = f"SELECT choice FROM votes WHERE {stmt.SURVEY} AND voter = :voter"
            old = db.execute(sql, p).fetchone()
            if old is not None and (old[0] == choice or policy == "first"):
                return False
            db.execute("INSERT OR REPLACE INTO votes VALUES (:ns, :survey, :voter, :choice)", p)
            return True

        return await self._sql.write(run)

    async def survey_results(self, survey: str) -> SurveyResults:
        # one statement: one snapshot
        row = await self._sql.read(stmt.RESULTS, self._sql.params(survey=survey))
        last, rejected, votes = row[0]
        counts: dict[str, int] = {unescape(k): n for k, n in json.loads(votes).items()}
        return SurveyResults(survey, counts, sum(counts.values()), last, rejected or 0)


def _entry(row: Sequence[Any]) -> OptOut:
    """A ledger row (`stmt.ENTRY` columns) as an OptOut (`dated` is stored as 0/1)."""
    number, action, message_id, keyword, received_at, handled_at, outcome, transaction_id, dated = row
    return OptOut(number, action, message_id, keyword, received_at, handled_at, outcome,
                  transaction_id, dated=bool(dated))


def _mark_pending(db: sqlite3.Connection, p: dict[str, Any]) -> bool:
    """Adds the entry's pending mark (params `p`); False when it is in the ledger or already
    marked."""
    if db.execute(stmt.RECORDED, p).fetchone():
        return False
    return bool(db.execute(stmt.PENDING_ADD, p).rowcount)
