"""`reply`: a transactional SMS back to the sender (`send-sms`, `iys: "0"`).

Params:
- `text` (required): a template (see keyrouter.handlers.templating): `{choice}`, `{code}`... from
  the match's captures, and `{id}`, `{sender}`, `{receiver}`, `{keyword}`, `{rule}`.  Values are
  inserted literally; a name with no value is a PermanentError.
- `sender`: the approved sender name; default `ILETIMERKEZI_SENDER` (`context.settings.sender`).
- `max_age` (default `1h`): an older message gets no reply (logged, counted as success), so a
  worker catching up on a backlog does not answer yesterday's texts.

Provider answers: 451 (same text to the same number within ten minutes) is success: it is
what a retry after a lost answer meets.  452 (recipient refused, e.g. already blacklisted: the
panel blocks RET senders of a short code by itself) is logged and counts as done, so the
`blacklist` entry that follows still runs: put `reply` before `blacklist` in the rule.  Other
refusals (450 sender not approved, 453 too long...) escape as PermanentApiError; 401 as
AuthenticationRefused; 5xx and timeouts as TransientApiError (retried).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from keyrouter.durations import parse_duration
from keyrouter.handlers.context import Context
from keyrouter.handlers.fencing import check_claim
from keyrouter.handlers.templating import (
    message_values,
    render,
    require_client,
    template_problem,
    unknown_params,
)
from keyrouter.masking import mask_number
from keyrouter.message import Message
from keyrouter.providers.iletimerkezi import DUPLICATE_SMS, PermanentApiError
from keyrouter.retries import PermanentError
from keyrouter.rules.router import Match

__all__ = ["DEFAULT_MAX_AGE", "PARAMS", "handle", "params_problem", "template_problem"]

PARAMS = ("text", "sender", "max_age")
DEFAULT_MAX_AGE = "1h"
REFUSED_RECIPIENT = 452


def params_problem(params: Mapping[str, Any], captures: list[str] | None = None) -> str | None:
    """Why these params cannot work for `reply`, or None.  `captures`: the rule's capture names,
    when known, so a placeholder no message could fill is caught before it runs."""
    problem = unknown_params(params, PARAMS, "reply")
    if problem:
        return problem
    text = params.get("text")
    if text is None or text == "":
        return 'reply: the text param is required, e.g. reply: {text: "Listeden çıkarıldınız."}'
    problem = template_problem(text, captures)
    if problem:
        return f"reply: text: {problem}"
    sender = params.get("sender")
    if sender is not None and (not isinstance(sender, str) or not sender.strip()):
        return "reply: sender must be a non-empty string (the approved sender name)"
    try:
        _max_age(params)
    except ValueError as exc:
        return f"reply: max_age: {exc}"
    return None


def _max_age(params: Mapping[str, Any]) -> timedelta:

    return parse_duration(params.get("max_age", DEFAULT_MAX_AGE))


async def handle(message: Message, match: Match | None, context: Context) -> None:
    params = context.params
    problem = params_problem(params)
    if problem:
        raise PermanentError(problem)
    max_age = _max_age(params)
    age = datetime.now(UTC) - message.received_at
    if age > max_age:
        context.logger.info(
            "reply: message %s is %ds old, older than max_age %s: no reply sent",
            message.id,
            int(age.total_seconds()),
            params.get("max_age", DEFAULT_MAX_AGE),
        )
        return
    number = message.sender_e164
    if number is None:
        raise PermanentError(
            f"reply: message {message.id}: the sender {mask_number(message.sender)!r} is not a "
            "mobile number (a short code or a name), so there is no one to reply to"
        )
    sender = params.get("sender") or (context.settings.sender if context.settings else None)
    if not sender:
        raise PermanentError(
            "reply: no sender name: set the ILETIMERKEZI_SENDER environment variable to your "
            "approved sender name (panel: Settings → Sender Names), or give the handler a "
            "sender param: reply: {text: ..., sender: ACME}"
        )
    text = render(params["text"], message_values(message, match, context.rule))
    client = require_client(context, "reply")
    masked = mask_number(number)
    await check_claim(context, "reply", "send-sms")
    try:
        order_id = await client.send_sms(sender=sender, text=text, numbers=[number], iys="0")
    except PermanentApiError as exc:
        if exc.code == DUPLICATE_SMS:
            context.logger.info(
                "reply: the provider says this text already went to %s (451); counted as sent, message %s",
                masked,
                message.id,
            )
            return
        if exc.code == REFUSED_RECIPIENT:
            # Not a reason to hold up the rest of the rule: the usual cause is a number already
            # on the blacklist (the panel blocks RET senders of a short code by itself), and the
            # `blacklist` entry after this one must still run and reach the ledger.
            context.logger.warning(
                "reply: the provider refused the recipient %s (452), e.g. already blacklisted; "
                "no reply sent, the rule goes on (put reply before blacklist); message %s",
                masked,
                message.id,
            )
            return
        raise
    context.logger.info("reply: sent to %s, order %s, message %s", masked, order_id, message.id)
