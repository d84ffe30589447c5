"""`keyrouter run` and `replay` run on uvloop when the `fast` extra is installed (the test extra
installs it), else on asyncio's own loop, with the same results."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from keyrouter.worker import eventloop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_is_the_loop_when_installed() -> None:
    assert eventloop.loop_factory() is uvloop.new_event_loop
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_asyncio_is_the_loop_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert eventloop.loop_factory() is None
    assert eventloop.run(_loop_module()) == "asyncio.unix_events"
