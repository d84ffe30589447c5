"""`keyrouter run` and `replay` run on uvloop when the `fast` extra is installed (the test extra
installs it), else on asyncio's own loop with timer waits to the microsecond, with the same
results."""

from __future__ import annotations

import asyncio
import os
import select
import selectors
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import uvloop
from redis_dbs import STORE_URL, delete_namespace

from keyrouter.cli.main import main
from keyrouter.worker import eventloop
from keyrouter.worker.eventloop import MicrosecondEpoll

REPO = Path(__file__).resolve().parent.parent


async def _loop_kind() -> tuple[str, str]:
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    return type(loop).__module__, type(getattr(loop, "_selector", None)).__name__


def test_uvloop_is_the_loop_when_installed() -> None:
    assert eventloop.loop_factory() is uvloop.new_event_loop
    assert eventloop.run(_loop_kind())[0].startswith("uvloop")


def test_asyncio_with_microsecond_waits_is_the_loop_without_uvloop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert eventloop.loop_factory() is eventloop.microsecond_loop
    assert eventloop.run(_loop_kind()) == ("asyncio.unix_events", "MicrosecondEpoll")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def _waits(selector: selectors.BaseSelector, seconds: float, n: int = 21) -> float:
    """The median time `selector.select(seconds)` took with nothing ready."""
    took = []
    for _ in range(n):
        start = time.perf_counter()
        assert selector.select(seconds) == []
        took.append(time.perf_counter() - start)
    return statistics.median(took)


def test_a_wait_of_a_fifth_of_a_millisecond_is_not_rounded_up_to_one(
        pipe: tuple[int, int]) -> None:
    """asyncio's own epoll selector never wakes before a whole millisecond; this one does."""
    with MicrosecondEpoll() as precise, selectors.EpollSelector() as rounded:
        for s in (precise, rounded):
            s.register(pipe[0], selectors.EVENT_READ)
        assert _waits(rounded, 0.0002) >= 0.001
        assert 0.0002 <= _waits(precise, 0.0002) < 0.0009


def test_the_wait_is_select_with_the_exact_timeout_then_epoll_without_waiting(
        pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []
    real = select.select

    def recording(r: Any, w: Any, x: Any, timeout: float) -> Any:
        asked.append((r, timeout))
        return real(r, w, x, timeout)

    monkeypatch.setattr(select, "select", recording)
    with MicrosecondEpoll() as selector:
        selector.register(pipe[0], selectors.EVENT_READ)
        assert selector.select(0.0123) == []
        assert asked == [([selector.fileno()], 0.0123)]
        assert selector.select(0) == [] and selector.select(-1) == []  # no wait: no select()
        assert len(asked) == 1


def test_a_ready_descriptor_ends_a_long_wait_at_once(pipe: tuple[int, int]) -> None:
    with MicrosecondEpoll() as selector:
        key = selector.register(pipe[0], selectors.EVENT_READ)
        threading.Timer(0.05, os.write, (pipe[1], b"x")).start()
        start = time.perf_counter()
        assert selector.select(30.0) == [(key, selectors.EVENT_READ)]
        assert time.perf_counter() - start < 5.0
        assert selector.select(30.0) == [(key, selectors.EVENT_READ)]  # still ready: at once


def test_past_select_s_descriptor_limit_epoll_waits_by_itself(
        pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: Any) -> Any:
        raise ValueError("filedescriptor out of range in select()")

    monkeypatch.setattr(select, "select", refused)
    with MicrosecondEpoll() as selector:
        key = selector.register(pipe[0], selectors.EVENT_READ)
        start = time.perf_counter()
        assert selector.select(0.02) == []
        assert time.perf_counter() - start >= 0.02
        os.write(pipe[1], b"x")
        assert selector.select(30.0) == [(key, selectors.EVENT_READ)]


def test_the_loop_wakes_for_a_thread_s_callback_and_for_a_signal_while_a_timer_is_far() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        woken: list[str] = []
        far = loop.call_later(30.0, woken.append, "timer")
        from_thread: asyncio.Future[None] = loop.create_future()
        threading.Timer(0.05, loop.call_soon_threadsafe, (from_thread.set_result, None)).start()
        await asyncio.wait_for(from_thread, 10.0)
        woken.append("thread")
        signalled = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, signalled.set)
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        await asyncio.wait_for(signalled.wait(), 10.0)
        loop.remove_signal_handler(signal.SIGUSR1)
        woken.append("signal")
        far.cancel()
        return woken

    with asyncio.Runner(loop_factory=eventloop.microsecond_loop) as runner:
        assert runner.run(main()) == ["thread", "signal"]


def test_the_readme_replay_runs_on_the_microsecond_loop_against_redis(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`keyrouter replay` without uvloop: the same summary as the README's, over a real Redis."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    made: list[asyncio.AbstractEventLoop] = []
    microsecond_loop = eventloop.microsecond_loop

    def spied() -> asyncio.AbstractEventLoop:
        made.append(microsecond_loop())
        return made[-1]

    monkeypatch.setattr(eventloop, "microsecond_loop", spied)
    monkeypatch.chdir(tmp_path)
    namespace = f"eventloop-{uuid4().hex[:12]}"
    monkeypatch.setenv("KEYROUTER_NAMESPACE", namespace)
    try:
        code = main(["replay", str(REPO / "examples" / "inbox.json"), "--rules",
                     str(REPO / "rules"), "--store", STORE_URL, "--sandbox", "--shift-dates"])
        out = capsys.readouterr().out
        assert "27 messages: 26 done, 0 skipped, 1 in dead letters" in out
        assert code == 1
        assert len(made) == 1
    finally:
        assert delete_namespace(STORE_URL, namespace) == 0
