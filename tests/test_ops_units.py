"""Fast checks of the listener's address parsing, the health rules and the reload core."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ops_support import http_get

from keyrouter.ops.listener import Listener, parse_addr
from keyrouter.ops.metrics import READY_FAILURES, Metrics
from keyrouter.rules.model import RulesError
from keyrouter.worker.reload import Reloader, load_checked, rules_version


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("0.0.0.0", 9464)), ("9464", ("0.0.0.0", 9464)),
    ("[::1]:9000", ("::1", 9000)), ("metrics.local:80", ("metrics.local", 80)),
])
def test_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_addr(text) == want


@pytest.mark.parametrize("bad", ["", "host", "host:0", "host:70000", "a b:1", "http://x:1"])
def test_bad_addresses_name_the_setting(bad: str) -> None:
    with pytest.raises(ValueError, match="--metrics"):
        parse_addr(bad, "--metrics")


def test_health_and_readiness_rules() -> None:
    now = [100.0]
    m = Metrics(interval=10, clock=lambda: now[0], process_metrics=False)
    assert m.health() == (False, "the worker loop has not started")
    m.loop_ticked(0)
    now[0] = 130.0
    assert m.health() == (True, "ok")
    now[0] = 130.5
    ok, why = m.health()
    assert not ok and "30s ago" in why
    assert m.readiness() == (False, "rules not loaded")
    m.bind(rules=["a"], version="abc")
    assert m.readiness() == (False, "no poll has finished yet")
    m.poll_finished("ok", 3, 3)
    assert m.readiness() == (True, "ok")
    for _ in range(READY_FAILURES - 1):
        m.poll_finished("transient")
    assert m.readiness() == (True, "ok"), "a failure or two is normal backoff"
    m.poll_finished("transient")
    assert m.readiness()[0] is False
    m.poll_finished("ok", 1, 1)
    m.poll_finished("store")
    assert m.readiness()[1].startswith("store unreachable")
    m.poll_finished("ok", 1, 1)
    m.poll_finished("auth")
    assert m.readiness() == (False, "get-inbox refused the credentials")


def test_listener_serves_on_a_free_port_and_stops() -> None:
    m = Metrics(process_metrics=False)
    listener = Listener(m, "127.0.0.1", 0).start()
    try:
        host, port = listener.address
        status, body = http_get(f"http://{host}:{port}/metrics")
        assert status == 200 and "keyrouter_polls_total" in body
        assert http_get(f"http://{host}:{port}/healthz")[0] == 503
    finally:
        listener.stop()
    assert http_get(f"http://{host}:{port}/metrics")[0] == 0


class _Dispatcher:
    def __init__(self) -> None:
        self.routers: list[object] = []

    def use_router(self, router: object) -> None:
        self.routers.append(router)


def test_reloader_swaps_only_checked_rules(write_rules, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_rules("""
        version: 1
        rules:
          - name: a
            keywords: [A]
            handlers: [log]
            examples: {match: [a]}
    """)
    version = rules_version(path)
    assert len(version) == 12 and rules_version(path) == version
    router, checked = load_checked(path)
    assert checked == version and router.rules.rules[0].name == "a"
    dispatcher, seen = _Dispatcher(), []

    class Events(Metrics):
        def rules_reloaded(self, result: str, version: str | None = None) -> None:
            seen.append((result, version))

    reloader = Reloader(path, dispatcher, Events(process_metrics=False))
    path.write_text(path.read_text().replace("match: [a]", "match: [b]"))
    with pytest.raises(RulesError):
        load_checked(path)
    assert asyncio.run(reloader.reload()) is False
    assert dispatcher.routers == [] and seen == [("rejected", version)]
    path.write_text(path.read_text().replace("match: [b]", "match: [a]").replace("[A]", "[A, B]"))
    assert asyncio.run(reloader.reload()) is True
    assert len(dispatcher.routers) == 1 and seen[-1][0] == "ok" and seen[-1][1] != version


def test_a_worker_that_does_not_fetch_is_ready_once_the_store_answers() -> None:
    class Follower:
        is_fetch_leader = False

    m = Metrics(process_metrics=False)
    m.bind(worker=lambda: Follower(), rules=["a"], version="abc")
    assert m.readiness() == (False, "store not read yet")
    m.dead_letters = 0  # what a successful store read leaves
    assert m.readiness() == (True, "ok")
    m.store_error = "ConnectionError"
    assert m.readiness() == (False, "store unreachable: ConnectionError")
