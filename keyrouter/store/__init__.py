"""Processing state backends.  `open_store(url)` picks one from a URL (docs/design.md, The store)."""

from __future__ import annotations

import re
from datetime import timedelta

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


def open_store(url: str, namespace: str = "default", horizon: timedelta | None = None) -> Store:
    """`redis://` / `rediss://` (one server), `redis+cluster://` / `rediss+cluster://` (any node of
    a Redis Cluster), `sqlite:///relative/path`, `sqlite:////absolute/path` (as in
    SQLAlchemy; `sqlite://` alone is an in-memory database) or `memory://`.

    Errors name the scheme only: the URL may hold a password."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError("store URL needs a scheme: redis://, rediss://, redis+cluster://, sqlite:/// or memory://")
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        # each backend is imported for its own URL only (its modules import this package)
        from redis.exceptions import RedisError  # noqa: PLC0415

        from keyrouter.store.redis import RedisStore  # noqa: PLC0415

        try:
            return RedisStore.from_url(url, namespace, horizon)
        except (ValueError, RedisError):
            raise ValueError(f"invalid {scheme}:// store URL (check host, port and db)") from None
    if scheme == "sqlite":
        from keyrouter.store.sqlite import SqliteStore  # noqa: PLC0415

        if rest == "":
            return SqliteStore(":memory:", namespace, horizon)
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                "sqlite store URL must be sqlite:///relative/path or sqlite:////absolute/path"
            )
        return SqliteStore(rest[1:], namespace, horizon)
    if scheme == "memory":
        from keyrouter.store.memory import MemoryStore  # noqa: PLC0415

        if rest:
            raise ValueError("memory store URL takes nothing after memory://")
        return MemoryStore(namespace, horizon)
    shown = f" {scheme!r}" if re.fullmatch(r"[a-z][a-z0-9+.\-]{0,19}", scheme) else ""
    raise ValueError(
        f"unsupported store URL scheme{shown}: use redis://, rediss://, redis+cluster://, sqlite:/// or memory://"
    )
