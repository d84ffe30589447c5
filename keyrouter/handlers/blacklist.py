"""`blacklist` and `unblacklist`: the sender onto / off the provider's blacklist, then the ledger.

Only `message.sender_e164` is ever blocked.  When the sender is a short code or an alphanumeric
name there is no mobile number to block and the message goes to the dead letters (PermanentError):
the row's other number (`number`) is OUR receiving number, even though one of the provider's own
examples looks as if the two were swapped, and blocking the wrong person is worse than a dead
letter a human can look at (docs/handlers.md, "Sender and number").

Order: the latest request wins, in the one order of a sender's messages (keyrouter/ordering.py:
provider date, then numeric id; undated rows by id).  Before acting, the entry claims the number
(`Store.claim_decision`, keyrouter.handlers.deciding): one atomic step that reads the ledger's
latest entry for the number and whether another message is deciding it right now (on any worker).
When a message later in that order already blocked or unblocked it, this earlier message changes
nothing (logged); while another message holds the number, this one waits, then decides again.
Per-sender ordering in the dispatcher keeps the first rare; it matters when a dead letter is
retried by hand after the person wrote again.  The second is an inbox RET beside a provider
opt-out of the same number (docs/reconciliation.md).

Provider answers: 466 (invalid number) is permanent; `delete-blacklist`'s 474 (not on the list)
counts as success: the number is off the list, which is what was asked, and a retry after a
crash between the call and the bookkeeping meets exactly that.  `add-blacklist` is idempotent at
the provider.  After success the effect goes to the opt-out ledger (`Store.record_optout`, itself
idempotent per message and action) when the context has a store.

No params.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from keyrouter.handlers.context import Context
from keyrouter.handlers.deciding import decide
from keyrouter.handlers.fencing import check_claim
from keyrouter.handlers.templating import require_client, unknown_params
from keyrouter.masking import mask_number
from keyrouter.message import Message
from keyrouter.providers.iletimerkezi import NOT_ON_BLACKLIST, PermanentApiError
from keyrouter.retries import PermanentError
from keyrouter.rules.router import Match
from keyrouter.store.base import OptOut

__all__ = ["INVALID_NUMBER", "PARAMS", "apply", "blacklist", "params_problem", "unblacklist"]

INVALID_NUMBER = 466
PARAMS: tuple[str, ...] = ()


def params_problem(params: Mapping[str, Any], handler: str = "blacklist") -> str | None:
    """Why these params cannot work, or None: the two handlers take none."""
    return unknown_params(params, PARAMS, handler)


async def blacklist(message: Message, match: Match | None, context: Context) -> None:
    """Add the sender to the provider's blacklist (opt-out)."""
    await apply("blacklist", message, match, context)


async def unblacklist(message: Message, match: Match | None, context: Context) -> None:
    """Remove the sender from the provider's blacklist (opt back in)."""
    await apply("unblacklist", message, match, context)


async def apply(action: str, message: Message, match: Match | None, context: Context, *,
                defer: bool = False) -> None:
    """`action` ("blacklist" or "unblacklist") for the sender; `defer`: a provider opt-out's
    entry, which records nothing when another message's opt-out is in the ledger."""
    problem = params_problem(context.params, action)
    if problem:
        raise PermanentError(problem)
    number = message.sender_e164
    if number is None:
        verb = "block" if action == "blacklist" else "unblock"
        raise PermanentError(
            f"{action}: message {message.id}: the row's sender is not a mobile number "
            f"({mask_number(message.sender)!r}: a short code or a name), so there is no one to "
            f"{verb}; the row's `number` is our own receiving number and is deliberately not "
            "used; see docs/handlers.md, 'Sender and number'"
        )
    client = require_client(context, action)
    masked = mask_number(number)
    if context.store is not None:
        # Claimed and pending until the ledger line: `optouts stats/overdue` count it while it is
        # retried, and no other message applies the number's decision meanwhile.
        decision = await decide(context.store, _entry(action, message, match, number, 0.0),
                                context, action, defer=defer)
        if decision is None:
            return
    already = False
    await check_claim(context, action, "add-blacklist" if action == "blacklist" else "delete-blacklist")
    try:
        if action == "blacklist":
            await client.add_blacklist(number)
        else:
            await client.delete_blacklist(number)
    except PermanentApiError as exc:
        if exc.code == INVALID_NUMBER:
            raise PermanentError(
                f"{action}: the provider refused {masked} as an invalid number (466); message {message.id}"
            ) from None
        if not (action == "unblacklist" and exc.code == NOT_ON_BLACKLIST):
            raise
        already = True
    if already:
        context.logger.info(
            "unblacklist: %s was not on the blacklist (474); counted as done, message %s",
            masked,
            message.id,
        )
    else:
        context.logger.info("%s: %s done, message %s", action, masked, message.id)
    if action == "blacklist":  # keyrouter_optout_delay_seconds
        context.events.optout_applied(message.received_at.timestamp(), time.time())
    if context.store is not None:
        await context.store.record_optout(_entry(action, message, match, number, time.time()))


def _entry(action: str, message: Message, match: Match | None, number: str, handled_at: float) -> OptOut:
    return OptOut(number=number, action=action, message_id=message.id,
                  keyword=match.keyword if match else None,
                  received_at=message.received_at.timestamp(), handled_at=handled_at,
                  dated=message.date_known)
