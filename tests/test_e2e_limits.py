"""End to end (real worker processes, real Redis, the fake provider): the shutdown grace period
and the stop for a restart past the bound of abandoned threads."""

from __future__ import annotations

import time

import pytest
from test_e2e_worker import (  # noqa: F401 - fake, h, redis_*: fixtures
    Harness,
    fake,
    h,
    mobile,
    redis_client,
    redis_namespace,
    unfinished,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_sigterm_exits_0_within_the_grace_period_and_the_cut_entry_repeats_with_its_key(h: Harness) -> None:  # noqa: F811
    h.rules("- recording:to_file: {tag: a, sleep: 60}")  # a plain def handler that will not return
    message = h.fake.add_message("uzun", sender=mobile(1))["id"]
    worker = h.run_worker(KEYROUTER_SHUTDOWN_GRACE="1", KEYROUTER_LEASE="3")
    wait_until(lambda: any(x.kind == "start" for x in h.lines()), 15, "the handler start", (worker,))
    sent = time.monotonic()
    assert worker.terminate(timeout=10) == 0, worker.stderr()
    took = time.monotonic() - sent
    assert 0.9 <= took < 6, f"stop took {took:.1f}s with a 1 s grace period"
    assert "grace period" in worker.stderr() and "Traceback" not in worker.stderr()
    assert unfinished(h.namespace, [message]) == [message]  # left to lease expiry, not released

    time.sleep(3.2)  # the lease runs out
    again = h.cli("run", "--once", KEYROUTER_TEST_SLEEP="0")  # the same entry, now quick
    assert again.returncode == 0, again.stderr
    starts = [x for x in h.lines() if x.kind == "start"]
    assert [x.id for x in starts] == [message, message]
    assert starts[0].key == starts[1].key and starts[0].pid != starts[1].pid
    assert unfinished(h.namespace, [message]) == []


def test_too_many_stuck_threads_stop_the_worker_for_a_restart(h: Harness) -> None:  # noqa: F811
    h.rules("- recording:to_file: {tag: a, sleep: 60}")
    h.fake.add_message("uzun", sender=mobile(1))
    worker = h.run_worker(KEYROUTER_HANDLER_TIMEOUT="0.5", KEYROUTER_MAX_ABANDONED="0",
                          KEYROUTER_SHUTDOWN_GRACE="1")
    assert worker.proc.wait(20) == 5, worker.stderr()
    err = worker.stderr()
    assert "KEYROUTER_MAX_ABANDONED" in err and "Traceback" not in err
