"""`Assembled`: a `Store` whose activity figures, conversations and reconciliation state are
separate parts, each given only what it needs (a namespace's state, a connection, keys), and
forwarded here once so no backend repeats the forwarding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keyrouter.store.base import Store
from keyrouter.store.conversations import Record
from keyrouter.store.roles import ActivityStore, ConversationStore, ReconcileStore


class Assembled(Store):
    """A backend builds its parts and passes them in; it implements the other roles itself."""

    def __init__(self, activity: ActivityStore, conversations: ConversationStore,
                 reconcile: ReconcileStore) -> None:
        self._activity = activity
        self._conversations = conversations
        self._reconcile = reconcile

    # -- activity -------------------------------------------------------------------------------
    async def record_poll(self, at: float, rows: int) -> None:
        await self._activity.record_poll(at, rows)

    async def touch(self, at: float) -> None:
        await self._activity.touch(at)

    async def last_poll(self) -> tuple[float, int] | None:
        return await self._activity.last_poll()

    async def count_routed(self, counts: Mapping[tuple[str, int], int]) -> None:
        await self._activity.count_routed(counts)

    async def routed_since(self, hour: int) -> dict[int, dict[str, int]]:
        return await self._activity.routed_since(hour)

    # -- conversations --------------------------------------------------------------------------
    async def conversation_of(self, respondent: str) -> Record | None:
        return await self._conversations.conversation_of(respondent)

    async def save_conversation(self, record: Record, expect: str | None) -> bool:
        return await self._conversations.save_conversation(record, expect)

    async def conversation_records(self, conversation: str) -> list[Record]:
        return await self._conversations.conversation_records(conversation)

    # -- reconciliation -------------------------------------------------------------------------
    async def reconcile_state(self) -> dict[str, Any] | None:
        return await self._reconcile.reconcile_state()

    async def save_reconcile_state(self, state: Mapping[str, Any]) -> None:
        await self._reconcile.save_reconcile_state(state)

    async def save_reconciled_rows(self, rows: Sequence[tuple[str, str]]) -> int:
        return await self._reconcile.save_reconciled_rows(rows)

    async def reconciled_rows(self) -> list[tuple[str, str]]:
        return await self._reconcile.reconciled_rows()

    async def drop_reconciled_rows(self, ids: Sequence[str]) -> None:
        await self._reconcile.drop_reconciled_rows(ids)
