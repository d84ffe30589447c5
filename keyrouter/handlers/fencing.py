"""Fencing of provider calls: an entry makes a state-changing provider call (add or delete
blacklist, an İYS record, send-sms) only while its worker still holds the message's claim.

A worker whose lease ran out (paused, cut off from the store) and was taken over by another worker
must not land a late add-blacklist after the new owner's delete-blacklist.  The check renews the
lease in one store round trip right before the call; a stale worker stops with `StaleClaim`, which
the dispatcher treats as a lost message (no attempt counted, the new owner carries on).  The gap
between the check and the call is one round trip, against a lease of `KEYROUTER_LEASE` seconds
(docs/opt-out-duty.md, "Fencing").
"""

from __future__ import annotations

from keyrouter.handlers.context import Context

__all__ = ["StaleClaim", "check_claim"]


class StaleClaim(Exception):
    """This worker no longer holds the message's claim: another worker owns it now."""


async def check_claim(context: Context, handler: str, call: str) -> None:
    """Raise StaleClaim, before `handler` makes the provider call `call`, when the claim was
    lost."""
    holds = context.holds_claim
    if holds is not None and not await holds():
        context.events.stale_claim(handler)
        raise StaleClaim(f"{handler}: this worker no longer holds the message's claim; "
                         f"{call} not called")
