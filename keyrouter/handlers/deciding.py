"""The per-number claim the legal built-ins (`blacklist`, `unblacklist`, `iys`, and a provider
opt-out's entries) take before their provider call: `Store.claim_decision`, one atomic step on
every backend, so two workers processing the same number's decision at once (an inbox RET and a
provider opt-out, two reconciles) apply it once (docs/reconciliation.md, "Once, whatever happens").

When another message holds the number, the entry waits in place a little (the holder is usually
one provider call from its ledger line), then asks to be retried (`RetryLater`): it decides again
once the holder recorded or failed for good, so no opt-out is lost and none is applied twice.
"""

from __future__ import annotations

import asyncio

from keyrouter.handlers.context import Context
from keyrouter.masking import mask_number
from keyrouter.retries import RetryLater
from keyrouter.store.base import BUSY, DECIDED, LATER, Decision, OptOut, Store

__all__ = ["BUSY_RETRY", "BUSY_WAIT", "decide", "skipped"]

#: Seconds an entry waits in place for the number's holder before asking to be retried.
BUSY_WAIT = 3.0
#: Seconds before the retry of an entry whose number was still held.
BUSY_RETRY = 5.0
_FIRST_PAUSE, _MAX_PAUSE = 0.02, 0.5


async def decide(store: Store, entry: OptOut, context: Context, what: str, *,
                 defer: bool = False) -> Decision | None:
    """`store.claim_decision(entry)`, waiting up to BUSY_WAIT seconds while another message holds
    the number; raises RetryLater when it still does.  None (logged by `skipped`) when the entry
    changes nothing (LATER or DECIDED), so the caller has nothing to do."""
    pause, waited = _FIRST_PAUSE, 0.0
    while True:
        decision = await store.claim_decision(entry, defer=defer)
        if decision.verdict in (LATER, DECIDED):
            skipped(context, what, decision, entry.message_id, entry.number)
            return None
        if decision.verdict != BUSY:
            return decision
        if waited >= BUSY_WAIT:
            raise RetryLater(
                f"{what}: message {decision.other} is deciding for {mask_number(entry.number)}"
                f" ({entry.action} of message {entry.message_id} waits for it)",
                retry_after=BUSY_RETRY)
        if not waited:
            context.logger.info("%s: %s is held by message %s; message %s waits", what,
                                mask_number(entry.number), decision.other, entry.message_id)
        await asyncio.sleep(pause)
        waited += pause
        pause = min(pause * 2, _MAX_PAUSE)


def skipped(context: Context, what: str, decision: Decision, message_id: str, number: str) -> None:
    """Log why an entry changes nothing: LATER (a later message decided) or DECIDED (a provider
    opt-out's entry, another message's opt-out recorded)."""
    if decision.verdict == LATER:
        # An older RET or BASLA, e.g. a dead letter retried by hand, must not undo what the
        # person asked for later: the latest request received wins.
        context.logger.warning("%s: skipped for %s: a later message (%s) already decided, message %s",
                               what, mask_number(number), decision.other, message_id)
    else:
        context.logger.info("%s: %s already opted out by message %s; provider opt-out %s records "
                            "nothing", what, mask_number(number), decision.other, message_id)
