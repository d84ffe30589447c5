"""Hand-run benchmark of the blacklist reconciliation (docs/reconciliation.md), not a test.

    .venv/bin/python bench/bench_reconcile.py [NUMBERS]      # default 200,000

The fake iletiMerkezi holds NUMBERS blacklisted numbers; an SQLite store (a temporary file) holds
the ledger: every number but 1,000 (link clicks) has a blacklist line, plus 1,000 ledger opt-outs
the provider lost (drift).  The ledger is written in bulk through the store's own connection
(the same statements `record_optout` runs, one transaction), since one call per line would take
minutes.  Measured, each on the same data:

- keyrouter's full pass, plan only (what `--dry-run` does): get-blacklist pages and the ledger
  read in pages;
- keyrouter's full pass: the same, then 1,000 provider opt-outs run through the dispatcher
  (add-blacklist each) and 1,000 numbers added again;
- keyrouter's incremental pass an hour later, with 100 new link clicks: the date filter;
- a naive baseline: every page of the list, then one `latest_optout` round trip per number, as
  a reconciliation without the ledger read (and without the date filter: every pass is full).

Time is wall time; memory is the peak of Python allocations (tracemalloc) during the pass (the
fake provider runs in this process, on threads, and its own allocations count too); provider
calls are what the fake received.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from keyrouter.compliance.reconcile import Reconciler
from keyrouter.providers.blacklist import fetch_blacklist
from keyrouter.store.sqlite import sql as stmt
from keyrouter.testing import FakeIletiMerkezi, pipeline

NUMBERS = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
CLICKS = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000  # on the provider's list only
LOST = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000  # in the ledger, missing at the provider
RULES = "version: 1\nrules:\n  - name: optout\n    keywords: [RET]\n    handlers: [blacklist]\n"


def number(i: int) -> str:
    return f"+9053{i:08d}"


async def fill_ledger(store: Any, numbers: list[str], at: float) -> None:
    rows = [store._sql.params(message_id=f"m{i}", action="blacklist", number=n, keyword="RET",
                     received_at=at + i * 0.001, handled_at=at + i * 0.001 + 1, outcome=None,
                     transaction_id=None, dated=1) for i, n in enumerate(numbers)]

    def run(db: Any) -> None:
        db.executemany(f"INSERT OR IGNORE INTO optouts ({stmt.LEDGER_COLUMNS}) VALUES"
                       f" ({stmt.LEDGER_VALUES})", rows)
        db.executemany(stmt.LATEST_UPDATE, rows)

    await store._sql.write(run)


async def measure(name: str, fake: FakeIletiMerkezi, body: Callable[[], Awaitable[str]]) -> None:
    before = len(fake.requests)
    tracemalloc.start()
    started = time.perf_counter()
    detail = await body()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    calls = Counter(r.endpoint for r in fake.requests[before:])
    shown = ", ".join(f"{n} {e}" for e, n in sorted(calls.items()))
    print(f"{name:<34} {seconds:8.2f} s  peak {peak / 2**20:7.1f} MiB  provider calls: {shown}"
          f"  ({detail})")


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder, FakeIletiMerkezi() as fake:
        rules = Path(folder, "rules.yaml")
        rules.write_text(RULES, encoding="utf-8")
        now = time.time()
        listed = [number(i) for i in range(NUMBERS)]
        fake.add_from_panel(*listed, at=now - 7 * 86400)
        lost = [number(NUMBERS + i) for i in range(LOST)]
        async with pipeline(rules, fake=fake, store=f"sqlite:///{folder}/bench.sqlite3",
                            concurrency=64) as runtime:
            await fill_ledger(runtime.store, listed[CLICKS:] + lost, now - 8 * 86400)
            fake.requests.clear()  # keep only what the passes send
            await fetch_blacklist(runtime.client)  # warm the fake's sorted listing
            print(f"{NUMBERS:,} numbers on the fake's blacklist, {len(listed) - CLICKS + LOST:,} "
                  f"ledger opt-outs ({CLICKS:,} link clicks not in the ledger, {LOST:,} lost at "
                  "the provider)")

            async def naive() -> str:
                found = await fetch_blacklist(runtime.client)
                missing = 0
                for n in found.numbers:
                    latest = await runtime.store.latest_optout(n)
                    missing += latest is None
                return f"{len(found.numbers):,} read, {missing:,} not in the ledger, store round " \
                       f"trips: {len(found.numbers):,}; drift not even looked for"

            reconciler = Reconciler(runtime.store, runtime.client, router=runtime.router,
                                    settle=0.0)

            async def plan_only() -> str:
                plan = await reconciler.plan(full=True)
                return (f"what --dry-run reads: {len(plan.record):,} to record, {len(plan.readd):,} "
                        "to add again, ledger read in pages of 5,000")

            async def full() -> str:
                out = await reconciler.run(runtime.dispatcher.process, full=True)
                return (f"{len(out.plan.record):,} provider opt-outs recorded, {len(out.readded):,} "
                        f"re-added, result {out.result}")

            async def incremental() -> str:
                fake.add_from_panel(*[number(NUMBERS + LOST + i) for i in range(100)])
                later = Reconciler(runtime.store, runtime.client, router=runtime.router,
                                   settle=0.0, clock=lambda: time.time() + 1)
                out = await later.run(runtime.dispatcher.process, full=False)
                return f"{out.plan.listed} in the window, {len(out.plan.record)} recorded"

            await measure("naive baseline (one pass)", fake, naive)
            await measure("keyrouter full pass, plan only", fake, plan_only)
            await measure("keyrouter full pass", fake, full)
            await measure("keyrouter incremental pass", fake, incremental)
            await measure("naive baseline (again)", fake, naive)


if __name__ == "__main__":
    asyncio.run(main())
