"""Opt-outs still pending, as `keyrouter optouts overdue` counts them (keyrouter.compliance.overdue), but
read in pages: the dashboard cannot afford compliance.collect's whole-ledger read on every view.

Pending, as compliance defines it: an effect with a deadline (blacklist, İYS RET) that has no
ledger line and whose message waits for a retry (marked pending by its handler), sits in the dead
letters (marked, or its rule has such an effect), or is among the rows the workers share (fetched,
unfinished) and routes to such an effect.  Reads: the marks, which ids of them are unfinished, the
oldest `scan` dead letters of the opt-out rules (one filtered page), the shared rows (bounded by
the inbox), and which of those effects have a ledger line: five round trips, plus a lookup for the
few marks the page did not explain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keyrouter.compliance.overdue import (  # the same routing of shared rows
    EFFECTS,
    _shared_effects,
    effects_of_rules,
)
from keyrouter.message import RowError, parse_row
from keyrouter.store import DeadLetter, OptOut, Store

#: Opt-out dead letters read per view, the OLDEST (nearest their deadline): beyond them the CLI
#: (`optouts overdue`) has the full count.
SCAN = 200
#: Marks whose dead letter was not on that page, looked up one by one at most.
LOOKUPS = 50


@dataclass(frozen=True)
class Pending:
    entry: OptOut  # handled_at 0: not handled
    where: str  # "retrying" | "dead letter"


def _row_facts(d: DeadLetter) -> tuple[float, str]:
    """The received moment (the failure time when the row has no date) and the sender."""
    try:
        m = parse_row(d.row, now=lambda: datetime.fromtimestamp(d.failed_at, UTC))
    except RowError:
        return d.failed_at, ""
    return m.received_at.timestamp(), m.sender_e164 or m.sender


async def pending(store: Store, rule_effects: Mapping[str, Sequence[str]], router: Any = None,
                  scan: int = SCAN) -> tuple[list[Pending], bool]:
    """(pending effects, oldest received first; whether the dead-letter page was full, so more
    may exist beyond it)."""
    marks = [m for m in await store.pending_optouts() if m.action in EFFECTS]
    rules = sorted(rule_effects)
    letters = await store.dead_letters_page(0, scan, rules=rules, oldest_first=True) if rules else []
    dead: dict[str, DeadLetter] = {d.id: d for d in letters}
    waiting = set(await store.unfinished(sorted({m.message_id for m in marks}))) if marks else set()
    unexplained = sorted({m.message_id for m in marks} - waiting - set(dead))[:LOOKUPS]
    for d in await asyncio.gather(*(store.get_dead_letter(i) for i in unexplained)):
        if d is not None:
            dead[d.id] = d
    out: list[Pending] = []
    seen: set[tuple[str, str]] = set()
    for m in marks:
        where = "retrying" if m.message_id in waiting else "dead letter" if m.message_id in dead else None
        if where is not None:  # else its message finished otherwise: someone or something decided
            seen.add((m.message_id, m.action))
            out.append(Pending(m, where))
    candidates = [(d, effect) for d in letters for effect in rule_effects.get(d.rule or "", ())
                  if (d.id, effect) not in seen]
    shared = await _shared_effects(store, router) if router is not None else []
    asked = [(d.id, e) for d, e in candidates] + [(m.id, e) for m, e in shared]
    recorded = await store.optouts_recorded(asked) if asked else set()
    for d, effect in candidates:
        if (d.id, effect) not in recorded:
            seen.add((d.id, effect))
            received, number = _row_facts(d)
            out.append(Pending(OptOut(number, effect, d.id, None, received, 0.0), "dead letter"))
    for m, effect in shared:  # fetched, not started or held up before the opt-out entry
        if (m.id, effect) not in recorded and (m.id, effect) not in seen:
            out.append(Pending(OptOut(m.sender_e164 or m.sender, effect, m.id, None,
                                      m.received_at.timestamp(), 0.0), "waiting"))
    out.sort(key=lambda p: (p.entry.received_at, p.entry.message_id, p.entry.action))
    return out, len(letters) >= scan


def effects_of(rules: Any) -> dict[str, tuple[str, ...]]:
    return effects_of_rules(rules)
