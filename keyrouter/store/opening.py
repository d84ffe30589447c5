"""A store from its URL: the one place that knows every backend (docs/design.md, The store)."""

from __future__ import annotations

import re
from datetime import timedelta

from redis.exceptions import RedisError

from keyrouter.store.base import Store
from keyrouter.store.memory import MemoryStore
from keyrouter.store.redis import RedisStore
from keyrouter.store.sqlite import SqliteStore


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
        try:
            return RedisStore.from_url(url, namespace, horizon)
        except (ValueError, RedisError):
            raise ValueError(f"invalid {scheme}:// store URL (check host, port and db)") from None
    if scheme == "sqlite":
        if rest == "":
            return SqliteStore(":memory:", namespace, horizon)
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                "sqlite store URL must be sqlite:///relative/path or sqlite:////absolute/path"
            )
        return SqliteStore(rest[1:], namespace, horizon)
    if scheme == "memory":
        if rest:
            raise ValueError("memory store URL takes nothing after memory://")
        return MemoryStore(namespace, horizon)
    shown = f" {scheme!r}" if re.fullmatch(r"[a-z][a-z0-9+.\-]{0,19}", scheme) else ""
    raise ValueError(
        f"unsupported store URL scheme{shown}: use redis://, rediss://, redis+cluster://, sqlite:/// or memory://"
    )
