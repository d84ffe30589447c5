"""The provider's blacklist against the opt-out ledger (docs/reconciliation.md).

A *full pass* reads the whole blacklist (one get-blacklist page per 1,000 numbers) and the whole
ledger; an *incremental pass* reads only the numbers added in a date-filter window, from the last
pass's watermark to `settle` seconds ago.  Three cases:

- on the list, no opt-out in the ledger: a provider opt-out, kept as a synthetic row and run by the
  dispatcher (keyrouter.reconcile_effects), dated by the run's time (full pass: the date a number
  was added is unknown) or the window's start (incremental: the earliest moment it can have been
  added, so its deadline is never late);
- the ledger's latest action is an opt-out recorded with a blacklist line, the list lacks the
  number (full passes only): drift `missing_at_provider`, added again;
- on the list while the ledger's latest action is an opt-in: in an incremental window that starts
  after the opt-in, a new provider opt-out; otherwise drift `optin_not_held`, reported, unchanged.

Numbers whose opt-out or opt-in is in progress (a pending mark of an unfinished or dead message, a
shared row or dead letter routed to a consent effect) are left to it.  Synthetic ids are
`provider:<number>:<latest ledger message id>`, so two passes at once, or a pass rerun after a
kill, name the same message and the dispatcher runs it once; rows are kept in the store before
the watermark moves, so a kill loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from keyrouter.compliance.channels import (
    BUILTIN_OF,
    OPT_INS,
    OPT_OUTS,
    is_provider_row,
    provider_row,
)
from keyrouter.events import NO_EVENTS, Events
from keyrouter.masking import mask_number
from keyrouter.message import Message, RowError, parse_row
from keyrouter.providers.blacklist import fetch_blacklist, filter_date
from keyrouter.providers.iletimerkezi import ApiError, IletiMerkezi
from keyrouter.rules.model import RuleSet
from keyrouter.rules.router import Router
from keyrouter.store.base import OptOut, Store, ledger_cursor

__all__ = ["DRIFT_KINDS", "FULL_EVERY", "SETTLE", "ZONE_MARGIN", "Outcome", "Plan", "Reconciler",
           "iys_params_of"]

logger = logging.getLogger("keyrouter.reconcile")

#: Numbers added this recently wait for the next pass: time for their inbox RET, if any, to be
#: fetched and marked, so it is recorded once, as an inbox opt-out.
SETTLE = 300.0
#: Each window starts this much earlier: the filter's dates are sent as Turkey time, and a
#: provider reading them as UTC would otherwise skip three hours (docs/reconciliation.md).
ZONE_MARGIN = 3 * 3600.0
#: A full pass at least this often (drift `missing_at_provider` needs the whole list).
FULL_EVERY = 86400.0
#: Numbers added again at once (drift is rare; this bounds a burst of repairs).
READD_AT_ONCE = 8
#: Ledger entries read per round trip on a full pass.
LEDGER_PAGE = 5000
MISSING, OPTIN_NOT_HELD = "missing_at_provider", "optin_not_held"
DRIFT_KINDS = (MISSING, OPTIN_NOT_HELD)
RunRows = Callable[[list[Message]], Awaitable[Any]]


@dataclass
class Plan:
    """What one pass found and would do (`--dry-run` prints it)."""

    mode: str  # "full" | "incremental"
    at: float
    window: tuple[float, float] | None = None
    listed: int = 0
    calls: int = 0
    pages: int = 0
    record: list[tuple[str, str, str, float]] = field(default_factory=list)  # id, row, number, date
    readd: list[str] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    watermark: float = 0.0


@dataclass
class Outcome:
    plan: Plan
    readded: list[str] = field(default_factory=list)
    repair_failed: list[str] = field(default_factory=list)
    saved: int = 0  # rows newly kept
    offered: int = 0  # kept rows handed to the dispatcher (or shared with the workers)
    left: list[str] = field(default_factory=list)  # kept rows unfinished or dead afterwards
    #: the rows were handed on (published to the workers), not run to the end: `left` is then
    #: what is still on its way, not a disagreement
    handed_on: bool = False

    @property
    def result(self) -> str:
        """"agree" when the ledger and the provider agree after the repairs, else "reported"."""
        left = self.left and not self.handed_on
        return "reported" if self.plan.reported or self.repair_failed or left else "agree"

    def drift(self) -> dict[str, int]:
        return {MISSING: len(self.readded) + len(self.repair_failed),
                OPTIN_NOT_HELD: len(self.plan.reported)}

    def summary(self) -> dict[str, Any]:
        p = self.plan
        return {"at": p.at, "mode": p.mode, "result": self.result, "listed": p.listed,
                "calls": p.calls, "recorded": len(p.record), "readded": len(self.readded),
                "repair_failed": len(self.repair_failed), "reported": len(p.reported),
                "busy": len(p.busy), "left": len(self.left)}


def iys_params_of(rules: RuleSet, source: str) -> dict[str, str] | None:
    """The İYS params of provider opt-outs: None unless a rule registers opt-outs in İYS (an
    `iys` entry with status RET); then its recipient type and `source`."""
    for entry in rules.entries():
        if entry.name == "iys" and entry.params.get("status", "RET") == "RET":
            kind = entry.params.get("recipient_type", entry.params.get("recipientType", "BIREYSEL"))
            return {"recipient_type": str(kind), "source": source}
    return None


class Reconciler:
    """One namespace's reconciliation.  `router` routes shared rows and dead letters (which are
    opt-outs or opt-ins in progress); `iys`: the İYS params of provider opt-outs or None."""

    def __init__(self, store: Store, client: IletiMerkezi, *, router: Router | None = None,
                 iys: dict[str, str] | None = None, clock: Callable[[], float] = time.time,
                 settle: float = SETTLE, full_every: float = FULL_EVERY,
                 events: Events = NO_EVENTS) -> None:
        self.store, self.client, self.router, self.iys = store, client, router, iys
        self.clock, self.settle, self.full_every, self.events = clock, settle, full_every, events

    # ------------------------------------------------------------------ planning (reads only)
    async def plan(self, *, full: bool | None = None) -> Plan:
        """Read the provider and the store; change nothing.  `full`: None decides (a full pass
        when none was made within `full_every`)."""
        state = await self.store.reconcile_state() or {}
        now = self.clock()
        if full is None:
            full = state.get("watermark") is None or now - float(state.get("full_at", 0)) >= self.full_every
        if full:
            return await self._plan_full(now)
        return await self._plan_window(now, float(state["watermark"]))

    async def _plan_full(self, now: float) -> Plan:
        listing = await fetch_blacklist(self.client)
        plan = Plan("full", now, listed=len(listing.numbers), calls=listing.calls,
                    pages=listing.pages, watermark=now - self.settle)
        busy = await self._in_progress()
        latest = await self._latest_by_number()
        listed = set(listing.numbers)
        for number in listing.numbers:
            entry = latest.get(number)
            if entry is not None and entry.action in OPT_OUTS:
                continue
            if number in busy:
                plan.busy.append(number)
            elif entry is None:
                self._add(plan, number, None, now)
            else:
                plan.reported.append(number)
        for number, entry in latest.items():
            if entry.action in OPT_OUTS and entry.blocked and number not in listed:
                (plan.busy if number in busy else plan.readd).append(number)
        return plan

    async def _latest_by_number(self) -> dict[str, _Latest]:
        """Each number's latest ledger entry, read newest first a page at a time (compact: a
        200,000-number ledger is never all in memory as entries)."""
        latest: dict[str, _Latest] = {}
        cursor = None
        while True:
            page = await self.store.optouts_page(before=cursor, limit=LEDGER_PAGE)
            for e in page:
                found = latest.get(e.number)
                if found is None:
                    latest[e.number] = _Latest(e.action, e.message_id, e.action == "blacklist")
                elif found.message_id == e.message_id and e.action == "blacklist":
                    found.blocked = True
            if len(page) < LEDGER_PAGE:
                return latest
            cursor = ledger_cursor(page[-1])

    async def _plan_window(self, now: float, watermark: float) -> Plan:
        start, end = watermark - ZONE_MARGIN, now - self.settle
        listing = await fetch_blacklist(self.client, start=start, end=end)
        plan = Plan("incremental", now, (start, end), listed=len(listing.numbers),
                    calls=listing.calls, pages=listing.pages, watermark=end)
        busy = await self._in_progress() if listing.numbers else set()
        for number in listing.numbers:
            entry = await self.store.latest_optout(number)
            if entry is not None and entry.action in OPT_OUTS:
                continue
            if number in busy:
                plan.busy.append(number)
            elif entry is None or entry.received_at < start:
                self._add(plan, number, entry, start)
            else:
                plan.reported.append(number)
        return plan

    def _add(self, plan: Plan, number: str, after: OptOut | None, dated: float) -> None:
        msg_id, row = provider_row(number, after.message_id if after else None,
                                   filter_date(dated), self.iys)
        plan.record.append((msg_id, row, number, dated))

    async def _in_progress(self) -> set[str]:
        """Numbers with an opt-out or opt-in under way: marks of unfinished or dead messages,
        shared rows and dead letters that route to a consent effect."""
        marks = await self.store.pending_optouts()
        dead = await self.store.dead_letters()
        dead_ids = {d.id for d in dead}
        waiting = set(await self.store.unfinished(sorted({m.message_id for m in marks})))
        busy = {m.number for m in marks if m.message_id in waiting or m.message_id in dead_ids}
        _, shared = await self.store.published(0)
        rows: list[Any] = [_load(text) for _, text in shared] + [d.row for d in dead]
        for row in rows:
            message = _message(row)
            if message is not None and message.sender_e164 and self._consent(message):
                busy.add(message.sender_e164)
        return busy

    def _consent(self, message: Message) -> bool:
        if is_provider_row(message):
            return True
        if self.router is None:
            return False
        names = {BUILTIN_OF.get(e.name, e.name) for e in self.router.route(message.text,
                                                                          message.receiver).handlers}
        return bool(names & {"blacklist", "unblacklist", "iys"})

    # ------------------------------------------------------------------ applying
    async def apply(self, plan: Plan, run: RunRows | None, *, waits: bool = True) -> Outcome:
        """Repair drift, keep the new rows, hand every unfinished kept row to `run` (the CLI's
        dispatcher, which `waits` for them, or a publish to the workers), then record the run."""
        out = Outcome(plan, handed_on=not waits)
        gate = asyncio.Semaphore(READD_AT_ONCE)

        async def readd(number: str) -> None:
            async with gate:
                await self._readd(number, out)

        await asyncio.gather(*(readd(n) for n in plan.readd))
        out.saved = await self.store.save_reconciled_rows([(i, r) for i, r, _, _ in plan.record])
        for msg_id, _, number, dated in plan.record:
            logger.info("provider opt-out %s for %s dated %s (Turkey time)%s", msg_id.split(":")[0],
                        mask_number(number), filter_date(dated),
                        "; the run's time: a full pass does not know when it was added"
                        if plan.mode == "full" else "; the start of the window it appeared in")
        kept = await self.store.reconciled_rows()
        open_ids = set(await self.store.unfinished([i for i, _ in kept])) if kept else set()
        messages = [m for i, row in kept if i in open_ids
                    if (m := _message(_load(row))) is not None]
        if messages and run is not None:
            await run(messages)
            out.offered = len(messages)
        still = set(await self.store.unfinished(sorted(open_ids))) if open_ids else set()
        dead = {d.id for d in await self.store.dead_letters()} if kept else set()
        out.left = sorted(i for i, _ in kept if i in still or i in dead)
        await self.store.drop_reconciled_rows([i for i, _ in kept if i not in still and i not in dead])
        await self._save(plan, out)
        self.events.reconcile_finished(out.result, out.drift(), plan.at)
        return out

    async def _readd(self, number: str, out: Outcome) -> None:
        latest = await self.store.latest_optout(number)
        if latest is None or latest.action in OPT_INS:  # an opt-in arrived meanwhile: never re-add
            return
        try:
            await self.client.add_blacklist(number)
        except ApiError as exc:
            out.repair_failed.append(number)
            logger.error("drift: %s is blacklisted in the ledger but not at the provider; adding "
                         "it again failed (%s)", mask_number(number), exc)
            return
        out.readded.append(number)
        logger.warning("drift: %s is blacklisted in the ledger (message %s) but was missing from "
                       "the provider's blacklist: added again", mask_number(number),
                       latest.message_id)

    async def _save(self, plan: Plan, out: Outcome) -> None:
        state = await self.store.reconcile_state() or {}
        state["watermark"] = max(plan.watermark, float(state.get("watermark") or 0))
        if plan.mode == "full":
            state["full_at"] = plan.at
        state["last"] = out.summary()
        await self.store.save_reconcile_state(state)

    async def run(self, run: RunRows | None, *, full: bool | None = None,
                  waits: bool = True) -> Outcome:
        """Plan and apply; a provider or store failure is counted (result "failed") and raised."""
        try:
            plan = await self.plan(full=full)
        except Exception:
            self.events.reconcile_finished("failed", {}, self.clock())
            raise
        return await self.apply(plan, run, waits=waits)


@dataclass(slots=True)
class _Latest:
    """A number's latest ledger entry, and whether its message has a `blacklist` line."""

    action: str
    message_id: str
    blocked: bool


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _message(row: Any) -> Message | None:
    try:
        return parse_row(row)
    except RowError:
        return None

