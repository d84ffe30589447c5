"""`iys`: record the sender's consent change in İYS, Turkey's national consent registry.

Params (all optional):
- `status`: `RET` (default: an opt-out) or `ONAY` (an opt-in rule);
- `recipient_type` (or `recipientType`, İYS's own spelling): `BIREYSEL` (default) or `TACIR`;
- `source`: İYS's source, HS_MESAJ by default (the decision came by SMS); opt-outs reconciled from
  the provider's blacklist use the configured one (docs/reconciliation.md).

The record: `type` MESAJ, `source` as above, `recipient` the sender's
E.164 number, `consentDate` the provider's own date string (Turkey time) when the row has one in
İYS's format, else the received time in Turkey time (for a row without a provider date: the time
keyrouter first saw it, kept with the row).  A sender that is a short code or a name
goes to the dead letters, as with `blacklist` (docs/handlers.md, "Sender and number").

Safe to repeat: the effect is marked pending in the store before the call; a mark already there
means an earlier try may have reached İYS, so the client asks the consent status first and sends
nothing when İYS already holds the decision.  İYS refusing a record it already holds is success
("already"); a RET İYS refuses as a first record (its code H175: no consent held) is success
("nothing_to_withdraw"); a wrong code or path never is (docs/ordering-and-masking.md).  The ledger
line (action `iys_ret` / `iys_onay`) records the outcome and İYS's transactionId.  The latest
request wins, as with `blacklist` (keyrouter/ordering.py): a message earlier in the order than the
number's latest ledger line changes nothing, and the number is claimed atomically before the call
(`Store.claim_decision`), so a message deciding it on another worker is waited for.  Credentials
come from IYS_USERNAME, IYS_PASSWORD, IYS_CODE, IYS_BRAND_CODE, IYS_BASE_URL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from keyrouter import timefmt
from keyrouter.handlers.context import Context
from keyrouter.handlers.deciding import decide
from keyrouter.handlers.fencing import check_claim
from keyrouter.handlers.templating import unknown_params
from keyrouter.masking import mask_number
from keyrouter.message import PROVIDER_DATE, Message
from keyrouter.providers.iys import RECIPIENT_TYPES, SOURCES, STATUSES, Consent, shared_client
from keyrouter.retries import PermanentError
from keyrouter.rules.router import Match
from keyrouter.store.base import OptOut

__all__ = ["PARAMS", "action_for", "consent_date", "handle", "params_problem", "record",
           "record_for"]

PARAMS = ("status", "recipient_type", "recipientType", "source")


def params_problem(params: Mapping[str, Any]) -> str | None:
    """Why these params cannot work for `iys`, or None (for `keyrouter check` and run time)."""
    problem = unknown_params(params, PARAMS, "iys")
    if problem:
        return problem
    status = params.get("status", "RET")
    if status not in STATUSES:
        return f"iys: status must be RET (opt-out) or ONAY (opt-in), not {status!r}"
    if "recipient_type" in params and "recipientType" in params:
        return "iys: give recipient_type or recipientType, not both"
    kind = params.get("recipient_type", params.get("recipientType", "BIREYSEL"))
    if kind not in RECIPIENT_TYPES:
        return f"iys: recipient_type must be BIREYSEL or TACIR, not {kind!r}"
    if params.get("source", "HS_MESAJ") not in SOURCES:
        return f"iys: source must be one of İYS's sources ({', '.join(SOURCES)}), not {params['source']!r}"
    return None


def action_for(status: str) -> str:
    """The ledger action of an İYS record with this status."""
    return "iys_ret" if status == "RET" else "iys_onay"


def consent_date(message: Message) -> str:
    """İYS's consentDate: the provider's date string when it is already in İYS's format (both
    are Turkey time), else the received moment in Turkey time."""
    raw = message.row.get("date") if message.date_known else None
    if isinstance(raw, str) and PROVIDER_DATE.fullmatch(raw.strip()):
        return raw.strip()
    return timefmt.iys(message.received_at)


def record_for(message: Message, params: Mapping[str, Any]) -> Consent | None:
    """The consent record a message makes (None without a mobile sender)."""
    if message.sender_e164 is None:
        return None
    return Consent(
        recipient=message.sender_e164,
        status=params.get("status", "RET"),
        consent_date=consent_date(message),
        recipient_type=params.get("recipient_type", params.get("recipientType", "BIREYSEL")),
        source=params.get("source", "HS_MESAJ"),
    )


async def handle(message: Message, match: Match | None, context: Context) -> None:
    await record(message, match, context)


async def record(message: Message, match: Match | None, context: Context, *,
                 defer: bool = False) -> None:
    """The İYS record of `message`; `defer`: a provider opt-out's entry, which records nothing
    when another message's opt-out is in the ledger."""
    problem = params_problem(context.params)
    if problem:
        raise PermanentError(problem)
    consent = record_for(message, context.params)
    if consent is None:
        raise PermanentError(
            f"iys: message {message.id}: the row's sender is not a mobile number "
            f"({mask_number(message.sender)!r}: a short code or a name), so there is no recipient "
            "to record in İYS; the row's `number` is our own receiving number and is deliberately "
            "not used; see docs/handlers.md, 'Sender and number'"
        )
    client = shared_client(context.settings) if context.settings is not None else None
    if client is None:
        raise PermanentError(
            "iys: İYS is not configured: set IYS_USERNAME, IYS_PASSWORD, IYS_CODE and IYS_BRAND_CODE "
            "(and IYS_BASE_URL for the sandbox) where the worker runs"
        )
    masked = mask_number(consent.recipient)
    action = action_for(consent.status)
    store = context.store
    entry = OptOut(number=consent.recipient, action=action, message_id=message.id,
                   keyword=match.keyword if match else None,
                   received_at=message.received_at.timestamp(), handled_at=0.0,
                   dated=message.date_known)
    repeat = False
    if store is not None:
        decision = await decide(store, entry, context, "iys", defer=defer)
        if decision is None:
            return
        repeat = not decision.first
    await check_claim(context, "iys", "İYS consent record")
    result = await client.add_consent(consent, check_first=repeat)
    context.logger.info(
        "iys: %s %s for %s (%s%s), message %s", consent.status, result.outcome, masked,
        consent.consent_date, f", transactionId {result.transaction_id}" if result.transaction_id else "",
        message.id,
    )
    if store is not None:
        await store.record_optout(replace(entry, handled_at=time.time(), outcome=result.outcome,
                                          transaction_id=result.transaction_id))
