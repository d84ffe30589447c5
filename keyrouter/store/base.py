"""`Store`: the union of the role protocols (roles.py) that every backend implements, and the
values the contract takes and returns (values.py), also importable from here."""

from __future__ import annotations

from datetime import timedelta

from keyrouter.store.roles import (
    ActivityStore,
    ClaimStore,
    ConversationStore,
    DeadLetterStore,
    FeedStore,
    LedgerStore,
    ReconcileStore,
    StoreInfo,
    VoteStore,
)
from keyrouter.store.values import (
    BUSY,
    DECIDED,
    DECISION_HOLD,
    DECISIONS,
    GRANTED,
    HORIZON_MARGIN,
    LATER,
    OPT_OUT_ACTIONS,
    ROUTED_HOURS,
    Claimed,
    DeadLetter,
    Decision,
    Description,
    Health,
    Kind,
    LedgerCursor,
    OptOut,
    ServerFacts,
    SurveyResults,
    ledger_cursor,
    ledger_key,
)

__all__ = [
    "BUSY", "DECIDED", "DECISIONS", "DECISION_HOLD", "GRANTED", "HORIZON_MARGIN", "LATER",
    "OPT_OUT_ACTIONS", "ROUTED_HOURS", "Claimed", "DeadLetter", "Decision", "Description", "Health",
    "Kind", "LedgerCursor", "OptOut", "ServerFacts", "Store", "SurveyResults", "ledger_cursor",
    "ledger_key",
]


class Store(
    ClaimStore,
    DeadLetterStore,
    FeedStore,
    ActivityStore,
    LedgerStore,
    ReconcileStore,
    VoteStore,
    ConversationStore,
    StoreInfo,
):
    """Per-namespace processing state: every role at once.  All methods are coroutines (but
    `describe`); ids are opaque strings.  A backend subclasses this and implements each role's
    abstract methods (Python refuses to build one that misses any)."""

    namespace: str
    #: When set, done markers expire after horizon + HORIZON_MARGIN (the worker ignores messages
    #: older than the horizon before they reach the store), except those finished `forever`.
    #: None keeps markers forever.
    horizon: timedelta | None

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
