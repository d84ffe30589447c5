"""The memory store's state for one namespace (`Space`), which several stores can share, and its
parts for the activity figures, conversations and reconciliation state, each given the space."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keyrouter.store.activity import HOUR, hours
from keyrouter.store.conversations import Record, decode, encode
from keyrouter.store.reconciled import dump_state
from keyrouter.store.values import ROUTED_HOURS, DeadLetter, OptOut

COUNTERS = ("done", "skipped", "dead", "failed")


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
    surveys: dict[str, Survey] = field(default_factory=dict)
    fetch: tuple[str, float] | None = None  # (owner, until) of the fetch lease
    fetch_token: int = 0
    published: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (seq, row)
    publish_seq: int = 0
    activity: Activity = field(default_factory=Activity)  # last poll, per-rule hours
    conversations: ConversationSpace = field(default_factory=ConversationSpace)
    reconciled: Reconciled = field(default_factory=Reconciled)  # reconcile state and rows


class MemoryActivity:
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


class MemoryConversations:
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


class MemoryReconciled:
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
