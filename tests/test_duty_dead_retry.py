"""A dead letter retried by hand runs again from its stored row, whatever get-inbox holds, on every
backend (docs/opt-out-duty.md): the RET died before its blacklist entry, its row then left the
inbox; `keyrouter dead-letters retry` (the store's `retry_dead`, as the dashboard calls it) shares
the stored row, it is pending until a worker's poll runs it, and the number is blacklisted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from duty_support import NUMBER, Backend, backend_fixture, row  # noqa: F401

from keyrouter.cli import main
from keyrouter.compliance import overdue as compliance
from keyrouter.testing import FakeIletiMerkezi, pipeline, process
from keyrouter.worker.loop import run as run_worker

pytestmark = pytest.mark.anyio

RULES = """\
version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers:
      - reply: {text: "Listeden cikarildiniz."}
      - blacklist
"""


async def retry_by_hand(backend: Backend, store: object, id: str, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI where the store is shared between processes; the store's call on memory://."""
    if backend.name == "memory":
        assert await store.retry_dead(id)  # type: ignore[attr-defined]
        return
    monkeypatch.setenv("KEYROUTER_NAMESPACE", backend.namespace)
    code = await asyncio.to_thread(main, ["dead-letters", "retry", id, "--store", backend.url])
    assert code == 0
    assert "1 dead letters will run again from their stored rows" in capsys.readouterr().out


@pytest.mark.parametrize("gone", ["left the inbox", "older than the horizon"])
async def test_a_dead_letter_retried_after_its_row_left_the_inbox_is_done(
        gone: str, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    received = time.time() - (3 * 86400 if gone == "older than the horizon" else 60)
    with FakeIletiMerkezi() as provider:
        async with pipeline(tmp_path / "rules.yaml", fake=provider, store=backend.url,
                            namespace=backend.namespace, horizon="1d") as runtime:
            store, router = runtime.store, runtime.router
            effects = compliance.effects_of_rules(router.rules)
            if gone == "left the inbox":
                # send-sms out of credit: the reply (not optional here) dead-letters the message
                # before its blacklist entry started
                provider.fail_next("send-sms", 402)
                ret = provider.add_message("RET", sender="05354104818")
                assert (await process(runtime, [ret])).dead == 1
                with provider.lock:
                    provider.inbox.clear()  # the provider's retention, or a later page
            else:  # it died days ago; the inbox copy is beyond KEYROUTER_HORIZON now
                ret = row("old-1", "RET", received)
                assert await store.claim([ret["id"]], "w", 30, received)
                assert await store.dead_letter(ret["id"], "w", "PermanentApiError: 402",
                                               rule="optout", row=ret, now=received + 1)
                with provider.lock:
                    provider.inbox.append(ret)
            assert NUMBER not in provider.blacklist
            await retry_by_hand(backend, store, ret["id"], tmp_path, monkeypatch, capsys)
            # pending until done: no ledger line, not a dead letter, shared
            pending = await compliance.collect(store, effects, router=router, pending_only=True)
            assert [(c.message_id, c.effect, c.where) for c in pending] == [
                (ret["id"], "blacklist", "waiting")]
            code = await run_worker(runtime, asyncio.Event(), once=True)
            deadline = time.monotonic() + 20
            while await store.unfinished([ret["id"]]) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            pending = await compliance.collect(store, effects, router=router, pending_only=True)
            ledger = [(e.message_id, e.action) for e in await store.optouts()]
            dead = await store.dead_letters()
    assert code == 0
    assert NUMBER in provider.blacklist and ledger == [(ret["id"], "blacklist")]
    assert dead == [] and pending == []
