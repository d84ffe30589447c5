"""Memory per 100,000 queued messages (not a test).

    .venv/bin/python bench/bench_memory.py [REDIS_URL]     # default redis://127.0.0.1:6379/11

A burst the worker has fetched but not yet run lives in two places:
- in the worker's process: each row parsed into a `Message` and offered to the dispatcher's queue
  (routed at once, for its priority, and waiting for a slot);
- in Redis: the rows the fetch leader publishes for every worker (the shared feed), until each
  id is finished.

Measured with `tracemalloc` (Python allocations, peak and retained) and Redis `used_memory`
before and after publishing.  **Naive baseline**: the same rows kept as the decoded get-inbox
JSON (a list of dicts), which is the least a worker holding them could keep.
Uses its own namespace and deletes only its keys.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import redis.asyncio as aioredis

from keyrouter.dispatch import Dispatcher
from keyrouter.message import TURKEY, parse_row
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.store.keys import Keys
from keyrouter.store.memory import MemoryStore
from keyrouter.store.redis import RedisStore

URL = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/11"
N = 100_000
RULES = """
version: 1
rules:
  - {name: optout, keywords: [RET, IPTAL], handlers: [log]}
  - {name: survey, pattern: 'anket (?P<choice>[ab])', handlers: [log]}
default:
  handlers: [log]
"""


def inbox_json(n: int) -> str:
    """A get-inbox answer's rows as JSON text (one text in five is free text)."""
    when = (datetime.now(TURKEY) - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    texts = ["RET", "İptal", "anket a", "ANKET B", "merhaba, bilgi alabilir miyim?"]
    return json.dumps([{"id": f"{9_000_000_000 + i}", "date": when, "sender": f"+9055{i:08d}",
                        "number": "+908505550000", "text": texts[i % 5]} for i in range(n)])


def measured(build: Callable[[], Any]) -> tuple[Any, int, int]:
    """(result, bytes retained, peak bytes) of `build()`, by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    result = build()
    gc.collect()
    after = tracemalloc.take_snapshot()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    retained = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return result, retained, peak


def per(total: int) -> str:
    return f"{total / 2**20:,.1f} MiB ({total / N:,.0f} bytes a message)"


async def feed_bytes(source: list[dict[str, Any]]) -> int:
    """Redis `used_memory` grown by publishing the rows to a fresh namespace's shared feed."""
    client = aioredis.Redis.from_url(URL)
    namespace = f"bench-{uuid4().hex[:12]}"
    store = RedisStore(client, namespace, None)
    try:
        token = await store.acquire_fetch("bench", 60.0, 0.0)
        assert token is not None
        before = int((await client.info("memory"))["used_memory"])
        pairs = [(r["id"], json.dumps(r, ensure_ascii=False)) for r in source]
        for start in range(0, len(pairs), 10_000):
            assert await store.publish(pairs[start:start + 10_000], token) >= 0
        after = int((await client.info("memory"))["used_memory"])
        return after - before
    finally:
        keys = [k async for k in client.scan_iter(match=f"{Keys(namespace).prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start:start + 1000])
        await client.aclose()


def main() -> None:
    encoded = inbox_json(N)
    path = Path(tempfile.mkdtemp()) / "rules.yaml"
    path.write_text(RULES)
    router = Router(load_rules(path))

    naive, naive_bytes, _ = measured(lambda: json.loads(encoded))
    messages, message_bytes, _ = measured(lambda: [parse_row(r) for r in json.loads(encoded)])
    dispatcher = Dispatcher(router, MemoryStore(), namespace="bench")
    offered, queue_bytes, queue_peak = measured(lambda: dispatcher.offer(messages))
    assert offered == N and len(naive) == N
    print(f"Memory per {N:,} queued messages (one text in five free text, the rest keywords)")
    print(f"  naive baseline, the decoded get-inbox rows: {per(naive_bytes)}")
    print(f"  parsed messages (each keeps its row):       {per(message_bytes)}")
    print(f"  the dispatcher's queue on top, routed:      {per(queue_bytes)}, "
          f"peak while offering {queue_peak / 2**20:,.1f} MiB")
    print(f"  worker in all (messages + queue):           {per(message_bytes + queue_bytes)}")
    print(f"  Redis, the shared feed of published rows:   {per(asyncio.run(feed_bytes(naive)))}")


if __name__ == "__main__":
    main()
