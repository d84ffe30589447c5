"""`Store.claim_decision` on every backend: one atomic compare-and-set per number, so an inbox RET
and a provider opt-out (or two reconciles) processed at once on two workers never both apply one
decision (docs/reconciliation.md, "Once, whatever happens").

Each backend keeps, per number, the *holder*: the message that last claimed the number, when (the
store clock) and, on Redis, the members of its pending marks.  The holder keeps others waiting
only while all of these hold: it claimed less than DECISION_HOLD seconds ago, it has a pending
mark not yet in the ledger, and it is unfinished.  So a holder that recorded frees the number at
once, a dead one too (its opt-out can be recorded by the waiter), and a worker killed after its
claim blocks no one for ever: its message is claimed again and carries on (it is the holder), or
the hold runs out.  Each backend's ledger part implements it (memory_parts.py, sqlite/ledger.py,
redis/ledger.py) with `judge` below."""

from __future__ import annotations

from collections.abc import Callable

from keyrouter.ordering import Position, compare, entry_position
from keyrouter.store.values import (
    BUSY,
    DECIDED,
    DECISIONS,
    LATER,
    OPT_OUT_ACTIONS,
    Decision,
    OptOut,
)

#: The DECISIONS in a fixed order: the members of a message's pending marks (Redis), the actions
#: a holder's pending mark may have (SQLite).
DECISION_ACTIONS = sorted(DECISIONS)


def position(entry: OptOut) -> Position:
    """Where `entry` stands in keyrouter/ordering.py's order of a number's entries."""
    return entry_position(entry.received_at, entry.dated, entry.message_id)


def judge(entry: OptOut, latest: OptOut | None, *, defer: bool, has_line: Callable[[str], bool],
          holds: Callable[[str], bool]) -> Decision | None:
    """LATER, DECIDED or BUSY from the number's latest ledger entry, or None (the holder
    decides).  A deferring opt-out meets another message's opt-out: DECIDED when that message has
    this effect's line too (`has_line(message)`), BUSY while it still holds the number
    (`holds(message)`: it may write it yet), else None: it finished without this effect (dead,
    or its rule has none), so the deferring one records it and no effect is lost."""
    if latest is None or latest.message_id == entry.message_id:
        return None
    if compare(position(latest), position(entry)) > 0:
        return Decision(LATER, latest.message_id)
    if defer and entry.action in OPT_OUT_ACTIONS and latest.action in OPT_OUT_ACTIONS:
        if has_line(latest.message_id):
            return Decision(DECIDED, latest.message_id)
        if holds(latest.message_id):
            return Decision(BUSY, latest.message_id)
    return None
