"""Reconciliation end to end on every backend (memory, SQLite, Redis db 12, the local Redis
Cluster), each in its own namespace: a link-click opt-out reaches the ledger and İYS, drift is
repaired once, an opted-in number is never re-added, and a second pass finds nothing to do."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from reconcile_support import OPT_OUT_AND_IN_RULES
from redis_dbs import STORE_URL

from keyrouter.compliance.channels import provider_id
from keyrouter.compliance.reconcile import Reconciler, iys_params_of
from keyrouter.testing import FakeIletiMerkezi, FakeIys, pipeline, process

pytestmark = pytest.mark.anyio

RULES = OPT_OUT_AND_IN_RULES
REDIS = STORE_URL


@pytest.fixture(params=["memory", "sqlite", "redis", "cluster"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    namespace = f"reconcile-{uuid4().hex[:12]}"
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
    else:
        url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/r.sqlite3",
               "redis": REDIS}[request.param]
    yield url, namespace
    if request.param == "redis":  # only this test's keys
        client = aioredis.from_url(REDIS)
        keys = [k async for k in client.scan_iter(match=f"keyrouter:{{{namespace}}}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_the_three_cases_on_every_backend(store_url: tuple[str, str], tmp_path: Path) -> None:
    url, namespace = store_url
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    click, gone, back = "+905341110001", "+905341110002", "+905341110003"
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        for n in (click, gone, back):
            iys.add_record(n, "ONAY")
        async with pipeline(rules, fake=provider, store=url, namespace=namespace,
                            **iys.settings()) as runtime:
            for sender in (gone, back):
                await process(runtime, [provider.add_message("RET", sender=sender)])
            await process(runtime, [provider.add_message("BASLA", sender=back)])
            with provider.lock:
                provider.blacklist.discard(gone)
            provider.add_from_panel(click, at=time.time() - 3600)
            reconciler = Reconciler(runtime.store, runtime.client, router=runtime.router,
                                    iys=iys_params_of(runtime.router.rules, "HS_WEB"), settle=0.0)
            first = await reconciler.run(runtime.dispatcher.process)
            second = await reconciler.run(runtime.dispatcher.process)
            latest = await runtime.store.latest_optout(click)
            state = await runtime.store.reconcile_state()
            kept = await runtime.store.reconciled_rows()
    assert first.result == "agree" and [r[2] for r in first.plan.record] == [click]
    assert first.readded == [gone] and back not in provider.blacklist
    assert second.result == "agree" and second.plan.record == [] and second.readded == []
    assert latest is not None and latest.message_id == provider_id(click, None)
    assert [r["source"] for r in iys.records
            if r["recipient"] == click and r["status"] == "RET"] == ["HS_WEB"]
    assert state is not None and state["last"]["result"] == "agree" and kept == []
