"""Constants and small builders the handler tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import httpx

from keyrouter.rules.router import Match

KEY = "kEy-5ecret-4411"
HASH = "hAsh-5ecret-9922"
NUMBER = "+905354104818"  # the sender, E.164
WIRE = "905354104818"  # as the provider's requests carry it
IDEMPOTENCY_KEY = "kr-0123456789abcdef0123456789abcdef01234567"
FAST = httpx.Timeout(2.0, read=1.0)


def match(rule: str = "optout", keyword: str | None = "RET", **captures: str) -> Match:
    return Match(rule=rule, keyword=keyword, captures=dict(captures))
