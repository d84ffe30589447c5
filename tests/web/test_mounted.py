"""`keyrouter run --metrics ADDR --dashboard`: the dashboard and the operator endpoints on one
port, from a real worker process against the fake provider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_support import Ops, http_get, ops_in, scrape, value
from processes import wait_until
from redis_server import free_port

pytestmark = pytest.mark.slow

RULES = """\
version: 1
rules:
  - name: survey
    pattern: 'anket (?P<choice>[ab])'
    handlers:
      - survey: {id: mounted, choices: [a, b]}
default:
  handlers: [log]
"""


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    with ops_in(tmp_path, RULES, key="mount-key-Rr42q", hash="mount-hash-Pz93k") as o:
        yield o


def test_one_port_serves_metrics_health_and_the_dashboard(ops: Ops) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = ops.start("run", "--interval", "0.5", "--metrics", f"127.0.0.1:{port}", "--dashboard")
    wait_until(lambda: http_get(base + "/healthz")[0] == 200, 20, "healthy", (worker,))
    wait_until(lambda: http_get(base + "/readyz")[0] == 200, 20, "ready", (worker,))
    ops.fake.add_message("ANKET B", sender="905321112233")
    wait_until(lambda: value(scrape(base), "keyrouter_messages_total", rule="survey", outcome="done") == 1,
               20, "the vote counted in the metrics", (worker,))
    status, page = http_get(base + "/surveys")
    assert status == 200, page
    assert "mounted" in page and "Surveys" in page
    status, page = http_get(base + "/")
    assert status == 200 and "Dead letters" in page
    assert http_get(base + "/dead-letters/nope/retry")[0] in (404, 405)  # read-only without a token
    assert worker.stop() == 0, worker.stderr()


def test_dashboard_needs_the_metrics_address(ops: Ops) -> None:
    done = ops.cli("run", "--once", "--dashboard")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        "keyrouter: --dashboard is served on the metrics listener: give --metrics ADDR "
        "(or KEYROUTER_METRICS_ADDR) too")
    assert "Traceback" not in done.stderr


def test_dashboard_on_a_public_address_needs_the_token(ops: Ops) -> None:
    done = ops.cli("run", "--once", "--metrics", f"0.0.0.0:{free_port()}", "--dashboard")
    assert done.returncode == 2
    assert "set KEYROUTER_DASHBOARD_TOKEN" in done.stderr.splitlines()[0]
    assert "Traceback" not in done.stderr
