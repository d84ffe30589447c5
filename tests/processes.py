"""Waiting on what test processes (workers, the dashboard, `keyrouter run`) do: one `wait_until`
for the end-to-end and the operations tests, and `wait_started` for a worker's start."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import pytest


class Watched(Protocol):
    """A process a test started: ops_support.Proc, test_e2e_worker.Worker."""

    proc: subprocess.Popen[bytes]

    def stderr(self) -> str: ...


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               alive: Iterable[Watched] = (), step: float = 0.05) -> Any:
    """Poll `predicate` until truthy and return its value; fail after `timeout` s (with the end of
    each watched process's stderr), or at once if a process in `alive` exited (with its stderr)."""
    alive = list(alive)
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        for p in alive:
            if p.proc.poll() is not None:
                pytest.fail(f"{what}: process {p.proc.pid} exited {p.proc.returncode}\n{p.stderr()}")
        if time.monotonic() > deadline:
            logs = "\n".join(p.stderr()[-3000:] for p in alive)
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{logs}")
        time.sleep(step)


def wait_started(*workers: Watched, timeout: float = 30) -> None:
    """Wait until each `keyrouter run` process logged its start. Until then it has not installed
    its SIGTERM handler, so a test that stops it sooner sees it killed by the signal (-15) instead
    of stopping cleanly; and a burst said before it starts may all go to the other workers."""
    for w in workers:
        def started(w: Watched = w) -> bool:
            return " started (namespace" in w.stderr()

        wait_until(started, timeout, f"the start of worker {w.proc.pid}", (w,))
