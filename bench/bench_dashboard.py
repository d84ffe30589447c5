"""Hand-run benchmark of the dashboard's pages over a real Redis (not a test).

    .venv/bin/python bench/bench_dashboard.py [REDIS_URL]     # default redis://127.0.0.1:6379/11

Fills its own namespace with 100,000 opt-out ledger entries, 10,000 dead letters (1,000 of the
opt-out rule: pending opt-outs), 50 more pending opt-outs and a survey, then renders each page
through the app (Starlette's TestClient, in process: routing, store reads, templates, HTTP) and
prints the median and worst of 7 renders beside the naive baseline: reading the whole ledger and
every dead letter, as a page without pagination would.  The target is under 300 ms a page.
Deletes only its own keys.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path
from uuid import uuid4

import redis

from keyrouter.store import OptOut, open_store
from keyrouter.store.keys import Keys
from keyrouter.web.app import create_app
from keyrouter.web.pages import RulesInfo, encode_cursor

URL = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/11"
LEDGER, DEAD, PENDING, RUNS = 100_000, 10_000, 50, 7
T0 = 1_780_000_000.0
RULES = """
version: 1
rules:
  - name: survey
    pattern: '(?:anket) (?P<choice>[abc])'
    handlers:
      - survey: {id: spring-2026, choices: [a, b, c]}
  - name: optout
    keywords: [RET]
    handlers: [blacklist]
"""


async def fill(namespace: str) -> float:
    """Returns the received_at of the ledger's middle entry (a deep page's cursor)."""
    async with open_store(URL, namespace) as store:
        batch = []
        for i in range(LEDGER):
            action = "unblacklist" if i % 10 == 0 else "blacklist"
            batch.append(store.record_optout(OptOut(f"+90532{i:07d}", action, f"m{i:06d}", "RET",
                                                    T0 + i * 60.0, T0 + i * 60.0 + 20)))
            if len(batch) == 1000:
                await asyncio.gather(*batch)
                batch = []
        for i in range(DEAD):
            row = {"id": f"d{i:05d}", "sender": f"+90532{i:07d}", "text": f"ANKET {'abcd'[i % 4]}",
                   "date": "2026-11-27 12:00:00"}
            rule = "optout" if i % 10 == 0 else "survey"  # 1,000 opt-outs pending in the dead letters
            batch.append(store.dead_letter(f"d{i:05d}", "bench", f"webhook answered 500 ({i})",
                                           rule=rule, row=row, now=T0 + i))
            if len(batch) == 1000:
                await asyncio.gather(*batch)
                batch = []
        for i in range(PENDING):
            await store.mark_optout_pending(OptOut(f"+90533{i:07d}", "blacklist", f"p{i}", "RET",
                                                   T0 + LEDGER * 60.0 + i, 0.0))
        for i in range(300):
            await store.vote("spring-2026", f"v{i}", "ab"[i % 2], policy="last", now=T0 + i)
    return T0 + (LEDGER // 2) * 60.0


async def naive(namespace: str) -> float:
    async with open_store(URL, namespace) as store:
        t = time.perf_counter()
        await store.optouts()
        await store.dead_letters()
        return time.perf_counter() - t


def main() -> None:
    warnings.simplefilter("ignore", DeprecationWarning)  # Starlette's note about httpx
    from starlette.testclient import TestClient

    namespace = f"bench-dash-{uuid4().hex[:12]}"
    client = redis.Redis.from_url(URL)
    try:
        t = time.perf_counter()
        middle = asyncio.run(fill(namespace))
        print(f"filled {LEDGER:,} ledger entries, {DEAD:,} dead letters, {PENDING} pending in "
              f"{time.perf_counter() - t:.1f}s ({URL}, namespace {namespace})")
        deep = encode_cursor(OptOut("", "blacklist", f"m{LEDGER // 2:06d}", None, middle, 0.0))
        with tempfile.TemporaryDirectory() as folder:
            rules = Path(folder) / "rules.yaml"
            rules.write_text(textwrap.dedent(RULES).lstrip())
            app = create_app(lambda: open_store(URL, namespace), RulesInfo.load(str(rules), time.time()))
            pages = [
                ("status", "/"),
                ("surveys", "/surveys"),
                ("opt-outs, newest", "/optouts"),
                ("opt-outs, page in the middle", f"/optouts?before={deep}"),
                ("opt-outs, one day", "/optouts?from=2026-05-30&to=2026-05-30"),
                ("opt-outs, effect unblacklist (1 in 10)", "/optouts?effect=unblacklist"),
                ("opt-outs, effect iys_onay (none: 20,000 searched)", "/optouts?effect=iys_onay"),
                ("dead letters, newest", "/dead-letters"),
                ("dead letters, last page", f"/dead-letters?page={DEAD // 50}"),
                ("dead letters of one rule (1 in 10)", "/dead-letters?rule=optout"),
                ("one dead letter", "/dead-letters/d05000"),
            ]
            with TestClient(app) as http:
                for name, path in pages:
                    assert http.get(path).status_code == 200, path  # warm-up (scripts loaded)
                    times = []
                    for _ in range(RUNS):
                        t = time.perf_counter()
                        r = http.get(path)
                        times.append(time.perf_counter() - t)
                        assert r.status_code == 200
                    ms = [x * 1000 for x in times]
                    flag = "ok" if max(ms) < 300 else "SLOW"
                    print(f"  {name:46} median {statistics.median(ms):7.1f} ms   worst {max(ms):7.1f} ms"
                          f"   {flag}")
        print(f"  naive baseline: read the whole ledger and every dead letter: "
              f"{asyncio.run(naive(namespace)) * 1000:7.1f} ms (before any rendering)")
        print("  (2-core machine shared with other engineers' test runs: figures are noisy)")
    finally:
        for key in client.scan_iter(match=Keys(namespace).pattern, count=1000):
            client.delete(key)
        client.close()


if __name__ == "__main__":
    main()
