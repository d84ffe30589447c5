"""`Store.claim_decision`, the per-number compare-and-set that makes one opt-out one ledger entry
and one İYS record across workers: part of the store contract (StoreContract inherits this)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from keyrouter.store import OptOut, Store
from keyrouter.store.base import BUSY, DECIDED, DECISION_HOLD, GRANTED, LATER, Decision

NUMBER = "+905551112233"
ODD = "İ\x00\ud83d|x"  # NUL, a lone surrogate and the member separator in a message id


def effect(message_id: str, received_at: float, action: str = "blacklist", **kw: Any) -> OptOut:
    fields: dict[str, Any] = {"number": NUMBER, "keyword": "RET", "handled_at": 0.0}
    return OptOut(**{**fields, **kw}, action=action, message_id=message_id, received_at=received_at)


def provider(received_at: float, action: str = "blacklist", anchor: str = "-") -> OptOut:
    """A provider opt-out's effect (no keyword: the tests pass defer=True for these)."""
    return effect(f"provider:00ff:{anchor}", received_at, action, keyword=None)


class DecisionContract:
    pytestmark = pytest.mark.anyio

    async def test_granted_marks_pending_once(self, store: Store) -> None:
        mine = effect("100", 1000.0)
        assert await store.claim_decision(mine) == Decision(GRANTED, first=True)
        assert await store.pending_optouts() == [mine]
        # The same message again (a retry, or its next entry): still its claim, a repeat.
        assert await store.claim_decision(mine) == Decision(GRANTED, first=False)
        iys = effect("100", 1000.0, "iys_ret")
        assert await store.claim_decision(iys) == Decision(GRANTED, first=True)
        await store.record_optout(mine)
        assert await store.claim_decision(mine) == Decision(GRANTED, first=False)
        assert await store.pending_optouts() == [iys]

    async def test_another_message_waits_while_the_holder_is_under_way(self, store: Store) -> None:
        assert (await store.claim_decision(effect("100", 1000.0))).granted
        for other in (effect("101", 1001.0), effect("99", 999.0, "iys_ret"), provider(2000.0),
                      effect("102", 1002.0, "unblacklist")):
            assert await store.claim_decision(other, defer=other.keyword is None) == \
                Decision(BUSY, "100")
        # Nothing of the waiters was marked; other numbers are free.
        assert [m.message_id for m in await store.pending_optouts()] == ["100"]
        assert (await store.claim_decision(effect("101", 1001.0, number="+905550000000"))).granted

    async def test_once_recorded_the_order_decides(self, store: Store) -> None:
        ret = effect("100", 1000.0)
        assert (await store.claim_decision(ret)).granted
        await store.record_optout(ret)
        await store.record_optout(effect("100", 1000.0, "iys_ret"))
        # An earlier message (a dead letter retried by hand) changes nothing: the latest wins.
        assert await store.claim_decision(effect("99", 999.0, "unblacklist")) == Decision(LATER, "100")
        # A provider opt-out yields to any recorded opt-out, even one dated before it...
        assert await store.claim_decision(provider(2000.0), defer=True) == Decision(DECIDED, "100")
        assert await store.claim_decision(provider(2000.0, "iys_ret"), defer=True) == \
            Decision(DECIDED, "100")
        # ...while an inbox RET after it, or a later BASLA, still applies.
        assert await store.claim_decision(effect("101", 1001.0)) == Decision(GRANTED, first=True)
        await store.record_optout(effect("101", 1001.0))
        basla = effect("102", 1002.0, "unblacklist")
        assert await store.claim_decision(basla) == Decision(GRANTED, first=True)
        await store.record_optout(basla)
        # After an opt-in, a provider opt-out dated later is a new opt-out.
        assert (await store.claim_decision(provider(2000.0), defer=True)).granted

    async def test_a_provider_opt_out_recorded_first_keeps_an_earlier_ret_out(self,
                                                                           store: Store) -> None:
        """The race's other order: the provider opt-out of a full pass (dated by the run) claims
        first and records; the inbox RET, dated before it, records nothing."""
        first = provider(2000.0)
        assert (await store.claim_decision(first, defer=True)).granted
        assert await store.claim_decision(effect("100", 1000.0)) == Decision(BUSY, first.message_id)
        await store.record_optout(first)
        assert await store.claim_decision(effect("100", 1000.0)) == \
            Decision(LATER, first.message_id)
        assert await store.claim_decision(effect("100", 1000.0, "iys_ret")) == \
            Decision(LATER, first.message_id)

    async def test_a_provider_opt_out_records_what_the_other_finished_without(
            self, store: Store) -> None:
        """The inbox RET wrote its blacklist line, not (yet) its İYS one: the provider opt-out's
        İYS entry waits while the RET is under way, and records once it finished without."""
        assert (await store.claim_decision(effect("100", 1000.0))).granted
        await store.record_optout(effect("100", 1000.0))
        assert await store.claim_decision(provider(2000.0), defer=True) == Decision(DECIDED, "100")
        assert await store.claim_decision(provider(2000.0, "iys_ret"), defer=True) == \
            Decision(BUSY, "100")
        await store.dead_letter("100", "w", "İYS refused", rule="optout", row={}, now=time.time())
        assert await store.claim_decision(provider(2000.0, "iys_ret"), defer=True) == \
            Decision(GRANTED, first=True)

    async def test_ledger_lines_without_a_holder(self, store: Store) -> None:
        """Lines written before any claim (an older version's ledger): the order still decides,
        and no holder keeps anyone waiting."""
        await store.record_optout(effect("100", 1000.0))
        assert await store.claim_decision(effect("99", 999.0)) == Decision(LATER, "100")
        assert await store.claim_decision(provider(2000.0), defer=True) == Decision(DECIDED, "100")
        assert await store.claim_decision(provider(2000.0, "iys_ret"), defer=True) == \
            Decision(GRANTED, first=True)

    async def test_a_dead_holder_frees_the_number(self, store: Store) -> None:
        """A holder that fails for good loses no opt-out: the waiter records it."""
        assert (await store.claim_decision(effect("100", 1000.0))).granted
        assert (await store.claim_decision(provider(2000.0), defer=True)).verdict == BUSY
        await store.dead_letter("100", "w", "466", rule="optout", row={}, now=time.time())
        assert await store.claim_decision(provider(2000.0), defer=True) == \
            Decision(GRANTED, first=True)
        # The dead letter, retried by hand, meets the provider opt-out's claim.
        assert await store.retry_dead("100")
        assert await store.claim_decision(effect("100", 1000.0)) == \
            Decision(BUSY, "provider:00ff:-")

    async def test_a_holder_finished_without_its_line_frees_the_number(self, store: Store) -> None:
        assert (await store.claim_decision(effect("100", 1000.0))).granted
        await store.finish(["100"], "w")
        assert (await store.claim_decision(effect("101", 1001.0))).granted

    async def test_a_stalled_holder_blocks_for_at_most_the_hold(self, make_store: Any) -> None:
        """A worker killed after its claim, its message never run again: the hold runs out."""
        clock = _Clock()
        store = make_store(clock=clock)
        assert (await store.claim_decision(effect("100", 1000.0))).granted
        clock.t += DECISION_HOLD - 1
        assert (await store.claim_decision(effect("101", 1001.0))).verdict == BUSY
        clock.t += 2
        assert (await store.claim_decision(effect("101", 1001.0))).granted
        # The holder comes back: now it waits in turn.
        assert await store.claim_decision(effect("100", 1000.0)) == Decision(BUSY, "101")

    async def test_odd_ids_come_back_exactly(self, store: Store) -> None:
        assert (await store.claim_decision(effect(ODD, 1000.0))).granted
        assert await store.claim_decision(effect("x", 1000.0)) == Decision(BUSY, ODD)
        await store.record_optout(effect(ODD, 1000.0))
        assert await store.claim_decision(effect("a", 999.0)) == Decision(LATER, ODD)
        assert await store.claim_decision(provider(2000.0), defer=True) == Decision(DECIDED, ODD)

    async def test_holders_belong_to_their_namespace(self, make_store: Any) -> None:
        one, two = make_store(), make_store()
        assert (await one.claim_decision(effect("100", 1000.0))).granted
        assert (await two.claim_decision(effect("101", 1001.0))).granted

    async def test_many_claims_at_once_grant_one(self, make_store: Any, store: Store) -> None:
        """Claims for one number from many messages on several store clients at once: exactly
        one is granted and every other names it as the holder."""
        others = [make_store(store.namespace) for _ in range(3)]
        clients = [store, *others]
        claims = [effect(str(200 + i), 2000.0 + i) if i % 2 else provider(1500.0 + i, anchor=str(i))
                  for i in range(24)]
        got = await asyncio.gather(*[
            clients[i % len(clients)].claim_decision(c, defer=c.keyword is None)
            for i, c in enumerate(claims)])
        winners = [c.message_id for c, d in zip(claims, got, strict=True) if d.granted]
        assert len(winners) == 1
        assert all(d == Decision(BUSY, winners[0]) for d in got if not d.granted)


class _Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t
