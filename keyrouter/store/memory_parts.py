"""The memory store's state for one namespace (`Space`), which several stores can share, and its
parts for the activity figures, conversations, reconciliation state and the ledger, each given
the space."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keyrouter.ordering import compare
from keyrouter.store.activity import HOUR, hours
from keyrouter.store.conversations import Record, decode, encode
from keyrouter.store.decisions import judge, position
from keyrouter.store.keys import check_policy
from keyrouter.store.reconciled import dump_state
from keyrouter.store.roles import (
    ActivityStore,
    ConversationStore,
    LedgerStore,
    ReconcileStore,
    VoteStore,
)
from keyrouter.store.values import (
    BUSY,
    COUNTERS,
    DECISION_HOLD,
    DECISIONS,
    GRANTED,
    ROUTED_HOURS,
    DeadLetter,
    Decision,
    LedgerCursor,
    OptOut,
    SurveyResults,
    ledger_cursor,
    ledger_key,
)


@dataclass
class Activity:
    """The activity figures of one namespace."""

    poll: tuple[float, int] | None = None
    touched: float | None = None
    routed: dict[int, dict[str, int]] = field(default_factory=dict)


@dataclass
class ConversationSpace:
    """The memory backend's records for one namespace."""

    current: dict[str, Record] = field(default_factory=dict)
    runs: dict[str, dict[str, Record]] = field(default_factory=dict)


@dataclass
class Reconciled:
    """The memory backend's state for one namespace."""

    state: str | None = None
    rows: dict[str, str] = field(default_factory=dict)


@dataclass
class Survey:
    """One survey's votes; `counts` never holds a zero, like the other backends."""

    votes: dict[str, str] = field(default_factory=dict)  # voter -> counted choice
    counts: dict[str, int] = field(default_factory=dict)  # choice -> voters
    last_vote_at: float | None = None
    rejected: int = 0
    seen: set[str] = field(default_factory=set)  # vote ids applied (kept for the process' life)


@dataclass
class Space:
    """One namespace's state.  `finished` maps id -> expiry of the markers that expire, kept in
    marking order so expired ones can be swept from the front; `kept` holds the markers that never
    expire (no horizon, or finished `forever`)."""

    finished: dict[str, float] = field(default_factory=dict)
    kept: set[str] = field(default_factory=set)
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (owner, until)
    retry: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (attempts, at)
    progress: dict[str, set[str]] = field(default_factory=dict)
    dead: dict[str, DeadLetter] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    optouts: dict[tuple[str, str], OptOut] = field(default_factory=dict)  # (message_id, action)
    latest: dict[str, OptOut] = field(default_factory=dict)  # number -> latest_optout
    pending: dict[tuple[str, str], OptOut] = field(default_factory=dict)  # marks not yet recorded
    holders: dict[str, tuple[str, float]] = field(default_factory=dict)  # claim_decision's
    surveys: dict[str, Survey] = field(default_factory=dict)
    fetch: tuple[str, float] | None = None  # (owner, until) of the fetch lease
    fetch_token: int = 0
    published: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (seq, row)
    publish_seq: int = 0
    activity: Activity = field(default_factory=Activity)  # last poll, per-rule hours
    conversations: ConversationSpace = field(default_factory=ConversationSpace)
    reconciled: Reconciled = field(default_factory=Reconciled)  # reconcile state and rows


class MemoryActivity(ActivityStore):
    """The activity figures, kept on the namespace's `Space` so stores sharing spaces share them."""

    def __init__(self, space: Space, clock: Callable[[], float]) -> None:
        self._activity, self._clock = space.activity, clock

    async def record_poll(self, at: float, rows: int) -> None:
        self._activity.poll = (float(at), int(rows))

    async def touch(self, at: float) -> None:
        self._activity.touched = float(at)

    async def last_poll(self) -> tuple[float, int] | None:
        return self._activity.poll

    async def count_routed(self, counts: Mapping[tuple[str, int], int]) -> None:
        routed = self._activity.routed
        for (rule, hour), n in counts.items():
            by_rule = routed.setdefault(int(hour), {})
            by_rule[rule] = by_rule.get(rule, 0) + int(n)
        oldest = int(self._clock() // HOUR) - ROUTED_HOURS + 1
        for hour in [h for h in routed if h < oldest]:
            del routed[hour]

    async def routed_since(self, hour: int) -> dict[int, dict[str, int]]:
        routed = self._activity.routed
        return {h: dict(routed[h]) for h in hours(hour, self._clock()) if routed.get(h)}


class MemoryConversations(ConversationStore):
    """The conversation records, kept on the namespace's `Space`."""

    def __init__(self, space: Space) -> None:
        self._space = space.conversations

    async def conversation_of(self, respondent: str) -> Record | None:
        return self._space.current.get(respondent)

    async def save_conversation(self, record: Record, expect: str | None) -> bool:
        space: ConversationSpace = self._space
        current = space.current.get(record.respondent)
        if (current.message_id if current else None) != expect:
            return False
        record = decode(encode(record))  # a copy, as the other backends hand back
        space.current[record.respondent] = record
        space.runs.setdefault(record.conversation, {})[record.respondent] = record
        return True

    async def conversation_records(self, conversation: str) -> list[Record]:
        runs = self._space.runs.get(conversation, {})
        return [runs[r] for r in sorted(runs)]


class MemoryReconciled(ReconcileStore):
    """The reconciliation state, kept on the namespace's `Space` so stores sharing spaces share it."""

    def __init__(self, space: Space) -> None:
        self._rec = space.reconciled

    async def reconcile_state(self) -> dict[str, Any] | None:
        return None if self._rec.state is None else json.loads(self._rec.state)

    async def save_reconcile_state(self, state: Mapping[str, Any]) -> None:
        self._rec.state = dump_state(state)

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


class MemoryLedger(LedgerStore, VoteStore):
    """The opt-out ledger, its pages and the survey votes, kept on the namespace's `Space`; no
    method awaits anything, so each runs atomically on the event loop.  The pages are plain
    sorts: memory is for tests."""

    def __init__(self, space: Space, clock: Callable[[], float],
                 is_finished: Callable[[str], bool]) -> None:
        self._s, self._clock, self._is_finished = space, clock, is_finished

    async def record_optout(self, entry: OptOut) -> None:
        key = (entry.message_id, entry.action)
        self._s.pending.pop(key, None)
        if key in self._s.optouts:
            return  # a repeat: the first write wins, and changes nothing else
        self._s.optouts[key] = entry
        if entry.action not in DECISIONS:
            return
        latest = self._s.latest.get(entry.number)
        if latest is None or compare(position(entry), position(latest)) >= 0:
            self._s.latest[entry.number] = entry

    async def latest_optout(self, number: str) -> OptOut | None:
        return self._s.latest.get(number)

    async def optouts(self, since: float | None = None) -> list[OptOut]:
        found = [e for e in self._s.optouts.values() if since is None or e.received_at >= since]
        return sorted(found, key=ledger_key)

    async def mark_optout_pending(self, entry: OptOut) -> bool:
        return self._mark_pending(entry)

    def _mark_pending(self, entry: OptOut) -> bool:
        """Adds the entry's pending mark; False when it is in the ledger or already marked."""
        key = (entry.message_id, entry.action)
        if key in self._s.optouts or key in self._s.pending:
            return False
        self._s.pending[key] = entry
        return True

    async def claim_decision(self, entry: OptOut, *, defer: bool = False) -> Decision:
        s, now = self._s, self._clock()
        holder = s.holders.get(entry.number)

        def holds(message_id: str) -> bool:
            return holder is not None and holder[0] == message_id \
                and now - holder[1] < DECISION_HOLD and not self._is_finished(message_id)

        verdict = judge(entry, s.latest.get(entry.number), defer=defer, holds=holds,
                        has_line=lambda m: (m, entry.action) in s.optouts)
        if verdict is not None:
            return verdict
        if holder is not None and holder[0] != entry.message_id and holds(holder[0]) \
                and any((holder[0], a) in s.pending for a in DECISIONS):
            return Decision(BUSY, holder[0])
        s.holders[entry.number] = (entry.message_id, now)
        return Decision(GRANTED, first=self._mark_pending(entry))

    async def pending_optouts(self) -> list[OptOut]:
        return sorted(self._s.pending.values(), key=ledger_key)

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
        after = None if before is None else (before[0], f"{before[1]}|{before[2]}")
        window = sorted((
            e for e in self._s.optouts.values()
            if (since is None or e.received_at >= since) and (until is None or e.received_at < until)
            and (after is None or ledger_key(e) < after)), key=ledger_key, reverse=True)
        found: list[OptOut] = []
        for examined, e in enumerate(window, 1):
            if action is None or e.action == action:
                found.append(e)
            if len(found) >= limit or (scan is not None and scan > 0 and examined >= scan):
                return found, ledger_cursor(e)
        return found, None

    async def optouts_recorded(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return {tuple(k) for k in keys if tuple(k) in self._s.optouts}  # type: ignore[misc]

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
        s = self._s.surveys.setdefault(survey, Survey())
        if vote_id:
            if vote_id in s.seen:
                return False
            s.seen.add(vote_id)
        if not valid:
            s.rejected += 1
            return False
        s.last_vote_at = now if s.last_vote_at is None else max(s.last_vote_at, now)
        old = s.votes.get(voter)
        if old == choice or (old is not None and policy == "first"):
            return False
        if old is not None:
            s.counts[old] -= 1
            if not s.counts[old]:
                del s.counts[old]
        s.votes[voter] = choice
        s.counts[choice] = s.counts.get(choice, 0) + 1
        return True

    async def survey_results(self, survey: str) -> SurveyResults:
        s = self._s.surveys.get(survey, Survey())
        return SurveyResults(survey, dict(s.counts), len(s.votes), s.last_vote_at, s.rejected)
