"""The blacklist reconciliation's state and kept rows: part of the store contract (StoreContract
inherits this)."""

from __future__ import annotations

from typing import Any

import pytest

from keyrouter.store import Store


class ReconcileContract:
    pytestmark = pytest.mark.anyio

    async def test_state_round_trips_and_is_replaced(self, store: Store) -> None:
        assert await store.reconcile_state() is None
        await store.save_reconcile_state({"watermark": 1700000000.5, "last": {"result": "agree"}})
        assert await store.reconcile_state() == {"watermark": 1700000000.5,
                                                 "last": {"result": "agree"}}
        await store.save_reconcile_state({"watermark": 2.0})
        assert await store.reconcile_state() == {"watermark": 2.0}

    async def test_rows_keep_the_first_and_drop(self, store: Store) -> None:
        odd = "provider:+905551112233:İ\x00\ud83d"
        added = await store.save_reconciled_rows([("b", '{"id": "b"}'), (odd, '{"t": "ç"}')])
        assert added == 2
        assert await store.save_reconciled_rows([("b", '{"id": "other"}'), ("a", "{}")]) == 1
        assert await store.reconciled_rows() == sorted(
            [("a", "{}"), ("b", '{"id": "b"}'), (odd, '{"t": "ç"}')])
        await store.drop_reconciled_rows([odd, "a", "missing"])
        assert await store.reconciled_rows() == [("b", '{"id": "b"}')]
        assert await store.save_reconciled_rows([]) == 0
        await store.drop_reconciled_rows([])

    async def test_state_and_rows_belong_to_their_namespace(self, make_store: Any) -> None:
        one, two = make_store(), make_store()
        await one.save_reconcile_state({"x": 1})
        await one.save_reconciled_rows([("a", "{}")])
        assert await two.reconcile_state() is None
        assert await two.reconciled_rows() == []
        assert await make_store(one.namespace).reconciled_rows() == [("a", "{}")]
