"""Fencing (docs/opt-out-duty.md): before each state-changing provider call an entry checks that
its worker still holds the message's claim.  Worker A is paused inside a RET's `blacklist` entry
(its renewals do not get through) until its lease ran out; B takes the RET over and blacklists
the number, then runs the sender's BASLA (delete-blacklist).  A wakes up: it must make no
provider call, or its late add-blacklist would put the number back on the list.  Every backend."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from duty_support import NUMBER, Backend, backend_fixture, row  # noqa: F401

from keyrouter.dispatch import Dispatcher
from keyrouter.events import Events
from keyrouter.handlers.context import Context
from keyrouter.handlers.fencing import StaleClaim
from keyrouter.message import parse_row
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.rules import registry
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.settings import Settings
from keyrouter.store import open_store
from keyrouter.store.base import Decision, OptOut, Store
from keyrouter.store.memory import MemoryStore
from keyrouter.testing import FakeIletiMerkezi, FakeIys

pytestmark = pytest.mark.anyio
LEASE = 0.6


class Counted(Events):
    def __init__(self) -> None:
        self.stale: list[str] = []

    def stale_claim(self, handler: str) -> None:
        self.stale.append(handler)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with open_store(backend.url, backend.namespace) as opened:
        yield opened


def pause_owner(store: Store, owner: str) -> tuple[asyncio.Event, asyncio.Event]:
    """`owner` stops inside its first opt-out entry (after its claim of the number, before the
    call) until `resume` is set; meanwhile its lease renewals do not reach the store."""
    paused, resume = asyncio.Event(), asyncio.Event()
    real_claim, real_renew = store.claim_decision, store.renew

    async def claim(entry: OptOut, *, defer: bool = False) -> Decision:
        decision = await real_claim(entry, defer=defer)
        if not paused.is_set():
            paused.set()
            await resume.wait()
        return decision

    async def renew(ids: list[str], who: str, lease: float) -> list[str]:
        if who == owner and paused.is_set() and not resume.is_set():
            return list(ids)  # lost on the way: the lease runs out
        return await real_renew(ids, who, lease)

    store.claim_decision = claim  # type: ignore[method-assign]
    store.renew = renew  # type: ignore[method-assign]
    return paused, resume


async def test_a_stale_owner_makes_no_provider_call_after_a_take_over(
        store: Store, fake: FakeIletiMerkezi, client: IletiMerkezi, write_rules: Any) -> None:
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: optout, keywords: [RET], handlers: [blacklist]}
          - {name: optin, keywords: [BASLA], handlers: [unblacklist]}
    """)))
    now = time.time()
    ret, basla = parse_row(row("r1", "RET", now - 20)), parse_row(row("b1", "BASLA", now - 10))
    paused, resume = pause_owner(store, "a")
    events = Counted()
    a = Dispatcher(router, store, client=client, owner="a", lease=LEASE, events=events)
    b = Dispatcher(router, store, client=client, owner="b", lease=LEASE)
    running = asyncio.create_task(a.process([ret]))
    await asyncio.wait_for(paused.wait(), 10)
    await asyncio.sleep(LEASE + 0.3)  # A's lease ran out while it was paused
    report = await b.process([ret, basla])  # B takes the RET over, then runs the BASLA
    assert report.done == 2
    assert [r.endpoint for r in fake.requests] == ["add-blacklist", "delete-blacklist"]
    assert NUMBER not in fake.blacklist
    resume.set()
    await asyncio.wait_for(running, 10)
    await a.aclose()
    await b.aclose()
    assert [r.endpoint for r in fake.requests] == ["add-blacklist", "delete-blacklist"]
    assert NUMBER not in fake.blacklist  # no late add-blacklist from A
    assert events.stale == ["blacklist"]
    assert await store.unfinished(["r1", "b1"]) == [] and await store.dead_letters() == []
    assert (await store.counts())["failed"] == 0  # a stale claim is no failed attempt


async def test_every_provider_calling_built_in_checks_its_claim_first(
        fake: FakeIletiMerkezi, client: IletiMerkezi) -> None:
    """reply (send-sms), blacklist, unblacklist and iys: with the claim lost, no request at all."""
    with FakeIys() as iys:
        settings = Settings.model_validate({"sender": "TEST", **iys.settings()})
        message = parse_row(row("m1", "RET", time.time() - 5))
        for name, params in (("reply", {"text": "tamam"}), ("blacklist", {}),
                             ("unblacklist", {}), ("iys", {})):
            events = Counted()
            context = Context(params=params, idempotency_key="k", logger=logging.getLogger("t"),
                              rule="optout", client=client, store=MemoryStore(),
                              settings=settings, events=events, holds_claim=_lost)
            with pytest.raises(StaleClaim):
                await registry.resolve(name)(message, None, context)
            assert events.stale == [name]
        assert fake.requests == [] and iys.requests == []


async def _lost() -> bool:
    return False
