"""The event-loop stall of a rules reload, for any keyrouter checkout (used by bench_startup.py).

    PYTHONPATH=/path/to/other/checkout python bench/reload_stall.py [--runs 5] [--rules 10000]

A ticker task wakes every millisecond while `Reloader.reload` reloads the generated rules folder
(bench_router.py's generator); the longest gap between two wakes is how long routing of claimed
messages could stall.  Only names every version has are imported, so the same measurement runs
against an older checkout (pass its folder in PYTHONPATH) as a baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_router import build_rules

import keyrouter
from keyrouter.worker.reload import Reloader


async def stall(reload: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(longest gap between two wakes of a 1 ms ticker, seconds the reload took)."""
    done = asyncio.Event()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    gaps.clear()
    start = time.perf_counter()
    await reload()
    took = time.perf_counter() - start
    await asyncio.sleep(0.01)
    done.set()
    await task
    return max(gaps), took


def rules_folder(parent: Path, n: int) -> Path:
    """The shipped rules plus `n` generated keyword rules and 50 patterns, in a folder."""
    folder = parent / "rules"
    folder.mkdir()
    built, _ = build_rules(n, parent, random.Random(2026))
    built.rename(folder / "main.yaml")
    return folder


class Holder:
    """What a reload swaps the router of (the dispatcher, in a worker)."""

    def __init__(self) -> None:
        self.router: Any = None

    def use_router(self, router: Any) -> None:
        self.router = router


def summary(results: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(median of the runs' longest gaps, longest gap of all, median reload seconds)."""
    gaps = sorted(gap for gap, _ in results)
    return statistics.median(gaps), gaps[-1], statistics.median(took for _, took in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rules", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reloader = Reloader(rules_folder(Path(tmp), args.rules), Holder())
        reloader.cache_dir = None  # where the checkout has a cache: a reload of changed rules

        async def reload() -> None:
            assert await reloader.reload("bench")

        gap, worst, took = summary([asyncio.run(stall(reload)) for _ in range(args.runs)])
    print(f"{'Reloader (' + str(Path(keyrouter.__file__).parent.parent) + ')':40} "
          f"{gap * 1000:>10.1f} {worst * 1000:>9.1f} {took:>9.3f}")


if __name__ == "__main__":
    main()
