"""Processing state backends.  `open_store(url)` picks one from a URL (docs/design.md, The store)."""

from __future__ import annotations

from keyrouter.store.base import (
    HORIZON_MARGIN,
    Claimed,
    DeadLetter,
    Description,
    Health,
    LedgerCursor,
    OptOut,
    ServerFacts,
    Store,
    SurveyResults,
    ledger_cursor,
)
from keyrouter.store.opening import open_store
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

__all__ = [
    "HORIZON_MARGIN", "ActivityStore", "ClaimStore", "Claimed", "ConversationStore", "DeadLetter",
    "DeadLetterStore", "Description", "FeedStore", "Health", "LedgerCursor", "LedgerStore", "OptOut",
    "ReconcileStore", "ServerFacts", "Store", "StoreInfo", "SurveyResults", "VoteStore",
    "ledger_cursor", "open_store",
]

