"""The real pipeline in a test (keyrouter.testing re-exports these): the runtime a worker builds,
pointed at a fake provider, and one poll's worth of rows through it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyrouter.testing import FakeIletiMerkezi


@contextlib.asynccontextmanager
async def pipeline(rules: str | Any, *, fake: FakeIletiMerkezi | None = None,
                   store: str = "memory://", **settings: Any) -> Any:
    """The real runtime (router, store, client, dispatcher) for a test, pointed at `fake` when
    given.  Defaults suit tests: a memory store, namespace "test", sender "TEST", fast retries.

        async with pipeline("rules/", fake=fake) as runtime:
            report = await process(runtime, [fake.add_message("RET")])
    """
    from keyrouter.runtime import open_runtime
    from keyrouter.settings import Settings

    values: dict[str, Any] = {"rules": str(rules), "store": store, "namespace": "test",
                              "sender": "TEST", "retry_base": 0.01, **settings}
    if fake is not None:
        values.update(base_url=fake.base_url, api_key=fake.key, api_hash=fake.hash)
    async with open_runtime(Settings.model_validate(values)) as runtime:
        yield runtime


async def process(runtime: Any, rows: Iterable[dict[str, Any]]) -> Any:
    """Provider rows through the pipeline once (one poll's worth); returns the dispatch Report."""
    from keyrouter.sources import parse_rows

    return await runtime.dispatcher.process(list(parse_rows(rows)))
