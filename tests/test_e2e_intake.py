"""End to end, real worker processes, real Redis and the fake provider (helpers and fixtures of
tests/test_e2e_worker.py): one fetcher per namespace, scale-out across processes, and a worker that
exits only when a person must act."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import test_e2e_worker as e2e
from redis_server import RedisServer, free_port
from test_e2e_worker import (
    Harness,
    mobile,
    wait_until,
)

pytestmark = pytest.mark.slow
fake, h, redis_client, redis_namespace = e2e.fake, e2e.h, e2e.redis_client, e2e.redis_namespace


# ----------------------------------------------------------------------------- exits


def test_a_200_carrying_code_400_keeps_the_worker_running(h: Harness) -> None:
    h.rules("- recording:to_file: {tag: a}")
    refusal = {"response": {"status": {"code": 400, "message": "İstek çözümlenemedi"}}}
    h.fake.reply_next("get-inbox", refusal, times=2)
    first = h.fake.add_message("merhaba", sender=mobile(1))["id"]
    worker = h.run_worker()
    wait_until(lambda: h.ended([first], ("a",)), 30, "the message after two refusals", (worker,))
    assert worker.terminate() == 0, worker.stderr()
    err = worker.stderr()
    assert err.count("get-inbox refused") == 2, err
    assert "next try in" in err and "Traceback" not in err


def test_once_with_the_provider_down_exits_4_without_promising_a_next_try(h: Harness) -> None:
    h.rules("- recording:to_file: {tag: a}")
    done = h.cli("run", "--once", ILETIMERKEZI_BASE_URL=f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 4, done.stderr
    assert "get-inbox failed" in done.stderr
    assert "next try" not in done.stderr and "Traceback" not in done.stderr


def test_a_base_url_that_is_not_the_api_stops_a_running_worker_with_2(h: Harness) -> None:
    h.rules("- recording:to_file: {tag: a}")
    worker = h.run_worker(ILETIMERKEZI_BASE_URL=h.fake.base_url + "/nope")
    try:
        code = worker.proc.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail("a worker pointed at a wrong base URL kept running")
    assert code == 2, worker.stderr()
    assert "ILETIMERKEZI_BASE_URL" in worker.stderr() and "Traceback" not in worker.stderr()


def test_a_store_outage_is_ridden_out(h: Harness, tmp_path: Path) -> None:
    """Redis goes away under a running worker and comes back (empty) on the same port: the worker
    logs the failure, keeps running, and processes what arrives afterwards."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        h.rules("- recording:to_file: {tag: a}")
        first = h.fake.add_message("bir", sender=mobile(1))["id"]
        worker = h.run_worker(KEYROUTER_STORE=server.url + "?socket_timeout=1&socket_connect_timeout=1")
        wait_until(lambda: h.ended([first], ("a",)), 20, "the first message", (worker,))
        server.stop(signal.SIGKILL)
        wait_until(lambda: "the store failed" in worker.stderr(), 20, "a logged store failure", (worker,))
        server = RedisServer(tmp_path / "redis", port=server.port).start()
        second = h.fake.add_message("iki", sender=mobile(2))["id"]
        wait_until(lambda: h.ended([second], ("a",)), 60, "a message after the outage", (worker,))
        assert worker.terminate() == 0, worker.stderr()
        assert "Traceback" not in worker.stderr()
    finally:
        server.stop()


def test_once_with_the_store_unreachable_exits_4_with_one_line(h: Harness) -> None:
    h.rules("- recording:to_file: {tag: a}")
    h.fake.add_message("merhaba")
    done = h.cli("run", "--once", KEYROUTER_STORE=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 4, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and h.lines() == []
