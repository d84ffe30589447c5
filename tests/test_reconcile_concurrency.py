"""Reconciliation under concurrency and crashes (docs/reconciliation.md): two reconciles and a
worker processing a RET at once record one ledger entry and one İYS record per opt-out; a
`keyrouter optouts reconcile` killed with SIGKILL mid-run, then run again, doubles nothing and
misses nothing; the worker reconciles on its own and counts it in /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from processes import wait_until
from redis_server import free_port

from keyrouter.compliance.channels import channel_of
from keyrouter.compliance.reconcile import Reconciler, iys_params_of
from keyrouter.message import parse_row
from keyrouter.testing import FakeIletiMerkezi, FakeIys, pipeline

BIN = Path(sys.executable).parent
RULES = """
version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers: [blacklist, iys]
"""


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"+90533{i:07d}" for i in range(start, start + n)]


def iys_env(iys: FakeIys) -> dict[str, str]:
    return {k.upper(): v for k, v in iys.settings().items()}


def assert_one_each(ledger: list[Any], iys: FakeIys, expected: set[str]) -> None:
    per = Counter((e.number, e.action) for e in ledger)
    assert {n for n, _ in per} == expected
    assert all(per[(n, a)] == 1 for n in expected for a in ("blacklist", "iys_ret")), \
        [k for k, v in per.items() if v != 1]
    rets = Counter(r["recipient"] for r in iys.records if r["status"] == "RET")
    assert set(rets) == expected and set(rets.values()) == {1}


async def _reconciles_beside_a_ret(write_rules: Any, tmp_path: Path, ret_first: bool) -> None:
    """Two reconciles at once and a worker processing an inbox RET of one of the numbers: the RET
    runs beside the reconciles (`ret_first` False) or before them."""
    rules = write_rules(RULES)
    store = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    clicks = numbers(40)
    ret_number = "+905339990001"  # texted RET: the panel blacklisted it and the inbox has the row
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        for n in [*clicks, ret_number]:
            iys.add_record(n, "ONAY")
        provider.add_from_panel(*clicks, ret_number, at=time.time() - 3600)
        ret = provider.add_message("RET", sender=ret_number[1:])
        provider.fail_next("add-blacklist", "slow:0.02", times=200)  # widen every window
        settings = iys.settings()
        async with pipeline(rules, fake=provider, store=store, **settings) as worker, \
                pipeline(rules, fake=provider, store=store, **settings) as one, \
                pipeline(rules, fake=provider, store=store, **settings) as two:

            def reconciler(runtime: Any) -> Reconciler:
                return Reconciler(runtime.store, runtime.client, router=runtime.router,
                                  iys=iys_params_of(runtime.router.rules, "HS_WEB"), settle=0.0)

            inbox = worker.dispatcher.process([parse_row(ret)])
            if ret_first:
                await inbox
                await asyncio.gather(reconciler(one).run(one.dispatcher.process),
                                     reconciler(two).run(two.dispatcher.process))
            else:
                await asyncio.gather(inbox, reconciler(one).run(one.dispatcher.process),
                                     reconciler(two).run(two.dispatcher.process))
            final = await reconciler(one).run(one.dispatcher.process)
            ledger = await one.store.optouts()
    assert final.result == "agree" and final.plan.record == []
    assert_one_each(ledger, iys, {*clicks, ret_number})
    ret_lines = [e for e in ledger if e.number == ret_number]
    assert len({e.message_id for e in ret_lines}) == 1  # inbox or provider, never both
    assert {channel_of(e.message_id) for e in ledger if e.number in clicks} == {"provider"}


@pytest.mark.anyio
async def test_two_reconciles_after_a_worker_ret_record_one_entry_each(write_rules: Any,
                                                                      tmp_path: Path) -> None:
    await _reconciles_beside_a_ret(write_rules, tmp_path, ret_first=True)


@pytest.mark.anyio
async def test_two_reconciles_and_a_worker_at_once_record_one_entry_each(write_rules: Any,
                                                                        tmp_path: Path) -> None:
    await _reconciles_beside_a_ret(write_rules, tmp_path, ret_first=False)

def _ledger(path: Path) -> list[tuple[str, str]]:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT number, action FROM optouts").fetchall()
    except sqlite3.OperationalError:  # the table is not there yet
        return []


def test_kill_9_mid_reconcile_then_rerun(write_rules, tmp_path: Path) -> None:
    rules = write_rules(RULES)
    path = tmp_path / "k.sqlite3"
    clicks = numbers(400, 1000)
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        for n in clicks:
            iys.add_record(n, "ONAY")
        provider.add_from_panel(*clicks, at=time.time() - 3600)
        provider.fail_next("add-blacklist", "slow:0.05", times=400)
        env = {**os.environ, "ILETIMERKEZI_API_KEY": provider.key,
               "ILETIMERKEZI_API_HASH": provider.hash, "ILETIMERKEZI_BASE_URL": provider.base_url,
               "KEYROUTER_STORE": f"sqlite:///{path}", "KEYROUTER_RULES": str(rules),
               "KEYROUTER_LEASE": "1", "KEYROUTER_CONCURRENCY": "8", **iys_env(iys)}
        command = [str(BIN / "keyrouter"), "optouts", "reconcile"]
        log = (tmp_path / "first.log").open("w")
        first = subprocess.Popen(command, env=env, stdout=log, stderr=log)  # a pipe would fill
        wait_until(lambda: len(_ledger(path)) >= 40 or first.poll() is not None, 60,
                   "the first ledger lines")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        done_before = len(_ledger(path))
        assert first.returncode == -signal.SIGKILL and done_before < 2 * len(clicks)
        time.sleep(1.5)  # the killed run's claims expire (KEYROUTER_LEASE=1)
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "result: the ledger and the provider agree" in again.stdout
        rows = _ledger(path)
    per = Counter(rows)
    assert set(per.values()) == {1} and {n for n, _ in per} == set(clicks)
    assert {a for _, a in per} == {"blacklist", "iys_ret"} and len(rows) == 2 * len(clicks)
    rets = Counter(r["recipient"] for r in iys.records if r["status"] == "RET")
    assert set(rets) == set(clicks) and set(rets.values()) == {1}


def test_the_worker_reconciles_and_counts_it(write_rules, tmp_path: Path) -> None:
    """`keyrouter run` (the fetch leader) reconciles at its first poll: a link-click opt-out
    reaches the ledger and İYS, and /metrics counts the run and the last run's time."""
    rules = write_rules(RULES)
    path = tmp_path / "k.sqlite3"
    click = "+905339990077"
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        iys.add_record(click, "ONAY")
        provider.add_from_panel(click, at=time.time() - 3600)
        port = free_port()
        env = {**os.environ, "ILETIMERKEZI_API_KEY": provider.key,
               "ILETIMERKEZI_API_HASH": provider.hash, "ILETIMERKEZI_BASE_URL": provider.base_url,
               "KEYROUTER_STORE": f"sqlite:///{path}", "KEYROUTER_RULES": str(rules),
               **iys_env(iys)}
        worker = subprocess.Popen([str(BIN / "keyrouter"), "run", "--interval", "0.5",
                                   "--metrics", f"127.0.0.1:{port}"],
                                  env=env, stdout=subprocess.DEVNULL,
                                  stderr=(tmp_path / "worker.log").open("w"))
        try:
            wait_until(lambda: len(_ledger(path)) == 2, 60, "the provider opt-out in the ledger")
            import httpx

            def metrics() -> str:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except httpx.HTTPError:
                    return ""
                return text if 'keyrouter_reconcile_runs_total{result="agree"}' in text and \
                    "keyrouter_reconcile_last_run_timestamp_seconds " in text else ""

            text = wait_until(metrics, 30, "the reconcile metrics")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    assert sorted(_ledger(path)) == [(click, "blacklist"), (click, "iys_ret")]
    assert [r["source"] for r in iys.records if r["status"] == "RET"] == ["HS_WEB"]
    assert 'keyrouter_blacklist_drift_total{kind="missing_at_provider"} 0.0' in text
    runs = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith("keyrouter_reconcile_runs_total")}
    assert sum(runs.values()) >= 1
