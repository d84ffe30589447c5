"""An inbox RET and a provider opt-out of the same number on two workers, interleaved at the exact
racy point: one message has claimed the number (`Store.claim_decision`) and not yet made its
provider call or written its ledger line when the other message's entry starts.  The second waits
and then records nothing, whichever came first: one ledger entry per effect, one İYS record, one
add-blacklist.  A BASLA later than a held RET still wins, and a holder that fails for good leaves
the opt-out to the other message.  Every backend (memory, SQLite, real Redis)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
from duty_support import NUMBER, Backend, backend_fixture, row  # noqa: F401

from keyrouter.compliance.channels import provider_row
from keyrouter.dispatch import Dispatcher
from keyrouter.message import TURKEY, Message, parse_row
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.settings import Settings
from keyrouter.store import Store, open_store
from keyrouter.store.base import BUSY, DECIDED, GRANTED, LATER, Decision, OptOut
from keyrouter.testing import FakeIletiMerkezi, FakeIys

pytestmark = pytest.mark.anyio

RULES = """
version: 1
rules:
  - {name: optout, keywords: [RET], handlers: [blacklist, iys]}
  - {name: optin, keywords: [BASLA], handlers: [unblacklist, {iys: {status: ONAY}}]}
"""
#: Without İYS, so a message makes one decision: the RET's claim covers its whole effect.
BLACKLIST_RULES = """
version: 1
rules:
  - {name: optout, keywords: [RET], handlers: [blacklist]}
  - {name: optin, keywords: [BASLA], handlers: [unblacklist]}
"""


class Interleave:
    """Wraps `claim_decision` of the workers' stores: the `first` message, once granted its
    blacklist claim, stops there until another message was answered BUSY, so the second message
    starts exactly between the first one's claim and its provider call."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.paused, self.busy = asyncio.Event(), asyncio.Event()
        self.verdicts: list[tuple[str, str, str]] = []

    def wrap(self, store: Store) -> None:
        real = store.claim_decision

        async def claim(entry: OptOut, *, defer: bool = False) -> Decision:
            decision = await real(entry, defer=defer)
            self.verdicts.append((entry.message_id, entry.action, decision.verdict))
            if decision.verdict == BUSY:
                self.busy.set()
            if entry.message_id == self.first and entry.action == "blacklist" \
                    and decision.granted and not self.paused.is_set():
                self.paused.set()
                await asyncio.wait_for(self.busy.wait(), 10)
            return decision

        store.claim_decision = claim  # type: ignore[method-assign]

    def of(self, message_id: str) -> list[tuple[str, str]]:
        return [(a, v) for m, a, v in self.verdicts if m == message_id]


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, TURKEY).strftime("%Y-%m-%d %H:%M:%S")


def provider_message(received: float) -> Message:
    """A provider opt-out as a full reconcile pass makes it: dated by the run."""
    _, text = provider_row(NUMBER, None, stamp(received), {"source": "HS_WEB"})
    return parse_row(json.loads(text))


@asynccontextmanager
async def two_workers(backend: Backend, fake: FakeIletiMerkezi, iys: FakeIys, tmp_path: Any,
                      race: Interleave, rules: str = RULES,
                      ) -> AsyncIterator[tuple[Dispatcher, Dispatcher, Store]]:
    """Two dispatchers, each with its own store client (memory: one shared store), both wrapped."""
    (tmp_path / "rules.yaml").write_text(rules)
    router = Router(load_rules(tmp_path / "rules.yaml"))
    settings = Settings.model_validate({"sender": "TEST", **iys.settings()})
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            IletiMerkezi(fake.key, fake.hash, base_url=fake.base_url))
        one = await stack.enter_async_context(open_store(backend.url, backend.namespace))
        two = one if backend.name == "memory" else \
            await stack.enter_async_context(open_store(backend.url, backend.namespace))
        for store in {id(one): one, id(two): two}.values():
            race.wrap(store)
        workers = [Dispatcher(router, store, client=client, settings=settings, owner=owner)
                   for store, owner in ((one, "a"), (two, "b"))]
        yield workers[0], workers[1], one
        for worker in workers:
            await worker.aclose()


async def run_interleaved(race: Interleave, first: tuple[Dispatcher, Message],
                          second: tuple[Dispatcher, Message]) -> None:
    running = asyncio.create_task(first[0].process([first[1]]))
    await asyncio.wait_for(race.paused.wait(), 10)
    await asyncio.wait_for(asyncio.gather(second[0].process([second[1]]), running), 30)


def assert_recorded_once_by(ledger: list[OptOut], iys: FakeIys, fake: FakeIletiMerkezi,
                            message_id: str) -> None:
    assert Counter((e.message_id, e.action) for e in ledger) == \
        {(message_id, "blacklist"): 1, (message_id, "iys_ret"): 1}
    assert [r["status"] for r in iys.records if r["recipient"] == NUMBER] == ["ONAY", "RET"]
    assert [r.endpoint for r in fake.requests].count("add-blacklist") == 1


@pytest.mark.parametrize("first", ["inbox", "provider"])
async def test_a_ret_and_a_provider_opt_out_at_the_racy_point_record_once(
        backend: Backend, fake: FakeIletiMerkezi, tmp_path: Any, first: str) -> None:
    now = time.time()
    ret, link = parse_row(row("7001", "RET", now - 30)), provider_message(now)
    winner, loser = (ret, link) if first == "inbox" else (link, ret)
    race = Interleave(winner.id)
    with FakeIys() as iys:
        iys.add_record(NUMBER, "ONAY")
        async with two_workers(backend, fake, iys, tmp_path, race) as (a, b, store):
            await run_interleaved(race, (a, winner), (b, loser))
            ledger = await store.optouts()
            assert await store.unfinished([ret.id, link.id]) == []
            assert await store.dead_letters() == []
            assert await store.pending_optouts() == []
        assert_recorded_once_by(ledger, iys, fake, winner.id)
    # The second message met the first one's claim at the racy point, then yielded to its line:
    # the provider opt-out to any recorded opt-out, the earlier inbox RET to the later provider one.
    verdicts = race.of(loser.id)
    assert verdicts[0] == ("blacklist", BUSY)
    assert {v for _, v in verdicts[1:]} <= {BUSY, DECIDED if first == "inbox" else LATER}
    assert [a for a, v in verdicts if v != BUSY] == ["blacklist", "iys_ret"]
    assert race.of(winner.id) == [("blacklist", GRANTED), ("iys_ret", GRANTED)]


async def test_a_later_basla_waits_for_a_held_ret_and_still_wins(
        backend: Backend, fake: FakeIletiMerkezi, tmp_path: Any) -> None:
    """The BASLA starts on another worker while the RET holds the number, between its claim and
    its add-blacklist: it waits, then its delete-blacklist comes last."""
    now = time.time()
    ret, basla = parse_row(row("7001", "RET", now - 30)), parse_row(row("7002", "BASLA", now - 10))
    race = Interleave(ret.id)
    with FakeIys() as iys:
        async with two_workers(backend, fake, iys, tmp_path, race, BLACKLIST_RULES) as \
                (a, b, store):
            await run_interleaved(race, (a, ret), (b, basla))
            latest = await store.latest_optout(NUMBER)
            lines = [(e.message_id, e.action) for e in await store.optouts()]
    assert latest is not None and latest.message_id == basla.id
    assert lines == [(ret.id, "blacklist"), (basla.id, "unblacklist")]
    assert [r.endpoint for r in fake.requests] == ["add-blacklist", "delete-blacklist"]
    assert NUMBER not in fake.blacklist
    assert race.of(basla.id)[0] == ("unblacklist", BUSY)
    assert race.of(basla.id)[-1] == ("unblacklist", GRANTED)


async def test_a_holder_that_fails_for_good_leaves_the_opt_out_to_the_other(
        backend: Backend, fake: FakeIletiMerkezi, tmp_path: Any) -> None:
    """The inbox RET holds the number, then İYS refuses it for good (dead letter): the provider
    opt-out waiting for it records the opt-out; nothing is lost."""
    now = time.time()
    ret, link = parse_row(row("7001", "RET", now - 30)), provider_message(now)
    race = Interleave(ret.id)
    with FakeIys() as iys:
        iys.add_record(NUMBER, "ONAY")
        iys.fail_next("consents", 400, times=1)  # a permanent refusal of the RET's record
        async with two_workers(backend, fake, iys, tmp_path, race) as (a, b, store):
            await run_interleaved(race, (a, ret), (b, link))
            dead = [d.id for d in await store.dead_letters()]
            ledger = Counter((e.message_id, e.action) for e in await store.optouts())
    assert dead == [ret.id]
    # The RET's blacklist line was written before its İYS record failed: the provider opt-out
    # yields its blacklist line to it, and records the İYS RET the dead RET could not.
    assert ledger == {(ret.id, "blacklist"): 1, (link.id, "iys_ret"): 1}
    assert [r["status"] for r in iys.records if r["recipient"] == NUMBER] == ["ONAY", "RET"]
