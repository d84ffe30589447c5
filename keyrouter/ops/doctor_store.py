"""The store checks of `keyrouter doctor`: reachable and how fast; on Redis (every primary of a
cluster) eviction policy, persistence and version; on SQLite a writable folder and WAL mode."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from keyrouter import timefmt
from keyrouter.settings import Settings
from keyrouter.store import LedgerStore, ReconcileStore, ServerFacts, open_store

MIN_REDIS = (6, 2)


class ReconcileLedger(ReconcileStore, LedgerStore, Protocol):
    """What the reconcile check reads: the reconciliation document and the ledger's first page."""


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name}: {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix else text


async def check_store(settings: Settings) -> list[Check]:
    try:
        store = open_store(settings.store, settings.namespace, settings.horizon_delta())
    except ValueError as exc:
        return [Check("store", "fail", str(exc), "fix KEYROUTER_STORE")]
    try:
        health = await store.health(timeout=10)
        if health.cluster_node:
            return [Check("store", "fail", f"{store!r} is a node of a Redis Cluster",
                          "use a redis+cluster:// URL")]
        if not health.ok:
            return [Check("store", "fail", f"{store!r} unreachable ({health.error})",
                          "check KEYROUTER_STORE and that the server runs and accepts this host")]
        found = [Check("store", "ok", f"{store!r} answered in {health.latency_ms:.1f} ms")]
        found.append(await check_reconcile(store, settings))
        described = store.describe()
        if health.servers:
            found += _redis_checks(health.servers)
        elif described.file is not None:
            found += _sqlite_checks(described.file)
        else:
            found.append(Check("store kind", "warn", "memory:// keeps nothing between runs",
                               "use redis:// or sqlite:/// in production"))
        return found
    finally:
        await store.close()


async def check_reconcile(store: ReconcileLedger, settings: Settings, now: float | None = None) -> Check:
    """The last blacklist reconciliation (docs/reconciliation.md): when, and whether the ledger
    and the provider agreed."""
    state = await asyncio.wait_for(store.reconcile_state(), 10) or {}
    last = state.get("last")
    interval = settings.reconcile_seconds()
    how = ("the fetching worker runs one every KEYROUTER_RECONCILE_INTERVAL; or run "
           "`keyrouter optouts reconcile`")
    if not last:
        if not await store.optouts_page(limit=1):
            return Check("reconcile", "ok", "no reconciliation yet, and an empty ledger to reconcile")
        return Check("reconcile", "warn", "no blacklist reconciliation has run yet on this ledger",
                     how)
    at = float(last["at"])
    age = (time.time() if now is None else now) - at
    when = timefmt.minute(at)
    detail = (f"last {last.get('mode')} pass {when} Turkey time ({age / 60:.0f} min ago): "
              f"{last.get('listed')} on the provider's blacklist, {last.get('recorded')} provider "
              f"opt-outs recorded, {last.get('readded')} re-added, {last.get('reported')} reported")
    if age > 2 * interval + 600:
        return Check("reconcile", "warn", detail + f"; older than twice the interval ({interval:.0f}s)",
                     "check that a worker runs (it reconciles while it fetches)")
    if last.get("result") != "agree":
        return Check("reconcile", "warn", detail + "; something was left only reported",
                     "run `keyrouter optouts reconcile --dry-run` and read docs/reconciliation.md")
    return Check("reconcile", "ok", detail + "; the ledger and the provider agreed")


def _redis_checks(servers: tuple[ServerFacts, ...]) -> list[Check]:
    """Policy, persistence and version of the server, or of every primary of a cluster (the
    worst one is reported, with its address)."""
    targets = [(f" on {s.name}" if s.name else "", s) for s in servers]
    return [_worst(targets, _policy), _worst(targets, _persistence), _worst(targets, _version)]


def _worst(targets: list[tuple[str, ServerFacts]], check: Callable[[ServerFacts], Check]) -> Check:
    order = {"fail": 0, "warn": 1, "ok": 2, "skip": 3}
    results = []
    for where, info in targets:
        c = check(info)
        if c.status != "ok" and where:
            c.detail += where
        results.append(c)
    return min(results, key=lambda c: order[c.status])


def _policy(info: ServerFacts) -> Check:
    policy = info.policy
    if policy != "noeviction":
        return Check("redis maxmemory-policy", "fail",
                     f"{policy}: Redis may evict done markers and repeat handler effects",
                     "CONFIG SET maxmemory-policy noeviction, and set it in redis.conf")
    return Check("redis maxmemory-policy", "ok", "noeviction")


def _persistence(info: ServerFacts) -> Check:
    if info.aof:
        return Check("redis persistence", "ok", "AOF on")
    what = "persistence off" if info.save == "" else "AOF off (snapshots only)"
    return Check("redis persistence", "warn", f"{what}: a restart loses recent done markers",
                 "appendonly yes (and appendfsync everysec)")


def _version(info: ServerFacts) -> Check:
    version = info.version
    try:
        parts = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        parts = (0, 0)
    if parts < MIN_REDIS:
        return Check("redis version", "warn", f"Redis {version}",
                     f"use Redis {'.'.join(map(str, MIN_REDIS))} or later")
    return Check("redis version", "ok", f"Redis {version}")


def _sqlite_checks(path: str) -> list[Check]:
    found: list[Check] = []
    if path == ":memory:":
        return [Check("sqlite", "warn", "an in-memory database keeps nothing", "use sqlite:///path")]
    folder = Path(path).resolve().parent
    if os.access(folder, os.W_OK):
        found.append(Check("sqlite folder", "ok", f"{folder} is writable"))
    else:
        found.append(Check("sqlite folder", "fail",
                           f"{folder} is not writable (WAL needs its -wal and -shm files)",
                           "give the worker's user write access to the folder"))
    try:
        with sqlite3.connect(path, timeout=5) as db:
            mode = str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    except sqlite3.Error as exc:
        return [*found, Check("sqlite journal", "fail", f"cannot read {path}: {exc}", "check the file")]
    if mode == "wal":
        found.append(Check("sqlite journal", "ok", "WAL mode"))
    else:
        found.append(Check("sqlite journal", "warn", f"journal_mode is {mode}, not WAL",
                           "let keyrouter open it once, or PRAGMA journal_mode=WAL"))
    return found
