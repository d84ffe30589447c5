"""The conversation records of the store contract (keyrouter/store/roles.py, ConversationStore):
every backend keeps each respondent's latest record, saves only over the record it expects (one
message applied once, whatever races), and lists each conversation's runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from keyrouter.conversations.steps import COMPLETED, OPEN, Record
from keyrouter.store import Store

MakeStore = Callable[..., Store]


def record(respondent: str = "+905321112233", message_id: str = "m1", **kw: Any) -> Record:
    base = Record("nps", respondent, OPEN, 0, message_id, 1000.0, 1000.0, reply="Q1?")
    return replace(base, **kw)


class ConversationContract:
    async def test_no_record_then_the_saved_one(self, store: Store) -> None:
        assert await store.conversation_of("+905321112233") is None
        first = record()
        assert await store.save_conversation(first, None) is True
        assert await store.conversation_of("+905321112233") == first
        assert await store.conversation_records("nps") == [first]
        assert await store.conversation_records("other") == []

    async def test_save_only_over_the_expected_message(self, store: Store) -> None:
        first = record()
        assert await store.save_conversation(first, None) is True
        assert await store.save_conversation(first, None) is False  # applied already
        second = record(message_id="m2", step=1, answers={"score": "5"}, reply="Q2?")
        assert await store.save_conversation(second, "m0") is False  # not what is there
        assert await store.conversation_of(first.respondent) == first
        assert await store.save_conversation(second, "m1") is True
        assert await store.save_conversation(second, "m1") is False  # a repeat changes nothing
        assert await store.conversation_of(first.respondent) == second

    async def test_runs_per_conversation_and_the_latest_per_respondent(self, store: Store) -> None:
        a = record("+905320000001", "a1", status=COMPLETED, answers={"score": "4"})
        b = record("+905320000002", "b1")
        other = record("+905320000001", "a2", conversation="club")
        assert await store.save_conversation(a, None)
        assert await store.save_conversation(b, None)
        assert await store.save_conversation(other, "a1")  # a's latest is now another survey
        assert await store.conversation_of("+905320000001") == other
        assert await store.conversation_records("nps") == [a, b]  # a's nps run is kept
        assert await store.conversation_records("club") == [other]

    async def test_odd_strings_round_trip(self, store: Store) -> None:
        odd = record("7889\x00\ud83d", "id\ud83d\x01", conversation="n:ps\ud83d",
                     answers={"reason": "çok hızlı \ud83d 👍🏽\x00"}, reply="Soru\x01?")
        assert await store.save_conversation(odd, None)
        assert await store.conversation_of(odd.respondent) == odd
        assert await store.conversation_records(odd.conversation) == [odd]
        assert await store.save_conversation(replace(odd, message_id="n"), odd.message_id)

    async def test_isolated_by_namespace(self, make_store: MakeStore) -> None:
        one, two = make_store(), make_store()
        assert await one.save_conversation(record(), None)
        assert await two.conversation_of("+905321112233") is None
        assert await two.conversation_records("nps") == []
        assert await two.save_conversation(record(message_id="x"), None)

    async def test_concurrent_saves_apply_one(self, make_store: MakeStore) -> None:
        """Workers racing to apply different messages over the same record: exactly one wins."""
        first = make_store()
        stores = [first, *(make_store(first.namespace) for _ in range(3))]
        assert await stores[0].save_conversation(record(), None)
        wins = await asyncio.gather(*(
            s.save_conversation(record(message_id=f"m{i + 2}", step=1), "m1")
            for i, s in enumerate(stores)))
        assert sum(wins) == 1
        latest = await stores[0].conversation_of("+905321112233")
        assert latest is not None and latest.message_id == f"m{wins.index(True) + 2}"
