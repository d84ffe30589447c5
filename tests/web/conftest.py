"""Shared set-up for the dashboard tests: rules with two surveys, a store seeded with votes, a
ledger, dead letters (one holding a stored-XSS attempt), and an app factory."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from keyrouter.store import OptOut, Store
from keyrouter.store.memory import MemoryStore
from keyrouter.web.pages import RulesInfo

TOKEN = "s3cret-dashboard-token"
XSS = "<script>document.title='pwned'</script>"
IMG_XSS = "<img src=x onerror=\"document.title='pwned'\">"
NUMBER = "+905321234567"
RULES = """
version: 1
rules:
  - name: survey
    pattern: '(?:survey|anket) (?P<choice>[a-z]+)'
    handlers:
      - survey: {id: spring-2026, choices: [a, b, c]}
  - name: nps
    pattern: 'nps (?P<choice>\\d+)'
    handlers:
      - survey: {id: nps}
  - name: optout
    keywords: [RET]
    handlers: [blacklist]
"""
T0 = 1_790_000_000.0  # 2026-09-21 (a Monday) 17:13:20 +03:00


def write_rules(folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(textwrap.dedent(RULES).lstrip(), encoding="utf-8")
    return path


async def seed(store: Store, *, optouts: int = 120, dead: int = 60) -> None:
    for voter, choice in (("v1", "a"), ("v2", "a"), ("v3", "b"), ("v4", "a")):
        await store.vote("spring-2026", voter, choice, policy="last", now=T0 + 60)
    await store.vote("spring-2026", "v5", "zzz", policy="last", now=T0 + 61, valid=False)
    await store.vote("nps", "v1", "9", policy="last", now=T0 + 5)
    await store.vote("nps", "v2", IMG_XSS, policy="last", now=T0 + 6)  # a survey without choices
    for i in range(optouts):
        action = "unblacklist" if i % 10 == 0 else "blacklist"
        number = NUMBER if i == optouts - 1 else f"+90532{i:07d}"
        handled = T0 + i * 3600.0 + (30 if i != 1 else 10 * 86400)  # m0001 handled late
        await store.record_optout(OptOut(number, action, f"m{i:04d}", "RET", T0 + i * 3600.0, handled))
    # effects started but not in the ledger yet: one long overdue, one just received
    await store.mark_optout_pending(OptOut(NUMBER, "blacklist", "p-old", "RET", T0 - 86400.0, 0.0))
    await store.mark_optout_pending(OptOut(NUMBER, "iys_ret", "p-new", "RET", time.time() - 60, 0.0))
    for i in range(dead):
        row = {"id": f"d{i:03d}", "sender": NUMBER, "text": XSS if i == dead - 1 else f"text {i}"}
        error = XSS if i == dead - 1 else f"handler failed {i} for {NUMBER}"
        await store.dead_letter(f"d{i:03d}", "w", error, rule="survey", row=row, now=T0 + i)


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    return write_rules(tmp_path)


@pytest.fixture
def seeded() -> MemoryStore:
    store = MemoryStore(f"web-{id(object())}")
    asyncio.run(seed(store))
    return store


@pytest.fixture
def make_app(rules_path: Path, seeded: MemoryStore) -> Callable[..., object]:
    from keyrouter.web.app import create_app

    def make(token: str | None = None, store: Store | None = None,
             opener: Callable[[], Store] | None = None, **kw: object) -> object:
        info = RulesInfo.load(str(rules_path), T0)
        return create_app(opener or (lambda: store or seeded), info, token=token, **kw)

    return make
