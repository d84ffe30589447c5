"""The store's reconciliation state, on every backend (docs/reconciliation.md): one small JSON
document per namespace (the last run, the incremental watermark) and the synthetic rows of
opt-outs found only on the provider's blacklist, kept until their message is finished so the
next worker poll or reconcile can run their effects again.  Each call is one round trip; each
backend has its part (memory_parts.py, sqlite/parts.py, redis/parts.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def dump_state(state: Mapping[str, Any]) -> str:
    """The document as every backend stores it: ASCII JSON, keys sorted."""
    return json.dumps(dict(state), ensure_ascii=True, sort_keys=True)
