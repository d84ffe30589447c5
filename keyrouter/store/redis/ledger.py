"""The Redis store's part for the opt-out ledger, its pages and survey votes: one Lua script per
call (lua_ledger.py), over the namespace's keys (keys.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from keyrouter.store.codec import row_json
from keyrouter.store.decisions import DECISION_ACTIONS
from keyrouter.store.keys import Keys, check_policy
from keyrouter.store.redis import lua_ledger as ledger_lua
from keyrouter.store.redis.parts import Ready, Register
from keyrouter.store.redis.script import escape, stored_body, unescaped
from keyrouter.store.roles import LedgerStore, VoteStore
from keyrouter.store.values import (
    DECISION_HOLD,
    DECISIONS,
    OPT_OUT_ACTIONS,
    Decision,
    LedgerCursor,
    OptOut,
    SurveyResults,
)


class RedisLedger(LedgerStore, VoteStore):
    """Keys `optouts`, `optouts:at`, `optouts:latest`, `optouts:pending`, `optouts:holder` and
    `survey:<id>:*` (keys.py)."""

    def __init__(self, client: Any, keys: Keys, ready: Ready, script: Register, vote_ids_ttl: int,
                 clock: Callable[[], float], done_keys: Callable[[], list[str]]) -> None:
        self.client, self.keys, self._ready = client, keys, ready
        self._vote_ids_ttl = vote_ids_ttl
        self._clock, self._done_keys = clock, done_keys  # claim_decision: the store clock, done keys
        self._decide = script(ledger_lua.DECIDE)
        self._optout = script(ledger_lua.OPTOUT)
        self._optouts = script(ledger_lua.OPTOUTS)
        self._pending = script(ledger_lua.PENDING)
        self._latest = script(ledger_lua.LATEST)
        self._vote = script(ledger_lua.VOTE)
        self._results = script(ledger_lua.RESULTS)
        self._optouts_page = script(ledger_lua.OPTOUTS_PAGE)

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
        return None if body is None else OptOut(**stored_body(body))

    async def optouts(self, since: float | None = None) -> list[OptOut]:
        k = self.keys
        low = "-inf" if since is None else repr(since)
        bodies = await self._optouts(keys=[k.optouts, k.optouts_by_time], args=[low])
        return [OptOut(**stored_body(body)) for body in bodies]

    async def mark_optout_pending(self, entry: OptOut) -> bool:
        k = self.keys
        body = row_json(asdict(entry))
        member = f"{entry.message_id}|{entry.action}"
        return bool(await self._pending(keys=[k.optouts, k.optouts_pending], args=[member, body]))

    async def pending_optouts(self) -> list[OptOut]:
        await self._ready()
        found = await self.client.hgetall(self.keys.optouts_pending)
        entries = [(unescaped(m), OptOut(**stored_body(b))) for m, b in found.items()]
        return [e for _, e in sorted(entries, key=lambda me: (me[1].received_at, escape(me[0]).encode()))]

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
        found = [OptOut(**stored_body(body)) for body in bodies if body is not None]
        if unescaped(stopped) != "1":
            return found, None
        message_id, _, act = unescaped(last).rpartition("|")
        return found, (float(score), message_id, act)

    async def optouts_recorded(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not keys:
            return set()
        pairs = [(str(m), str(a)) for m, a in keys]
        await self._ready()
        got = await self.client.hmget(self.keys.optouts, [escape(f"{m}|{a}") for m, a in pairs])
        return {pair for pair, body in zip(pairs, got, strict=True) if body is not None}

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
        votes = {unescaped(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        return SurveyResults(survey, votes, int(voters), float(last) if last else None, int(rejected))

    async def claim_decision(self, entry: OptOut, *, defer: bool = False) -> Decision:
        k, id = self.keys, entry.message_id
        verdict, other, first = await self._decide(
            keys=[k.optouts, k.optouts_latest, k.optouts_pending, k.optouts_holder, k.dead,
                  *self._done_keys()],
            args=[entry.number, id, f"{id}|{entry.action}", row_json(asdict(entry)),
                  "1" if defer else "0", "1" if entry.action in OPT_OUT_ACTIONS else "0",
                  repr(self._clock()), repr(DECISION_HOLD), *[f"{id}|{a}" for a in DECISION_ACTIONS],
                  entry.action],
        )
        return Decision(unescaped(verdict), unescaped(other) or None, unescaped(first) == "1")
