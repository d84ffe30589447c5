"""Every opt-out against its deadline: handled in time, late, or still pending.

The regulator's question is per opt-out and per effect: was the number blocked at the provider,
and was the refusal recorded in İYS, within three business days (keyrouter.compliance.deadlines)?  The
effects counted are `blacklist` and `iys` with status RET (ledger actions "blacklist", "iys_ret");
opt-ins have no deadline.

An opt-out is *pending* while it has no ledger line and:
- its effect was started (the handler marked it pending) and the message is not finished: it waits
  for a retry, or a worker is on it;
- or its message is in the dead letters: marked, or its rule (by name, in the current rules) has a
  `blacklist` or RET `iys` entry, so a failure before that entry counts too;
- or its row is among those the workers share (`Store.published`: fetched and not finished) and
  routes, with the current rules, to handlers with such an entry: it waits to start, or an entry
  before the opt-out entry failed (e.g. `reply` during a provider outage) and it waits for a retry.
A marked effect whose message finished otherwise (the dead letter was dropped by a person, or a
later message of the same number decided first) is not pending: someone or something decided.

Gap: `replay` shares no rows, so there a message held up before its opt-out entry counts only once
it reaches that entry or the dead letters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keyrouter.compliance.channels import BUILTIN_OF, is_provider_row, provider_route
from keyrouter.compliance.deadlines import business_hours_left, deadline
from keyrouter.message import Message, RowError, parse_row
from keyrouter.rules.router import Router
from keyrouter.store.base import OptOut, Store

__all__ = ["EFFECTS", "Case", "collect", "effects_of_rules", "pending_counts", "summary"]

#: Ledger actions with a deadline, and how people call them.
EFFECTS: dict[str, str] = {"blacklist": "provider blacklist", "iys_ret": "İYS"}
ON_TIME, LATE, PENDING = "on_time", "late", "pending"


@dataclass(frozen=True, slots=True)
class Case:
    effect: str  # a key of EFFECTS
    message_id: str
    number: str | None
    received_at: float
    deadline: float
    state: str  # ON_TIME | LATE | PENDING
    handled_at: float | None = None
    where: str = "ledger"  # ledger | retrying | dead letter
    outcome: str | None = None
    transaction_id: str | None = None

    def hours_left(self, now: float) -> float:
        """Business hours to the deadline (negative: overdue)."""
        return business_hours_left(self.deadline, now)


def effects_of(entries: Iterable[Any]) -> tuple[str, ...]:
    """The opt-out effects of these handler entries, in order, once each."""
    effects = []
    for entry in entries:
        name = BUILTIN_OF.get(entry.name, entry.name)
        if name == "blacklist":
            effects.append("blacklist")
        elif name == "iys" and entry.params.get("status", "RET") == "RET":
            effects.append("iys_ret")
    return tuple(dict.fromkeys(effects))


def effects_of_rules(rules: Any) -> dict[str, tuple[str, ...]]:
    """Rule name ("default" for the default handlers) -> its opt-out effects, for the rules that
    have some."""
    found = {rule.name: effects_of(rule.handlers) for rule in getattr(rules, "rules", ())}
    found["default"] = effects_of(getattr(rules, "default", ()))
    return {name: effects for name, effects in found.items() if effects}


def _from_ledger(e: OptOut) -> Case:
    due = deadline(e.received_at).timestamp()
    return Case(e.action, e.message_id, e.number, e.received_at, due,
                ON_TIME if e.handled_at <= due else LATE, e.handled_at, "ledger", e.outcome,
                e.transaction_id)


async def collect(store: Store, rule_effects: Mapping[str, Sequence[str]] | None = None, *,
                  router: Router | None = None, pending_only: bool = False) -> list[Case]:
    """Every opt-out effect the store knows of, oldest received first (`pending_only`: just the
    pending ones, reading the ledger only from the oldest candidate on: cheap enough for a
    metrics refresh).  With a `router`, the rows workers share (`Store.published`: fetched, not
    finished) are routed too, so an opt-out still waiting to start or held up by an earlier entry
    counts as pending.  Five or six round trips."""
    marks = [m for m in await store.pending_optouts() if m.action in EFFECTS]
    dead = {d.id: d for d in await store.dead_letters()}
    candidates = [(d, effect) for d in dead.values()
                  for effect in (rule_effects or {}).get(d.rule or "", ())]
    facts = {d.id: _row_facts(d.row, d.failed_at) for d, _ in candidates}
    shared = await _shared_effects(store, router)
    if pending_only:
        starts = [m.received_at for m in marks] + [facts[d.id][0] for d, _ in candidates]
        starts += [m.received_at.timestamp() for m, _ in shared]
        # A week of margin: a row without a date got its received time when it was read.
        ledger = await store.optouts(min(starts) - 7 * 86400) if starts else []
    else:
        ledger = await store.optouts()
    ledger = [e for e in ledger if e.action in EFFECTS]
    recorded = {(e.message_id, e.action) for e in ledger}
    cases = [] if pending_only else [_from_ledger(e) for e in ledger]
    marks = [m for m in marks if (m.message_id, m.action) not in recorded]
    waiting = set(await store.unfinished(sorted({m.message_id for m in marks})))
    seen: set[tuple[str, str]] = set()
    for m in marks:
        where = "retrying" if m.message_id in waiting else "dead letter" if m.message_id in dead else None
        if where is None:
            continue
        seen.add((m.message_id, m.action))
        cases.append(Case(m.action, m.message_id, m.number, m.received_at,
                          deadline(m.received_at).timestamp(), PENDING, where=where))
    for letter, effect in candidates:
        if (letter.id, effect) in recorded or (letter.id, effect) in seen:
            continue
        seen.add((letter.id, effect))
        received, number = facts[letter.id]
        cases.append(Case(effect, letter.id, number, received, deadline(received).timestamp(),
                          PENDING, where="dead letter"))
    for message, effect in shared:
        if (message.id, effect) in recorded or (message.id, effect) in seen:
            continue
        received = message.received_at.timestamp()
        cases.append(Case(effect, message.id, message.sender_e164, received,
                          deadline(received).timestamp(), PENDING, where="waiting"))
    cases.sort(key=lambda c: (c.received_at, c.message_id, c.effect))
    return cases


async def _shared_effects(store: Store, router: Router | None) -> list[tuple[Message, str]]:
    """(message, effect) for the opt-outs among the rows workers share (unfinished messages)."""
    if router is None:
        return []
    _, rows = await store.published(0)
    found = []
    for _, text in rows:
        try:
            message = parse_row(json.loads(text))
        except (ValueError, RowError):
            continue
        route = provider_route(message) if is_provider_row(message) else \
            router.route(message.text, message.receiver)
        for effect in effects_of(route.handlers):
            found.append((message, effect))
    return found


def _row_facts(row: Mapping[str, Any], failed_at: float) -> tuple[float, str | None]:
    """The received moment (the failure time when the row has no date) and the E.164 sender."""
    try:
        m = parse_row(row, now=lambda: datetime.fromtimestamp(failed_at, UTC))
    except RowError:
        return failed_at, None
    return m.received_at.timestamp(), m.sender_e164


def summary(cases: Iterable[Case], now: float) -> dict[str, dict[str, Any]]:
    """Per effect: on_time, late, pending, overdue (pending past the deadline), and the business
    hours the closest pending deadline has left (None without pending ones)."""
    out: dict[str, dict[str, Any]] = {
        effect: {ON_TIME: 0, LATE: 0, PENDING: 0, "overdue": 0, "closest_hours_left": None}
        for effect in EFFECTS}
    for c in cases:
        s = out[c.effect]
        s[c.state] += 1
        if c.state == PENDING:
            left = c.hours_left(now)
            s["overdue"] += c.deadline <= now
            if s["closest_hours_left"] is None or left < s["closest_hours_left"]:
                s["closest_hours_left"] = left
    return out


async def pending_counts(store: Store, rules: Any = None,
                         now: float | None = None) -> dict[str, dict[str, int]]:
    """{effect: {"pending": n, "overdue": n}} for the metrics endpoint (keyrouter_optouts_pending,
    keyrouter_optouts_overdue).  `rules`: a Router (its shared rows are routed too) or a RuleSet."""
    when = time.time() if now is None else now
    router = rules if callable(getattr(rules, "route", None)) else None
    ruleset = router.rules if router is not None else rules
    effects = effects_of_rules(ruleset) if ruleset is not None else None
    stats = summary(await collect(store, effects, router=router, pending_only=True), when)
    return {effect: {"pending": s[PENDING], "overdue": s["overdue"]} for effect, s in stats.items()}
