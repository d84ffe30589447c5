"""Shared parts of the opt-out duty tests (tests/test_duty_*.py): one store URL per backend
(memory, SQLite, real Redis db 12 with a namespace of the test's own, deleted afterwards), the
shipped rules with their İYS lines enabled, and a provider row from a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from redis_dbs import STORE_URL

from keyrouter.message import TURKEY
from keyrouter.store.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = STORE_URL
BACKENDS = ["memory", "sqlite", "redis"]
NUMBER = "+905354104818"


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    namespace: str


@pytest.fixture(name="backend", params=BACKENDS)
async def backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    namespace = f"duty-{uuid4().hex[:12]}"
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/duty.sqlite3",
           "redis": REDIS_URL}[request.param]
    yield Backend(request.param, url, namespace)
    if request.param == "redis":
        client = aioredis.from_url(REDIS_URL)
        async for key in client.scan_iter(match=Keys(namespace).pattern, count=1000):
            await client.delete(key)
        await client.aclose()


def shipped_rules_with_iys(tmp_path: Path) -> Path:
    """rules/main.yaml with its commented `iys` lines on."""
    text = (ROOT / "rules" / "main.yaml").read_text(encoding="utf-8")
    assert "      # - iys\n" in text and "# - iys: {status: ONAY}" in text
    text = text.replace("      # - iys\n", "      - iys\n")
    text = text.replace("# - iys: {status: ONAY}", "- iys: {status: ONAY}")
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def row(id: str, text: str, received: float, sender: str = NUMBER) -> dict[str, Any]:
    when = datetime.fromtimestamp(received, TURKEY)
    return {"id": id, "text": text, "sender": sender, "number": "+908505550000",
            "date": when.strftime("%Y-%m-%d %H:%M:%S")}
