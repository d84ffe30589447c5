"""The memory store's state for one namespace, kept apart so several stores can share it."""

from __future__ import annotations

from dataclasses import dataclass, field

from keyrouter.store.activity import Activity
from keyrouter.store.conversations import ConversationSpace
from keyrouter.store.reconciled import Reconciled
from keyrouter.store.values import DeadLetter, OptOut

COUNTERS = ("done", "skipped", "dead", "failed")


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
