"""The Redis backend: one server or a Redis Cluster, every batch one Lua script (store.py)."""

from keyrouter.store.redis.store import RedisStore

__all__ = ["RedisStore"]
