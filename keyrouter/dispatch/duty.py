"""The opt-out duty on the dispatch side: how long a legal effect is retried, and what happens
when an optional entry (a confirmation SMS) fails (docs/opt-out-duty.md).

- A legal effect (`blacklist`, `unblacklist`, `iys` entries) is retried with the retry policy's
  capped backoff until its *give-up point*: the end of the second Turkish business day after the
  message was received, one business day before the three-day deadline of keyrouter.compliance.deadlines.
  Only a failure at or after that point, with at least KEYROUTER_MAX_ATTEMPTS attempts made, sends
  the message to the dead letters (a permanent error still does at once: retrying cannot help).
  The business day left is for a person to act on the dead letter.
- An optional entry that fails for good (a permanent error, or its last attempt under
  KEYROUTER_MAX_ATTEMPTS) is logged, counted, and, in a rule with a legal effect, written to the
  opt-out ledger as `<handler>_failed` (e.g. `reply_failed`) with the error; the rule goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from keyrouter.compliance.deadlines import BUSINESS_DAYS, deadline
from keyrouter.events import Events
from keyrouter.masking import mask_number
from keyrouter.message import Message
from keyrouter.retries import RetryPolicy
from keyrouter.rules.entry_keys import LEGAL_HANDLERS
from keyrouter.rules.model import HandlerEntry
from keyrouter.rules.router import Route
from keyrouter.store.base import OptOut, Store

__all__ = [
    "FAILED_SUFFIX",
    "LEGAL_MAX_DELAY",
    "failed_action",
    "failure_where",
    "give_up_at",
    "is_legal",
    "legal_delay",
    "legal_exhausted",
    "optional_failed",
]

logger = logging.getLogger("keyrouter.dispatch")

#: Ledger actions of failed optional entries end with this ("reply_failed").
FAILED_SUFFIX = "_failed"
#: The longest wait between two attempts of a legal effect, whatever the policy's max_delay.
LEGAL_MAX_DELAY = 900.0
_ERROR_IN_LEDGER = 300


def is_legal(entry: HandlerEntry) -> bool:
    return entry.name in LEGAL_HANDLERS


def give_up_at(received_at: float) -> float:
    """Epoch seconds after which a legal effect that still fails goes to the dead letters: one
    business day before the deadline (00:00 Turkey time after the second business day)."""
    return deadline(received_at, BUSINESS_DAYS - 1).timestamp()


def legal_exhausted(policy: RetryPolicy, failures: int, received_at: float, now: float) -> bool:
    """A legal effect's last attempt: past its give-up point and KEYROUTER_MAX_ATTEMPTS made."""
    return policy.exhausted(failures) and now >= give_up_at(received_at)


def legal_delay(policy: RetryPolicy, failures: int) -> float:
    """The policy's backoff, capped at LEGAL_MAX_DELAY."""
    return min(policy.delay(failures), LEGAL_MAX_DELAY)


def failed_action(handler: str) -> str:
    return f"{handler}{FAILED_SUFFIX}"


def failure_where(message: Message, rule_name: str, index: int, entry: HandlerEntry,
                  failures: int) -> tuple[str, dict[str, object]]:
    """Where an entry failed, for the log line (sender masked), and the structured log fields
    (JSON logs), which never hold the number or the text."""
    where = (f"message {message.id} from {mask_number(message.sender)}, rule {rule_name}, "
             f"handler #{index} {entry.name}")
    fields: dict[str, object] = {"message_id": message.id, "rule": rule_name,
                                 "handler": entry.name, "attempt": failures}
    return where, fields


async def optional_failed(store: Store, events: Events, policy: RetryPolicy,
                          clock: Callable[[], float], message: Message, route: Route,
                          rule_name: str, index: int, entry: HandlerEntry, error: str,
                          failures: int, gave_up: bool) -> None:
    """Record an optional entry's failure (`error`: dispatch.describe_error's text); the caller
    goes on with the rule."""
    where, fields = failure_where(message, rule_name, index, entry, failures)
    if gave_up:
        logger.error("optional entry given up, the rule goes on: %s: %s", where, error, extra=fields)
    else:
        logger.warning("optional entry failed, the rule goes on and it is retried after: %s "
                       "(attempt %d of %d): %s", where, failures, policy.max_attempts, error,
                       extra=fields)
    events.optional_failed(rule_name, entry.name, gave_up)
    number = message.sender_e164
    if not gave_up or number is None or not any(is_legal(e) for e in route.handlers):
        return
    line = OptOut(number=number, action=failed_action(entry.name), message_id=message.id,
                  keyword=route.match.keyword if route.match else None,
                  received_at=message.received_at.timestamp(), handled_at=clock(),
                  outcome=error[:_ERROR_IN_LEDGER])
    try:
        await store.record_optout(line)
    except Exception as store_error:  # the log line and the metric above still tell it
        logger.error("%s: the failure could not be written to the ledger: %s: %s", where,
                     type(store_error).__name__, store_error, extra=fields)
