"""The exceptions a store raises when its backend fails (unreachable, refusing writes), whatever
the backend: callers catch these instead of importing each backend's library."""

from __future__ import annotations

import sqlite3

import redis

STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, sqlite3.Error, OSError)
