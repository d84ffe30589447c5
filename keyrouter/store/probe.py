"""`Store.health()` on every backend: one timed read that never raises."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from keyrouter.store.values import Health


async def probe(read: Callable[[], Awaitable[object]], timeout: float,
                cluster_errors: tuple[type[BaseException], ...] = ()) -> Health:
    """Run `read` within `timeout` seconds.  An exception of `cluster_errors` (Redis's MOVED and
    ASK) means a single-server client reached a node of a cluster."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(read(), timeout)
    except cluster_errors as exc:
        return Health(False, error=type(exc).__name__, cluster_node=True)
    except Exception as exc:  # a health check reports, it never raises
        return Health(False, error=type(exc).__name__)
    return Health(True, (time.perf_counter() - started) * 1000)
