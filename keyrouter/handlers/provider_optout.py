"""The two entries of a provider opt-out's fixed route (keyrouter.compliance.channels): the
`blacklist` and `iys` built-ins, unless another message already recorded or is recording an
opt-out for the number, so one opt-out makes one ledger entry and one İYS record
(docs/reconciliation.md)."""

from __future__ import annotations

from keyrouter.compliance.channels import OPT_OUTS
from keyrouter.handlers import blacklist as blacklist_handler
from keyrouter.handlers import iys as iys_handler
from keyrouter.handlers.context import Context
from keyrouter.masking import mask_number
from keyrouter.message import Message
from keyrouter.rules.router import Match

__all__ = ["blacklist", "iys"]


async def _decided_elsewhere(message: Message, context: Context, what: str) -> bool:
    """True when another message already recorded an opt-out for the number, or has one under
    way (a pending mark of an unfinished message, on any worker): that one records it (logged)."""
    number, store = message.sender_e164, context.store
    if store is None or number is None:
        return False
    latest = await store.latest_optout(number)
    other = None
    if latest is not None and latest.message_id != message.id and latest.action in OPT_OUTS:
        other = latest.message_id
    else:
        marks = [m.message_id for m in await store.pending_optouts()
                 if m.number == number and m.message_id != message.id and m.action in OPT_OUTS]
        running = await store.unfinished(marks) if marks else []
        other = running[0] if running else None
    if other is None:
        return False
    context.logger.info("%s: %s already opted out by message %s; provider opt-out %s records "
                        "nothing", what, mask_number(number), other, message.id)
    return True


async def blacklist(message: Message, match: Match | None, context: Context) -> None:
    """The ledger's `blacklist` line of a provider opt-out (add-blacklist is idempotent)."""
    if not await _decided_elsewhere(message, context, "blacklist"):
        await blacklist_handler.blacklist(message, match, context)


async def iys(message: Message, match: Match | None, context: Context) -> None:
    """The İYS RET of a provider opt-out, with the source the reconcile chose."""
    if not await _decided_elsewhere(message, context, "iys"):
        await iys_handler.handle(message, match, context)
