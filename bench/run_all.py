"""Run every benchmark of bench/, one after another, after a description of this machine.

    .venv/bin/python bench/run_all.py                  # every benchmark (long: tens of minutes)
    .venv/bin/python bench/run_all.py --list           # the machine and the commands, nothing run
    .venv/bin/python bench/run_all.py --only router,store
    .venv/bin/python bench/run_all.py --quick          # the routing benchmark on a small stream

Each benchmark prints its naive baseline beside its own figure, from the same run.  The machine
description comes first (CPU model, cores, memory, Python, Redis version, load average) so a
table copied into bench/README.md carries the machine it was measured on.  The Redis benchmarks
use their own databases and namespaces and delete only their own keys.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    what: str
    #: the script's arguments, given the Redis URL and whether the run is --quick
    args: Callable[[str, bool], list[str]]
    quick: bool = False  # part of a --quick run


def _router_args(url: str, quick: bool) -> list[str]:
    return ["--texts", "5000", "--naive-texts", "200"] if quick else []


def _url_arg(url: str, quick: bool) -> list[str]:
    return [url]


def _no_args(url: str, quick: bool) -> list[str]:
    return []


def _scale_args(url: str, quick: bool) -> list[str]:
    return ["--redis", url]


BENCHMARKS = [
    Benchmark("router", "bench_router.py", "routing throughput against the number of rules",
              _router_args, quick=True),
    Benchmark("store", "bench_store.py", "store round trips and bytes per remembered id", _url_arg),
    Benchmark("pipeline", "bench_pipeline.py", "the whole pipeline on real Redis, no-op handlers",
              _url_arg),
    Benchmark("memory", "bench_memory.py", "memory per 100,000 queued messages, worker and Redis",
              _url_arg),
    Benchmark("scale", "bench_scale.py", "real worker processes: scale-out, polls, head-of-line",
              _scale_args),
    Benchmark("dashboard", "bench_dashboard.py", "the dashboard's pages over real volumes", _url_arg),
    Benchmark("reconcile", "bench_reconcile.py",
              "the provider's blacklist (200,000 numbers) against the ledger", _no_args),
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def redis_version(url: str) -> str:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except (redis.RedisError, OSError, KeyError) as exc:
        return f"unreachable at {url} ({type(exc).__name__})"


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def machine(url: str) -> list[tuple[str, str]]:
    """What a reader needs to weigh the figures: (label, value) pairs."""
    return [
        ("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        ("cpu", cpu_model()),
        ("cores", str(os.cpu_count() or "unknown")),
        ("memory", memory()),
        ("os", platform.platform()),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("redis", redis_version(url)),
        ("load average", load_average()),
    ]


def command(bench: Benchmark, url: str, quick: bool) -> list[str]:
    return [sys.executable, str(BENCH / bench.script), *bench.args(url, quick)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis", default=DEFAULT_REDIS, help=f"Redis URL (default {DEFAULT_REDIS})")
    parser.add_argument("--only", help="comma-separated names: " + ", ".join(b.name for b in BENCHMARKS))
    parser.add_argument("--list", action="store_true",
                        help="describe the machine, list the commands, run none")
    parser.add_argument("--quick", action="store_true", help="only the quick benchmarks, on small inputs")
    args = parser.parse_args(argv)
    chosen = BENCHMARKS
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in {b.name for b in BENCHMARKS}]
        if unknown:
            parser.error(f"unknown benchmark {', '.join(unknown)}; known: "
                         + ", ".join(b.name for b in BENCHMARKS))
        chosen = [b for b in BENCHMARKS if b.name in names]
    if args.quick:
        chosen = [b for b in chosen if b.quick]
    print("machine")
    for label, value in machine(args.redis):
        print(f"  {label:13} {value}")
    print()
    failed = []
    for bench in chosen:
        cmd = command(bench, args.redis, args.quick)
        print(f"== {bench.name}: {bench.what}")
        shown = [Path(cmd[0]).name, str(Path(cmd[1]).relative_to(BENCH.parent)), *cmd[2:]]
        print("   " + " ".join(shown), flush=True)
        if args.list:
            continue
        started = time.monotonic()
        done = subprocess.run(cmd, cwd=BENCH.parent, check=False)
        print(f"   ({time.monotonic() - started:.0f} s, exit {done.returncode})\n", flush=True)
        if done.returncode != 0:
            failed.append(bench.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
