"""The event loop of the worker and of `replay`: uvloop when the `fast` extra installed it
(`pip install 'keyrouter[fast]'`), else asyncio's own.  Nothing else changes with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor when it is installed, else None (asyncio's default loop)."""
    try:
        import uvloop  # noqa: PLC0415  (an optional extra: keyrouter[fast])
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the fastest loop installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
