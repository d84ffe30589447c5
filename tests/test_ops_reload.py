"""Hot reload of the rules in a running worker: SIGHUP and --watch, good, broken and failing files."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_support import Ops, Proc, http_get, ops_in, scrape, value
from processes import wait_until
from redis_server import free_port

pytestmark = pytest.mark.slow

OLD = """\
version: 1
rules:
  - name: hello
    keywords: [MERHABA]
    handlers:
      - ops_handlers:ok: {tag: old}
    examples:
      match: [merhaba]
"""
NEW = """\
version: 1
rules:
  - name: hello
    keywords: [MERHABA, SELAM]
    handlers:
      - ops_handlers:ok: {tag: new}
    examples:
      match: [selam]
"""
BROKEN = """\
version: 1
rules:
  - name: hello
    keywords: [MERHABA]
    handlers:
      - ops_handlers:ok: {tag: broken}
    fuzzy: 9
"""
FAILING_EXAMPLES = """\
version: 1
rules:
  - name: hello
    keywords: [MERHABA]
    handlers:
      - ops_handlers:ok: {tag: failing}
    examples:
      match: [selam]
"""


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    with ops_in(tmp_path, OLD) as o:
        yield o


def send(ops: Ops, text: str) -> str:
    return ops.fake.add_message(text)["id"]


def tag_of(ops: Ops, message_id: str, proc: Proc) -> str:
    found = wait_until(lambda: [t for i, t in ops.called() if i == message_id], 20,
                       f"message {message_id} handled", (proc,))
    return found[0]


def test_sighup_reloads_good_rules_and_keeps_old_ones_when_broken(ops: Ops) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = ops.start("run", "--interval", "0.3", "--metrics", f"127.0.0.1:{port}")
    assert tag_of(ops, send(ops, "MERHABA"), worker) == "old"
    first_version = next(dict(k[1])["version"] for k in scrape(base) if k[0] == "keyrouter_rules_info")

    # a good file: the next message is routed with it
    ops.rules(NEW)
    worker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: value(scrape(base), "keyrouter_rules_reloads_total", result="ok") == 1, 20,
               "the reload", (worker,))
    assert tag_of(ops, send(ops, "SELAM"), worker) == "new"
    s = scrape(base)
    versions = [dict(k[1])["version"] for k in s if k[0] == "keyrouter_rules_info"]
    assert len(versions) == 1 and versions[0] != first_version

    # a broken file: the old (new) rules stay, the problem is logged as file:line
    ops.rules(BROKEN)
    worker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: value(scrape(base), "keyrouter_rules_reloads_total", result="rejected") == 1, 20,
               "the rejection", (worker,))
    assert f"{ops.tmp / 'rules.yaml'}:7:" in worker.stderr()  # the fuzzy line
    assert tag_of(ops, send(ops, "SELAM"), worker) == "new"

    # examples that fail: rejected too, with the example's line
    ops.rules(FAILING_EXAMPLES)
    worker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: value(scrape(base), "keyrouter_rules_reloads_total", result="rejected") == 2, 20,
               "the second rejection", (worker,))
    assert f"{ops.tmp / 'rules.yaml'}:8:" in worker.stderr()  # the failing example
    assert "should match rule 'hello'" in worker.stderr()
    assert tag_of(ops, send(ops, "SELAM"), worker) == "new"
    s = scrape(base)
    assert [dict(k[1])["version"] for k in s if k[0] == "keyrouter_rules_info"] == versions
    assert value(s, "keyrouter_rules_reloads_total", result="ok") == 1
    assert worker.stop() == 0, worker.stderr()  # the exit code is unchanged by the rejections
    assert "Traceback" not in worker.stderr()


def test_watch_reloads_when_the_file_changes(ops: Ops) -> None:
    worker = ops.start("run", "--interval", "0.3", "--watch")
    assert tag_of(ops, send(ops, "MERHABA"), worker) == "old"
    ops.rules(NEW)
    wait_until(lambda: "rules changed: rules" in worker.stderr(), 20, "the watch to reload",
               (worker,))
    assert tag_of(ops, send(ops, "SELAM"), worker) == "new"
    ops.rules(BROKEN)
    wait_until(lambda: "were rejected" in worker.stderr(), 20, "the watch to reject", (worker,))
    assert tag_of(ops, send(ops, "MERHABA"), worker) == "new"
    assert worker.stop() == 0, worker.stderr()


def test_two_workers_reloading_at_different_moments_run_each_message_once(ops: Ops) -> None:
    ports = [free_port(), free_port()]
    workers = [ops.start("run", "--interval", "0.3", "--metrics", f"127.0.0.1:{p}") for p in ports]
    ids: list[str] = []

    def burst(n: int) -> None:
        for _ in range(n):
            ids.append(ops.fake.add_message("MERHABA", sender=f"+9053{len(ids):08d}")["id"])

    def reloaded(port: int) -> bool:
        return value(scrape(f"http://127.0.0.1:{port}"), "keyrouter_rules_reloads_total", result="ok") == 1

    for w, p in zip(workers, ports, strict=True):
        wait_until(lambda p=p: http_get(f"http://127.0.0.1:{p}/healthz")[0] == 200, 20, "the listener",
                   (w,))
    burst(15)
    ops.rules(NEW.replace("tag: new", "tag: old"))  # same handlers, new keywords: a new version
    workers[0].proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reloaded(ports[0]), 20, "the first reload", (workers[0],))
    burst(15)  # one worker on the old rules, one on the new
    workers[1].proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reloaded(ports[1]), 20, "the second reload", (workers[1],))
    burst(15)
    wait_until(lambda: len({i for i, _ in ops.called()}) >= len(ids), 60, "every message handled",
               (workers[0],))
    for w in workers:
        assert w.stop() == 0, w.stderr()
    handled = [i for i, _ in ops.called()]
    assert sorted(handled) == sorted(ids), "a message ran twice or not at all across the reloads"
