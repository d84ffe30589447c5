"""Helpers for testing your own rules and handlers against real local stand-ins.

`FakeIletiMerkezi` and `FakeIys` are HTTP servers on 127.0.0.1 (keyrouter.sandbox), not mocks;
`pipeline` opens the runtime a worker builds, pointed at a fake, and `process` runs one poll's
worth of rows through it:

    with FakeIletiMerkezi() as fake:
        async with pipeline("rules/", fake=fake) as runtime:
            report = await process(runtime, [fake.add_message("RET")])
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from keyrouter.dispatch import Report
from keyrouter.sandbox.iys import FakeIys
from keyrouter.sandbox.provider import (
    ENDPOINTS,
    FakeIletiMerkezi,
    RecordedRequest,
    SentSms,
    inbox_response,
)
from keyrouter.settings import Settings
from keyrouter.worker.runtime import Runtime, open_runtime
from keyrouter.worker.sources import parse_rows

__all__ = [
    "ENDPOINTS",
    "FakeIletiMerkezi",
    "FakeIys",
    "RecordedRequest",
    "SentSms",
    "inbox_response",
    "pipeline",
    "process",
]


@contextlib.asynccontextmanager
async def pipeline(rules: str | Any, *, fake: FakeIletiMerkezi | None = None,
                   store: str = "memory://", **settings: Any) -> AsyncIterator[Runtime]:
    """The real runtime (router, store, client, dispatcher) for a test, pointed at `fake` when
    given.  Defaults suit tests: a memory store, namespace "test", sender "TEST", fast retries."""
    values: dict[str, Any] = {"rules": str(rules), "store": store, "namespace": "test",
                              "sender": "TEST", "retry_base": 0.01, **settings}
    if fake is not None:
        values.update(base_url=fake.base_url, api_key=fake.key, api_hash=fake.hash)
    async with open_runtime(Settings.model_validate(values)) as runtime:
        yield runtime


async def process(runtime: Runtime, rows: Iterable[dict[str, Any]]) -> Report:
    """Provider rows through the pipeline once (one poll's worth); returns the dispatch Report."""
    return await runtime.dispatcher.process(list(parse_rows(rows)))
