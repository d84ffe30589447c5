"""The dashboard's side of the opt-out duty (docs/opt-out-duty.md): a confirmation that failed for
good is a ledger line the opt-outs page shows and filters; a dead letter retried from the page runs
again from its stored row and shows as pending until it is done."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from keyrouter.compliance import overdue as compliance
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.store.base import OptOut
from keyrouter.store.memory import MemoryStore
from keyrouter.store.retried import RETRIED_KEY

from .conftest import T0, TOKEN

BEARER = {"authorization": f"Bearer {TOKEN}"}
ERROR = "PermanentApiError: iletiMerkezi send-sms: 402 insufficient balance"


def test_a_failed_confirmation_is_on_the_opt_outs_page(make_app: Callable[..., Any]) -> None:
    store = MemoryStore()
    for action, outcome in (("blacklist", None), ("reply_failed", ERROR)):
        asyncio.run(store.record_optout(OptOut("+905354104818", action, "m1", "RET", T0, T0 + 5,
                                               outcome)))
    with TestClient(make_app(store=store)) as client:
        page = client.get("/optouts", params={"effect": "reply_failed"})
    assert page.status_code == 200
    assert '<option value="reply_failed" selected>' in page.text
    assert "reply_failed" in page.text and "402 insufficient balance" in page.text
    assert "+905354104818" not in page.text and "+90535***4818" in page.text
    # a failed confirmation never decides the number's state
    assert asyncio.run(store.latest_optout("+905354104818")).action == "blacklist"  # type: ignore[union-attr]


def test_a_dead_letter_retried_on_the_page_is_shared_and_pending(
        make_app: Callable[..., Any], rules_path: Any) -> None:
    store = MemoryStore()
    row = {"id": "m7", "text": "RET", "sender": "+905354104818", "number": "850",
           "date": "2026-09-21 10:00:00"}

    async def dead() -> None:
        await store.claim(["m7"], "w", 30, T0)
        await store.dead_letter("m7", "w", "TransientApiError: 503", rule="optout", row=row, now=T0)
    asyncio.run(dead())
    with TestClient(make_app(token=TOKEN, store=store)) as client:
        r = client.post("/dead-letters/m7/retry", headers=BEARER, follow_redirects=False)
    assert r.status_code == 303
    _, shared = asyncio.run(store.published(0))
    assert [(id, json.loads(text)) for id, text in shared] == [("m7", {**row, RETRIED_KEY: True})]
    router = _router(rules_path)
    cases = asyncio.run(compliance.collect(store, compliance.effects_of_rules(router.rules),
                                           router=router, pending_only=True))
    assert {(c.message_id, c.effect, c.state, c.where) for c in cases} == {
        ("m7", "blacklist", "pending", "waiting")}


def _router(rules_path: Any) -> Router:
    return Router(load_rules(rules_path))
