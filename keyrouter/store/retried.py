"""A dead letter retried by hand runs again from its stored row, whatever get-inbox holds.

`Store.retry_dead` publishes the dead letter's row among the rows workers share, in the same
atomic step that makes the id unfinished: every worker reads it and runs it like a freshly polled
row, even when the row has left the inbox (the provider's retention, a later page, older than
KEYROUTER_HORIZON).  Until it finishes it is shared, so `keyrouter optouts overdue` counts its
opt-out as pending (docs/opt-out-duty.md, "Retrying a dead letter").

The shared row carries RETRIED_KEY, so the worker never drops it as older than the horizon: the
horizon keeps old inbox rows from running twice, and a row retried by hand is meant to run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["RETRIED_KEY", "is_retried_row", "retried_row_json"]

#: The key added to a retried dead letter's shared row (never a provider field).
RETRIED_KEY = "keyrouter_retried"


def retried_row_json(row: Mapping[str, Any]) -> str:
    """The shared-row JSON of a retried dead letter (the format of Intake's published rows:
    ASCII, any value JSON cannot hold as its text)."""
    return json.dumps({**dict(row), RETRIED_KEY: True}, ensure_ascii=True, default=str)


def is_retried_row(row: Mapping[str, Any]) -> bool:
    return row.get(RETRIED_KEY) is True
