"""Where an opt-out came from (its channel), and opt-outs found only on the provider's blacklist as
messages the dispatcher runs (docs/reconciliation.md).

A reconcile turns each such number into a synthetic row (`provider_row`): id
`provider:<hash of the number>:<anchor>` (the anchor is the message id of the number's latest
ledger entry, or `-`), date the moment the opt-out is dated by, sender the number,
`channel: provider`, and the effects to run.  The store keeps the row until its message is
finished; the dispatcher runs it like any inbox message (claims, idempotency keys, retries until
the deadline, dead letters), with the fixed route `provider_route` instead of the rules:
`blacklist` (already true at the provider: the call is idempotent and it writes the ledger line)
and, when the rules register opt-outs in İYS, `iys` with status RET and the configured source.

Both entries first look at the number's latest ledger entry and pending marks: when another
message (an inbox RET processed meanwhile, on any worker) already recorded an opt-out or has one
under way, they record nothing, so one opt-out makes one ledger entry and one İYS record.  An
inbox RET that runs after a provider opt-out was recorded changes nothing either: the provider
opt-out is dated later, and the latest request wins (keyrouter.handlers.blacklist).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from keyrouter.message import Message
from keyrouter.rules.model import HandlerEntry, Location, Rule
from keyrouter.rules.normalize import Normalizer
from keyrouter.rules.router import Route

__all__ = ["BUILTIN_OF", "CHANNELS", "ID_PREFIX", "OPT_INS", "OPT_OUTS", "RULE", "channel_of",
           "is_provider_row", "provider_id", "provider_route", "provider_row"]

#: Where an opt-out came from: a message in get-inbox (or a replayed file), the provider's
#: blacklist alone (a link click, the panel), or the dashboard (message ids `dashboard:`).
CHANNELS = ("inbox", "provider", "dashboard")
ID_PREFIX = "provider:"
#: The rule name of synthetic rows: dead letters, progress keys and tallies carry it.
RULE = "provider-optout"
OPT_OUTS = frozenset({"blacklist", "iys_ret"})
OPT_INS = frozenset({"unblacklist", "iys_onay"})
_HERE = "keyrouter.handlers.provider_optout"
#: The built-in each entry of `provider_route` stands for (keyrouter.compliance counts them).
BUILTIN_OF = {f"{_HERE}:blacklist": "blacklist", f"{_HERE}:iys": "iys"}


def channel_of(message_id: str) -> str:
    """The channel of a ledger entry, pending mark or dead letter, from its message id."""
    if message_id.startswith(ID_PREFIX):
        return "provider"
    if message_id.startswith("dashboard:"):
        return "dashboard"
    return "inbox"


def provider_id(number: str, anchor: str | None) -> str:
    """The synthetic message id of `number`'s opt-out after ledger entry `anchor`: the number
    appears only as 16 hex digits of its SHA-256, so ids shown in outputs and pages (unmasked,
    like every message id) do not show it."""
    digest = hashlib.sha256(number.encode()).hexdigest()[:16]
    return f"{ID_PREFIX}{digest}:{anchor or '-'}"


def provider_row(number: str, anchor: str | None, date: str,
                 iys: Mapping[str, str] | None) -> tuple[str, str]:
    """(id, row JSON) of the synthetic message for `number` (E.164) after ledger entry `anchor`;
    `date` in Turkey time (`YYYY-MM-DD HH:MM:SS`); `iys`: the İYS params, None without İYS."""
    msg_id = provider_id(number, anchor)
    row: dict[str, Any] = {"id": msg_id, "date": date, "sender": number, "number": "", "text": "",
                           "channel": "provider"}
    if iys is not None:
        row["iys"] = dict(iys)
    return msg_id, json.dumps(row, ensure_ascii=True, sort_keys=True)


def is_provider_row(message: Message) -> bool:
    return message.row.get("channel") == "provider" and message.id.startswith(ID_PREFIX)


def provider_route(message: Message) -> Route:
    """The fixed handler entries of a synthetic row: blacklist, then İYS when the row asks."""
    params = message.row.get("iys")
    if not isinstance(params, dict):
        return _route(None)
    return _route(tuple(sorted((str(k), str(v)) for k, v in params.items())))


@cache
def _route(iys: tuple[tuple[str, str], ...] | None) -> Route:
    entries = [HandlerEntry(f"{_HERE}:blacklist")]
    if iys is not None:
        entries.append(HandlerEntry(f"{_HERE}:iys", {"status": "RET", **dict(iys)}))
    handlers = tuple(entries)
    rule = Rule(name=RULE, index=-1, handlers=handlers, normalizer=Normalizer(),
                where=Location("keyrouter/compliance/channels.py", 1))
    return Route("", None, rule, handlers)
