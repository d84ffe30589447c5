"""Metrics and health over real HTTP, from real `keyrouter run` processes against the fake provider.

Stores: a private redis-server this module starts (and stops, by pid), or SQLite in a tmp folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from ops_support import Ops, http_get, ops_in, scrape, value
from processes import wait_until
from redis_server import RedisServer, free_port

from keyrouter.message import TURKEY

pytestmark = pytest.mark.slow

RULES = """\
version: 1
rules:
  - name: hello
    keywords: [MERHABA]
    handlers: [ops_handlers:ok]
  - name: broken
    keywords: [BOZUK]
    handlers: [ops_handlers:fail_permanent]
  - name: flaky
    keywords: [TEKRAR]
    handlers: [ops_handlers:fail_once]
  - name: slow
    keywords: [YAVAS]
    handlers:
      - ops_handlers:wait_for_file: {path: '%(release)s'}
  - name: stop
    keywords: [RET]
    handlers: [blacklist]
  - name: stuck
    keywords: [DONDUR]
    handlers:
      - ops_handlers:block_loop: {seconds: 6}
default:
  handlers: [ops_handlers:ok]
"""


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    with ops_in(tmp_path, RULES % {"release": tmp_path / "release"}, key="ops-key-Tq71x",
                hash="ops-hash-Lm28v") as o:
        yield o


def mobile(n: int) -> str:
    return f"+905{30 + n:02d}7318264"


def test_counters_move_by_the_right_amounts_and_labels_stay_bounded(ops: Ops) -> None:
    ago = datetime.now(TURKEY) - timedelta(minutes=5)
    ids = [ops.fake.add_message(text, sender=mobile(n), date=ago)["id"]
           for n, text in enumerate(["MERHABA", "merhaba!", "MERHABA", "BOZUK", "TEKRAR", "selam", "RET"])]
    ops.fake.total_rows = 10  # the provider says 10, returns 7: the gap must show
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = ops.start("run", "--interval", "0.3", "--metrics", f"127.0.0.1:{port}")

    def settled() -> dict | None:
        status, _ = http_get(base + "/healthz")
        if status != 200:
            return None
        s = scrape(base)
        done = value(s, "keyrouter_messages_total", rule="flaky", outcome="done")
        return s if done == 1 and value(s, "keyrouter_dead_letters") == 1 else None

    s = wait_until(settled, 30, "every message settled", (worker,))
    m = "keyrouter_messages_total"
    assert value(s, m, rule="hello", outcome="done") == 3
    assert value(s, m, rule="default", outcome="done") == 1
    assert value(s, m, rule="broken", outcome="dead") == 1
    assert value(s, m, rule="broken", outcome="done") == 0  # pre-created series for alerts
    assert value(s, m, rule="flaky", outcome="retrying") == 1
    assert value(s, m, rule="flaky", outcome="done") == 1
    assert value(s, m, rule="slow", outcome="done") == 0
    assert value(s, "keyrouter_handler_failures_total", handler="ops_handlers:fail_permanent") == 1
    assert value(s, "keyrouter_handler_failures_total", handler="ops_handlers:fail_once") == 1
    assert value(s, "keyrouter_handler_duration_seconds_count", handler="ops_handlers:ok") == 4
    assert value(s, "keyrouter_handler_duration_seconds_count", handler="ops_handlers:fail_once") == 2
    assert value(s, "keyrouter_polls_total", result="ok") >= 1
    assert value(s, "keyrouter_polls_total", result="auth") == 0
    assert value(s, "keyrouter_inbox_rows") == 7
    assert value(s, "keyrouter_inbox_total_rows") == 10
    assert value(s, "keyrouter_dead_letters") == 1
    assert value(s, "keyrouter_fetch_leader") == 1
    assert value(s, "keyrouter_inflight") == 0
    assert value(s, "keyrouter_lease_takeovers_total") == 0
    assert value(s, m, rule="stop", outcome="done") == 1 and mobile(6) in ops.fake.blacklist
    assert value(s, "keyrouter_optout_delay_seconds_count") == 1
    assert 290 <= value(s, "keyrouter_optout_delay_seconds_sum") <= 3600  # received 5 minutes ago
    assert value(s, "keyrouter_optout_delay_seconds_bucket", le="60.0") == 0
    assert value(s, "keyrouter_rules_reloads_total", result="rejected") == 0
    versions = [dict(labels)["version"] for (name, labels) in s if name == "keyrouter_rules_info"]
    assert len(versions) == 1 and re.fullmatch(r"[0-9a-f]{12}", versions[0])
    assert value(s, "keyrouter_inbox_lag_seconds") == 0  # nothing unfinished

    # labels only from bounded sets: no id, no number, no text
    allowed = {"hello", "broken", "flaky", "slow", "stop", "stuck", "blacklist", "iys_ret", "default", "done",
               "skipped", "retrying", "dead", "ok", "auth", "transient", "store", "rejected", "high",
               "normal", "missing_at_provider", "optin_not_held", "agree", "reported", "failed",
               "ops_handlers:ok", "ops_handlers:fail_permanent", "ops_handlers:fail_once",
               versions[0]}
    for (name, labels) in s:
        for key, label in labels:
            if key != "le":
                assert label in allowed, f"{name} has label {key}={label!r}"
    text = http_get(base + "/metrics")[1]
    for n in range(7):
        assert mobile(n)[3:] not in text

    # more messages: the counters move by exactly that much
    polls = value(s, "keyrouter_polls_total", result="ok")
    for n in range(2):
        ops.fake.add_message("MERHABA", sender=mobile(10 + n))
    s = wait_until(lambda: (x := scrape(base)) and value(x, m, rule="hello", outcome="done") == 5 and x,
                   20, "two more hello messages", (worker,))
    assert value(s, m, rule="default", outcome="done") == 1
    assert value(s, "keyrouter_polls_total", result="ok") > polls
    assert value(s, "keyrouter_inbox_rows") == 9

    # a slow handler: in flight, and the inbox lag is its age
    ops.fake.add_message("YAVAS", sender=mobile(20), date=datetime.now(TURKEY) - timedelta(minutes=3))
    s = wait_until(lambda: (x := scrape(base)) and value(x, "keyrouter_inflight") == 1 and x,
                   20, "the slow handler in flight", (worker,))
    assert 170 <= value(s, "keyrouter_inbox_lag_seconds") <= 3600
    (ops.tmp / "release").touch()
    s = wait_until(lambda: (x := scrape(base)) and value(x, m, rule="slow", outcome="done") == 1 and x,
                   20, "the slow message done", (worker,))
    assert value(s, "keyrouter_inflight") == 0
    assert http_get(base + "/readyz") == (200, "ok\n")
    assert worker.stop() == 0, worker.stderr()
    assert "Traceback" not in worker.stderr()
    assert len(ids) == 7


def test_healthz_turns_503_while_the_loop_is_stuck(ops: Ops) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = ops.start("run", "--interval", "0.5", "--metrics", f"127.0.0.1:{port}")
    wait_until(lambda: http_get(base + "/healthz")[0] == 200, 20, "healthy", (worker,))
    wait_until(lambda: http_get(base + "/readyz")[0] == 200, 20, "ready", (worker,))
    ops.fake.add_message("DONDUR")  # an async handler that blocks the event loop for 6 s
    _status, body = wait_until(lambda: (r := http_get(base + "/healthz"))[0] == 503 and r, 10,
                              "/healthz 503 while the loop is blocked", (worker,))
    assert "last ticked" in body and body[-1] == "\n" and body.count("\n") == 1
    wait_until(lambda: http_get(base + "/healthz")[0] == 200, 20, "healthy again", (worker,))
    assert http_get(base + "/nope")[0] == 404
    assert worker.stop() == 0, worker.stderr()


def test_readyz_turns_503_when_redis_stops_and_back_when_it_returns(ops: Ops, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        worker = ops.start("run", "--interval", "0.5", KEYROUTER_STORE=redis.url,
                           KEYROUTER_METRICS_ADDR=f"127.0.0.1:{port}")
        ops.fake.add_message("MERHABA")
        wait_until(lambda: http_get(base + "/readyz") == (200, "ok\n")
                   and value(scrape(base), "keyrouter_polls_total", result="ok"), 20, "ready after a poll",
                   (worker,))
        redis.stop()
        _status, body = wait_until(lambda: (r := http_get(base + "/readyz"))[0] == 503 and "store" in r[1]
                                   and r, 20, "/readyz 503 with Redis stopped", (worker,))
        assert body.startswith("store unreachable") and body.count("\n") == 1
        assert http_get(base + "/healthz")[0] == 200, "a worker waiting for its store is alive"
        s = scrape(base)
        assert value(s, "keyrouter_polls_total", result="store") >= 1
        redis.start()  # the same port and folder
        wait_until(lambda: http_get(base + "/readyz")[0] == 200, 60, "ready again", (worker,))
        assert worker.stop() == 0, worker.stderr()
    finally:
        redis.stop()


def test_a_bad_metrics_address_is_one_line_and_exit_2(ops: Ops) -> None:
    for bad, where in (("nonsense", "--metrics"), ("127.0.0.1:99999", "--metrics")):
        done = ops.cli("run", "--once", "--metrics", bad)
        assert done.returncode == 2, done.stderr
        assert where in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = ops.cli("run", "--once", KEYROUTER_METRICS_ADDR="x:y")
    assert done.returncode == 2 and "KEYROUTER_METRICS_ADDR" in done.stderr
    # a port in use
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        done = ops.cli("run", "--once", "--metrics", f"127.0.0.1:{busy}")
    assert done.returncode == 2, done.stderr
    assert "cannot serve metrics" in done.stderr and "Traceback" not in done.stderr


def test_two_workers_are_both_ready_and_one_is_the_fetch_leader(ops: Ops) -> None:
    ports = [free_port(), free_port()]
    workers = [ops.start("run", "--interval", "0.3", "--metrics", f"127.0.0.1:{p}") for p in ports]
    for w, p in zip(workers, ports, strict=True):
        wait_until(lambda p=p: http_get(f"http://127.0.0.1:{p}/readyz") == (200, "ok\n"), 30,
                   "both workers ready", (w,))
    leaders = [value(scrape(f"http://127.0.0.1:{p}"), "keyrouter_fetch_leader") for p in ports]
    assert sorted(leaders) == [0, 1]
    follower = ports[leaders.index(0)]
    assert value(scrape(f"http://127.0.0.1:{follower}"), "keyrouter_polls_total", result="ok") == 0
    for w in workers:
        assert w.stop() == 0, w.stderr()


def test_queued_by_priority_while_the_only_slot_is_busy(ops: Ops) -> None:
    ops.rules(f"""\
version: 1
rules:
  - name: slow
    keywords: [YAVAS]
    handlers:
      - ops_handlers:wait_for_file: {{path: '{ops.tmp / "release"}'}}
  - name: urgent
    keywords: [RET]
    priority: high
    handlers: [ops_handlers:ok]
  - name: hello
    keywords: [MERHABA]
    handlers: [ops_handlers:ok]
""")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = ops.start("run", "--interval", "0.3", "--metrics", f"127.0.0.1:{port}",
                       KEYROUTER_CONCURRENCY="1")
    wait_until(lambda: http_get(base + "/healthz")[0] == 200, 20, "the listener", (worker,))
    ops.fake.add_message("YAVAS", sender=mobile(0))
    wait_until(lambda: (x := scrape(base)) and value(x, "keyrouter_inflight") == 1, 20,
               "the slow handler in the only slot", (worker,))
    for n, text in enumerate(["MERHABA", "MERHABA", "RET"], 1):
        ops.fake.add_message(text, sender=mobile(n))
    s = wait_until(lambda: (x := scrape(base)) and value(x, "keyrouter_queued", priority="high") == 1
                   and value(x, "keyrouter_queued", priority="normal") == 2 and x, 20,
                   "three messages queued behind it", (worker,))
    assert value(s, "keyrouter_inflight") == 1
    (ops.tmp / "release").touch()
    s = wait_until(lambda: (x := scrape(base)) and value(x, "keyrouter_messages_total", rule="hello",
                                                         outcome="done") == 2 and x,
                   20, "the queue drained", (worker,))
    assert value(s, "keyrouter_queued", priority="high") == 0
    assert value(s, "keyrouter_queued", priority="normal") == 0
    assert value(s, "keyrouter_messages_total", rule="urgent", outcome="done") == 1
    assert worker.stop() == 0, worker.stderr()
