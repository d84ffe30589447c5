"""Where operators see reconciliation (docs/reconciliation.md): the metrics count a drift once and
every run by result, `doctor` reports the last run, and an unreachable store is exit 4."""

from __future__ import annotations

import time
from typing import Any

import pytest

from keyrouter.cli import main
from keyrouter.compliance.reconcile import Reconciler
from keyrouter.ops.doctor_store import check_reconcile
from keyrouter.ops.metrics import Metrics
from keyrouter.settings import Settings
from keyrouter.store import OptOut, open_store
from keyrouter.testing import FakeIletiMerkezi, pipeline, process

pytestmark = pytest.mark.anyio
RULES = "version: 1\nrules:\n  - name: optout\n    keywords: [RET]\n    handlers: [blacklist]\n"


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_metrics_count_the_drift_once_and_each_run(write_rules) -> None:
    metrics = Metrics(process_metrics=False)
    with FakeIletiMerkezi() as provider:
        async with pipeline(write_rules(RULES), fake=provider) as runtime:
            gone = "+905321110041"
            await process(runtime, [provider.add_message("RET", sender=gone)])
            with provider.lock:
                provider.blacklist.discard(gone)
            reconciler = Reconciler(runtime.store, runtime.client, router=runtime.router,
                                    settle=0.0, events=metrics)
            await reconciler.run(runtime.dispatcher.process)
            await reconciler.run(runtime.dispatcher.process)
            provider.fail_next("get-blacklist", 401)
            with pytest.raises(Exception, match="credentials"):
                await reconciler.run(runtime.dispatcher.process)
            await metrics.refresh(runtime.store)
    assert sample(metrics, "keyrouter_blacklist_drift_total", kind="missing_at_provider") == 1
    assert sample(metrics, "keyrouter_blacklist_drift_total", kind="optin_not_held") == 0
    assert sample(metrics, "keyrouter_reconcile_runs_total", result="agree") == 2
    assert sample(metrics, "keyrouter_reconcile_runs_total", result="failed") == 1
    last = sample(metrics, "keyrouter_reconcile_last_run_timestamp_seconds")
    assert time.time() - 60 < last <= time.time()


async def test_doctor_reports_the_last_reconcile() -> None:
    settings = Settings(reconcile_interval="1h")
    async with open_store("memory://", "doctor-reconcile") as store:
        first = await check_reconcile(store, settings)
        await store.record_optout(OptOut("+905321110051", "blacklist", "1", "RET", 1.0, 2.0))
        never = await check_reconcile(store, settings)
        at = time.time() - 600
        last: dict[str, Any] = {"at": at, "mode": "full", "result": "agree", "listed": 1,
                                "recorded": 0, "readded": 0, "reported": 0}
        await store.save_reconcile_state({"last": last})
        fresh = await check_reconcile(store, settings)
        stale = await check_reconcile(store, settings, now=at + 3 * 3600)
        await store.save_reconcile_state({"last": {**last, "result": "reported", "reported": 1}})
        reported = await check_reconcile(store, settings)
    assert first.status == "ok" and "empty ledger" in first.detail
    assert never.status == "warn" and "optouts reconcile" in never.fix
    assert fresh.status == "ok" and "full pass" in fresh.detail and "10 min ago" in fresh.detail
    assert stale.status == "warn" and "twice the interval" in stale.detail
    assert reported.status == "warn" and "1 reported" in reported.detail


def test_an_unreachable_store_is_exit_4(write_rules, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ILETIMERKEZI_API_KEY", "k")
    monkeypatch.setenv("ILETIMERKEZI_API_HASH", "h")
    code = main(["optouts", "reconcile", "--store", "redis://127.0.0.1:1/0", "--rules",
                 str(write_rules(RULES))])
    assert code == 4, capsys.readouterr()
    assert "Traceback" not in capsys.readouterr().err
