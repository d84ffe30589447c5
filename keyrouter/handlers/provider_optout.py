"""The two entries of a provider opt-out's fixed route (keyrouter.compliance.channels): the
`blacklist` and `iys` built-ins, deferring: when another message already recorded an opt-out for
the number they record nothing, and while another message is deciding it (on any worker) they wait
for it, in one atomic step of the store (`Store.claim_decision`), so one opt-out makes one ledger
entry and one İYS record (docs/reconciliation.md)."""

from __future__ import annotations

from keyrouter.handlers import blacklist as blacklist_handler
from keyrouter.handlers import iys as iys_handler
from keyrouter.handlers.context import Context
from keyrouter.message import Message
from keyrouter.rules.router import Match

__all__ = ["blacklist", "iys"]


async def blacklist(message: Message, match: Match | None, context: Context) -> None:
    """The ledger's `blacklist` line of a provider opt-out (add-blacklist is idempotent)."""
    await blacklist_handler.apply("blacklist", message, match, context, defer=True)


async def iys(message: Message, match: Match | None, context: Context) -> None:
    """The İYS RET of a provider opt-out, with the source the reconcile chose."""
    await iys_handler.record(message, match, context, defer=True)
