"""The İYS columns of the opt-out ledger and the pending marks: part of the store contract
(StoreContract inherits this), kept in its own file because it grew with the İYS work."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from keyrouter.store import OptOut, Store


def entry(message_id: str, received_at: float, action: str = "iys_ret", **kw: Any) -> OptOut:
    fields: dict[str, Any] = {"number": "+905551112233", "keyword": "RET", "handled_at": 0.0}
    return OptOut(**{**fields, **kw}, action=action, message_id=message_id, received_at=received_at)


class LedgerContract:
    pytestmark = pytest.mark.anyio

    async def test_iys_outcome_and_transaction_id_round_trip(self, store: Store) -> None:
        recorded = entry("m1", 1000.0, outcome="recorded", transaction_id="tx-İ|1", handled_at=1001.5)
        nothing = entry("m2", 1001.0, outcome="nothing_to_withdraw", number="+905551112299")
        block = entry("m1", 1000.0, "blacklist", keyword="İPTAL")
        for e in (recorded, nothing, block):
            await store.record_optout(e)
        assert block.outcome is None and block.transaction_id is None
        assert await store.optouts() == [block, recorded, nothing]
        assert await store.latest_optout("+905551112299") == nothing
        # A repeat with another answer changes nothing: the first write wins.
        await store.record_optout(replace(recorded, outcome="already", transaction_id=None))
        assert (await store.optouts())[1] == recorded

    async def test_pending_marks_until_the_ledger_line(self, store: Store) -> None:
        assert await store.pending_optouts() == []
        late = entry("m2", 2000.0)
        early = entry("m1", 1000.0, "blacklist")
        assert await store.mark_optout_pending(late) is True
        assert await store.mark_optout_pending(early) is True
        assert await store.mark_optout_pending(replace(late, handled_at=5.0)) is False  # a repeat
        assert await store.pending_optouts() == [early, late]
        same_message_other_effect = entry("m1", 1000.0)
        assert await store.mark_optout_pending(same_message_other_effect) is True
        done = replace(late, handled_at=2100.0, outcome="recorded", transaction_id="t1")
        await store.record_optout(done)
        assert await store.pending_optouts() == [early, same_message_other_effect]
        assert await store.optouts() == [done]
        # Once in the ledger, an effect is never pending again.
        assert await store.mark_optout_pending(late) is False
        assert await store.pending_optouts() == [early, same_message_other_effect]
        assert await store.latest_optout(late.number) == done

    async def test_pending_marks_belong_to_their_namespace(self, make_store: Any) -> None:
        a, b = make_store(), make_store()
        assert await a.mark_optout_pending(entry("m1", 1.0)) is True
        assert await b.pending_optouts() == []
        assert await b.mark_optout_pending(entry("m1", 1.0)) is True
        await a.record_optout(entry("m1", 1.0))
        assert await a.pending_optouts() == []
        assert await b.pending_optouts() == [entry("m1", 1.0)]
