"""The real Redis the tests use: one variable per purpose, each with its own database on
127.0.0.1:6379 by default (docs/getting-started-notes.md, "The tests' Redis databases").  Every
test uses namespaces of its own and deletes their keys (`delete_namespace`), never FLUSHDB.

| purpose                                   | variable                     | default db |
|-------------------------------------------|------------------------------|-----------:|
| benchmarks (bench/, not the tests)        | their REDIS_URL argument     |         11 |
| dashboard tests (tests/web/)              | KEYROUTER_TEST_WEB_REDIS_URL |         12 |
| store tests and lease cases on every store| KEYROUTER_TEST_REDIS_URL     |         13 |
| end-to-end worker and intake tests        | KEYROUTER_E2E_REDIS_URL      |         14 |
"""

from __future__ import annotations

import os

import redis

from keyrouter.store.keys import Keys

BASE = "redis://127.0.0.1:6379"
BENCH_DB, WEB_DB, STORE_DB, E2E_DB = 11, 12, 13, 14
WEB_URL = os.environ.get("KEYROUTER_TEST_WEB_REDIS_URL", f"{BASE}/{WEB_DB}")
STORE_URL = os.environ.get("KEYROUTER_TEST_REDIS_URL", f"{BASE}/{STORE_DB}")
E2E_URL = os.environ.get("KEYROUTER_E2E_REDIS_URL", f"{BASE}/{E2E_DB}")


def delete_namespace(url: str, namespace: str) -> int:
    """Delete the keys of one namespace (SCAN by its pattern); returns how many are left (0)."""
    client = redis.Redis.from_url(url)
    try:
        pattern = Keys(namespace).pattern
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
        return sum(1 for _ in client.scan_iter(match=pattern, count=1000))
    finally:
        client.close()
