"""What a handler receives besides the message and the match (docs/handlers.md)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyrouter.events import NO_EVENTS, Events
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.settings import Settings
from keyrouter.store.base import Store


def idempotency_key(namespace: str, message_id: str, rule: str, entry: int | str,
                    handler: str) -> str:
    """Same on every delivery of one message to one handler entry, different for every other.
    `entry` identifies the entry within its rule (its `HandlerEntry.identity`, which survives a
    reload: keyrouter.entry_keys).  Hashed: message ids are the provider's, and a key may travel
    to third parties (webhooks)."""
    raw = "\x1f".join((namespace, message_id, rule, str(entry), handler))
    # surrogatepass: an id with a lone surrogate (half an emoji) still gets a key; others unchanged
    return "kr-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:40]


@dataclass(slots=True)
class Context:
    params: Mapping[str, Any]
    idempotency_key: str
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    rule: str  # the rule's name, "default" when no rule matched
    attempt: int = 1  # 1 on the first delivery
    #: For built-ins and plugins that talk to the provider or keep state; None when unavailable
    #: (no credentials, or `replay --dry-run`).
    client: IletiMerkezi | None = field(default=None, repr=False)
    store: Store | None = field(default=None, repr=False)
    settings: Settings | None = field(default=None, repr=False)
    #: Operator hooks (metrics): built-ins report what an operator counts, e.g. opt-out delays.
    events: Events = field(default=NO_EVENTS, repr=False)
    #: True while this worker still holds the message's claim (its lease, renewed by the call);
    #: None outside a dispatcher.  Checked before each state-changing provider call
    #: (keyrouter.fencing, docs/opt-out-duty.md).
    holds_claim: Callable[[], Awaitable[bool]] | None = field(default=None, repr=False)
