"""What identifies a handler entry across hot reloads: its progress key and idempotency key.

A key is built from the rule's name, the handler's name, a digest of its params and an occurrence
counter among the rule's identical entries (same handler, same params), never from the entry's
position.  So the keys of an entry whose handler and params are unchanged survive a reload even
when other entries of its rule are added, removed or moved, and a finished entry is not run again
after a reload and a crash (docs/opt-out-duty.md, "Keys across reloads").

Progress written by earlier versions used the position (`rule#index:handler`): such a key is still
accepted for the entry now at that position with that handler, so an upgrade alone never runs a
finished entry again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from keyrouter.rules.model import HandlerEntry

__all__ = ["LEGAL_HANDLERS", "entry_key", "identity_of", "legacy_entry_key", "with_identities"]

#: Handlers whose effect the law asks for: retried until their deadline, never optional.
LEGAL_HANDLERS = frozenset({"blacklist", "unblacklist", "iys"})


def _params_digest(params: Any) -> str:
    text = json.dumps(params, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def identity_of(name: str, params: Any, occurrence: int) -> str:
    """`handler/digest/n`: the n-th (from 0) entry of its rule with this handler and params."""
    return f"{name}/{_params_digest(params)}/{occurrence}"


def with_identities(entries: Sequence[HandlerEntry]) -> tuple[HandlerEntry, ...]:
    """The entries of one rule, each with its `identity` filled in."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for entry in entries:
        digest = _params_digest(entry.params)
        n = seen.get((entry.name, digest), 0)
        seen[(entry.name, digest)] = n + 1
        out.append(replace(entry, identity=f"{entry.name}/{digest}/{n}"))
    return tuple(out)


def entry_key(rule: str, index: int, entry: HandlerEntry) -> str:
    """Progress key of a handler entry: which entries of a message already succeeded.  `index`
    is used only for an entry built without rules.py (no identity yet)."""
    identity = entry.identity or identity_of(entry.name, entry.params, index)
    return f"{rule}|{identity}"


def legacy_entry_key(rule: str, index: int, entry: HandlerEntry) -> str:
    """The position-based key earlier versions wrote; still read as "succeeded"."""
    return f"{rule}#{index}:{entry.name}"
