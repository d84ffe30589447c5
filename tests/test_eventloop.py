"""`keyrouter run` and `replay` run on uvloop when the `fast` extra is installed, else on
asyncio's own loop, with the same results."""

from __future__ import annotations

import asyncio
import importlib.util

from keyrouter.worker import eventloop


def test_the_loop_is_uvloop_exactly_when_it_is_installed() -> None:
    factory = eventloop.loop_factory()
    if importlib.util.find_spec("uvloop") is None:
        assert factory is None
    else:
        import uvloop

        assert factory is uvloop.new_event_loop


def test_run_returns_the_coroutine_result_on_that_loop() -> None:
    async def main() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    module = eventloop.run(main())
    assert module.startswith("uvloop") == (eventloop.loop_factory() is not None)
