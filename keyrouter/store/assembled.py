"""`Assembled`: a `Store` whose activity figures, conversations, reconciliation state and ledger
(with its pages and the survey votes) are separate parts, each given only what it needs (a
namespace's state, a connection, keys), and forwarded here once so no backend repeats the
forwarding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from keyrouter.store.base import Decision, LedgerCursor, OptOut, Store, SurveyResults
from keyrouter.store.conversations import Record
from keyrouter.store.roles import (
    ActivityStore,
    ConversationStore,
    LedgerStore,
    ReconcileStore,
    VoteStore,
)


class LedgerPart(LedgerStore, VoteStore, Protocol):
    """The ledger and the votes: one part on every backend, as they share its scripts or tables."""


class Assembled(Store):
    """A backend builds its parts and passes them in; it implements the other roles (claims, dead
    letters, the feed, health and description) itself."""

    def __init__(self, activity: ActivityStore, conversations: ConversationStore,
                 reconcile: ReconcileStore, ledger: LedgerPart) -> None:
        self._activity = activity
        self._conversations = conversations
        self._reconcile = reconcile
        self._ledger = ledger

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

    # -- the ledger and its pages ---------------------------------------------------------------
    async def record_optout(self, entry: OptOut) -> None:
        await self._ledger.record_optout(entry)

    async def latest_optout(self, number: str) -> OptOut | None:
        return await self._ledger.latest_optout(number)

    async def optouts(self, since: float | None = None) -> list[OptOut]:
        return await self._ledger.optouts(since)

    async def mark_optout_pending(self, entry: OptOut) -> bool:
        return await self._ledger.mark_optout_pending(entry)

    async def claim_decision(self, entry: OptOut, *, defer: bool = False) -> Decision:
        return await self._ledger.claim_decision(entry, defer=defer)

    async def pending_optouts(self) -> list[OptOut]:
        return await self._ledger.pending_optouts()

    async def optouts_scan(self, *, before: LedgerCursor | None = None, limit: int = 50,
                           scan: int | None = None, since: float | None = None,
                           until: float | None = None, action: str | None = None,
                           ) -> tuple[list[OptOut], LedgerCursor | None]:
        return await self._ledger.optouts_scan(before=before, limit=limit, scan=scan, since=since,
                                               until=until, action=action)

    async def optouts_recorded(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return await self._ledger.optouts_recorded(keys)

    # -- survey votes ---------------------------------------------------------------------------
    async def vote(self, survey: str, voter: str, choice: str, *, policy: str, now: float,
                   valid: bool = True, vote_id: str = "") -> bool:
        return await self._ledger.vote(survey, voter, choice, policy=policy, now=now, valid=valid,
                                       vote_id=vote_id)

    async def survey_results(self, survey: str) -> SurveyResults:
        return await self._ledger.survey_results(survey)
