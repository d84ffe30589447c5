"""Start-up and hot reload with 10,000 keyword rules: from reading the files to a router that routes.

    python bench/bench_startup.py [--runs 5] [--profile] [--against /path/to/other/checkout]

The rules folder holds the shipped rules plus 10,000 generated keyword rules and 50 patterns (the
generator of bench_router.py).  Each figure is the best and the median of `--runs` runs, and
ends with a first routed text (a router compiles its pattern sets on first use):

- naive: `yaml.load` with libyaml (no positions, no validation) and one Python regex per rule;
  the least any loader that reads the YAML can cost
- plain load: `load_rules` (positions, validation, compiled keywords and patterns) and `Router`
  with the garbage collector running: the load path without the cache, the baseline
- cold: `build_router` (what `run` and a reload call) with the cache off: the same load with the
  collector paused
- cold + write: `build_router` with an empty cache, which also writes it
- warm: `build_router` with the cache written (a hit)

Then the reload: a ticker task on the event loop wakes every millisecond while the rules reload,
and the longest gap between two wakes is how long routing of claimed messages could stall.  It is
measured for the load on the loop itself (the baseline), for `Reloader.reload` without the cache
(the build in a thread) and with it, and for a second with no reload (what the machine's load
alone adds).  `--against` runs the same reload (bench/reload_stall.py) on another checkout of
keyrouter, such as the main branch, as a baseline from the same machine and moment.  Last, a
cached router and a freshly built one route the same stream, to show a cached router routes as
fast.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from bench_router import rate, stream
from reload_stall import Holder, rules_folder, stall, summary

from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.worker.reload import Reloader, build_router

TEXTS = ["ILT AHKTEST RET", "REZ 123456", "kod3 12345", "Merhaba bugün"]


def first_routes(router: Router) -> None:
    for text in TEXTS:
        router.route(text)


def naive(path: Path) -> None:
    """libyaml straight to dicts, one Python regex per rule (no checks, no positions)."""
    regexes = []
    for file in sorted(path.glob("*.yaml")):
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
        for rule in data["rules"]:
            if "pattern" in rule:
                regexes.append(re.compile(rule["pattern"]))
            else:
                regexes.append(re.compile("|".join(re.escape(str(k).lower()) for k in rule["keywords"])))
    for text in TEXTS:
        any(r.fullmatch(text.lower()) for r in regexes)


def cold(path: Path) -> None:
    first_routes(Router(load_rules(path)))


def cpu_rate(route: Callable[[str], Any], texts: list[str]) -> float:
    start = time.process_time()
    for text in texts:
        route(text)
    return len(texts) / (time.process_time() - start)


def timed(runs: int, setup: Callable[[], Any], work: Callable[[], Any]) -> tuple[float, float]:
    """(best, median) seconds of `work`, each run after `setup` (untimed)."""
    times = []
    for _ in range(runs):
        setup()
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def reload_stalls(path: Path, cache: Path, runs: int) -> list[tuple[str, float, float]]:
    holder = Holder()
    reloader = Reloader(path, holder)

    async def on_the_loop() -> None:
        holder.use_router(Router(load_rules(path)))

    async def in_thread() -> None:
        assert await reloader.reload("bench")

    async def idle() -> None:
        await asyncio.sleep(1.0)

    rows = []
    for name, cache_dir, reload in (("no reload: 1 s idle (the machine's noise)", None, idle),
                                    ("on the loop, no cache (baseline)", None, on_the_loop),
                                    ("Reloader, no cache", None, in_thread),
                                    ("Reloader, cache hit", cache, in_thread)):
        reloader.cache_dir = cache_dir
        rows.append((name, *summary([asyncio.run(stall(reload)) for _ in range(runs)])))
    return rows


def profile(path: Path, top: int) -> str:
    prof = cProfile.Profile()
    prof.runcall(cold, path)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
    return "\n".join(lines[start:start + top + 1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top of the cold path")
    parser.add_argument("--against", action="append", default=[], metavar="CHECKOUT",
                        help="also measure the reload stall of another keyrouter checkout (a folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = rules_folder(Path(tmp), args.rules)
        words = [k for r in load_rules(folder).rules if r.name.startswith("kw") for k in
                 (kw.written for kw in r.keywords)]
        cache = Path(tmp) / "cache"
        size = (folder / "main.yaml").stat().st_size
        n_rules = len(load_rules(folder).rules)
        print(f"{n_rules:,} rules, {size / 1e6:.2f} MB of YAML; best / median of {args.runs} runs, "
              "from reading the files to a first routed text")

        def empty_cache() -> None:
            shutil.rmtree(cache, ignore_errors=True)

        def nothing() -> None:
            pass

        rows = [
            ("naive (libyaml dicts, re per rule)", timed(args.runs, nothing, lambda: naive(folder))),
            ("plain load (load_rules + Router)", timed(args.runs, nothing, lambda: cold(folder))),
            ("cold (build_router, cache off)", timed(args.runs, nothing, lambda: first_routes(
                build_router(folder)))),
            ("cold + writing the cache", timed(args.runs, empty_cache, lambda: first_routes(
                build_router(folder, cache_dir=cache)))),
            ("warm (build_router, cache hit)", timed(args.runs, nothing, lambda: first_routes(
                build_router(folder, cache_dir=cache)))),
        ]
        print(f"{'start-up':40} {'best s':>8} {'median s':>9}")
        for name, (best, median) in rows:
            print(f"{name:40} {best:>8.3f} {median:>9.3f}")
        print()
        print(f"{'reload of ' + format(n_rules, ',') + ' rules':40} {'max gap ms':>10} "
              f"{'worst ms':>9} {'reload s':>9}")
        for name, gap, worst, took in reload_stalls(folder, cache, args.runs):
            print(f"{name:40} {gap * 1000:>10.1f} {worst * 1000:>9.1f} {took:>9.3f}")
        for other in args.against:  # the same reload in another checkout, in its own process
            subprocess.run([sys.executable, str(Path(__file__).with_name("reload_stall.py")),
                            "--runs", str(args.runs), "--rules", str(args.rules)],
                           env={**os.environ, "PYTHONPATH": str(Path(other).resolve())}, check=True)
        print("(max gap: median over the runs of the longest ticker gap; worst: the longest of all)")
        print()
        texts = stream(random.Random(7), words, 50_000)
        fresh = Router(load_rules(folder))
        cached = build_router(folder, cache_dir=cache)
        rates: dict[str, list[float]] = {"fresh": [], "cached": []}
        for router in (fresh, cached):
            rate(router.route, texts[:2000])
        for i in range(6):  # interleaved, in CPU time: other processes' load is not counted
            name, router = (("fresh", fresh), ("cached", cached))[i % 2]
            rates[name].append(cpu_rate(router.route, texts))
        for name, got in rates.items():
            print(f"routing, {name + ' router:':16} best {max(got):>9,.0f}/s, median "
                  f"{statistics.median(got):>9,.0f}/s (CPU time, {len(texts):,} texts)")
        if args.profile:
            print("\ncold path, cProfile (top by own time):")
            print(profile(folder, 15))


if __name__ == "__main__":
    main()
