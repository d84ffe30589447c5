"""Entry keys that survive a reload (docs/opt-out-duty.md, "Keys across reloads"): progress and
idempotency keys come from the rule, the handler, its params and an occurrence counter, never the
position.  Position-based progress of earlier versions is still honoured."""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
import recording
from duty_support import Backend, backend_fixture, row  # noqa: F401
from processes import wait_until
from test_e2e_worker import Harness, h, redis_client, redis_namespace  # noqa: F401

from keyrouter.dispatch import Dispatcher
from keyrouter.message import parse_row
from keyrouter.rules.entry_keys import entry_key, legacy_entry_key
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.store import open_store
from keyrouter.testing import FakeIletiMerkezi

V1 = """\
version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers:
      - reply: {text: "Listeden cikarildiniz."}
      - recording:to_file: {tag: b, sleep: 30}
"""
V2 = """\
version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers:
      - log
      - recording:to_file: {tag: b}
      - reply: {text: "Listeden cikarildiniz."}
        optional: true
"""


def keys(text: str, write_rules: Any) -> dict[str, str]:
    rule = load_rules(write_rules(text)).rules[0]
    return {f"{e.name}{dict(e.params)}": entry_key(rule.name, i, e) for i, e in enumerate(rule.handlers)}


def test_keys_survive_entries_added_and_moved(write_rules: Any) -> None:
    before, after = keys(V1, write_rules), keys(V2, write_rules)
    reply = "reply{'text': 'Listeden cikarildiniz.'}"
    assert before[reply] == after[reply]  # moved, `optional` added: the same entry
    assert before["recording:to_file{'tag': 'b', 'sleep': 30}"] != after["recording:to_file{'tag': 'b'}"]


def test_identical_entries_are_told_apart_by_occurrence(write_rules: Any) -> None:
    rule = load_rules(write_rules("""
        version: 1
        rules:
          - name: r
            keywords: [X]
            handlers: [log, {reply: {text: a}}, log]
    """)).rules[0]
    found = [entry_key("r", i, e) for i, e in enumerate(rule.handlers)]
    assert len(set(found)) == 3 and found[0].endswith("/0") and found[2].endswith("/1")


@pytest.mark.anyio
async def test_progress_written_with_position_keys_is_honoured(
        backend: Backend, write_rules: Any) -> None:
    """An upgrade with a message half done: its first entry succeeded under the old key."""
    recording.reset()
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            handlers: [{recording:record: {tag: a}}, {recording:record: {tag: b}}]
    """)))
    first = router.rules.rules[0].handlers[0]
    async with open_store(backend.url, backend.namespace) as store:
        assert await store.claim(["1"], "old", 30, time.time())
        assert await store.record_success([("1", legacy_entry_key("optout", 0, first))], "old") == []
        await store.release(["1"], "old")
        d = Dispatcher(router, store)
        report = await d.process([parse_row(row("1", "RET", time.time() - 5))])
        await d.aclose()
    assert report.done == 1
    assert [c["tag"] for c in recording.CALLS] == ["b"]
    recording.reset()


# -------------------------------------------------------------------- a real worker, kill -9


@pytest.fixture
def fake() -> Iterator[FakeIletiMerkezi]:
    with FakeIletiMerkezi(key="e2e-key-4f1c9a", hash="e2e-hash-8d2b7e") as server:
        yield server



@pytest.mark.slow
def test_reply_reload_kill_restart_sends_one_sms(h: Harness) -> None:  # noqa: F811 (the fixture)
    """The reply went out and the worker is in the next entry; the rules are reloaded with a
    `log` entry inserted first (SIGHUP), the worker is killed (-9) and a new one takes the message
    over under the new rules: the reply is not sent again."""
    rules = h.tmp / "rules.yaml"
    rules.write_text(V1, encoding="utf-8")
    env = {"KEYROUTER_LEASE": "1", "ILETIMERKEZI_SENDER": "TEST"}
    worker = h.run_worker(**env)
    ret = h.fake.add_message("RET", sender="05354104818")
    sms = lambda: [r for r in h.fake.requests if r.endpoint == "send-sms"]  # noqa: E731
    wait_until(lambda: sms() and any(x.kind == "start" and x.tag == "b" for x in h.lines()),
               20, "the reply and the start of the next entry", (worker,))
    rules.write_text(textwrap.dedent(V2), encoding="utf-8")
    worker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: rules" in worker.stderr(), 20, "the reload", (worker,))
    worker.kill()
    again = h.run_worker(**env)
    wait_until(lambda: any(x.kind == "end" and x.tag == "b" for x in h.lines()), 30,
               "the message finished by the new worker", (again,))
    assert again.terminate() == 0, again.stderr()
    assert len(sms()) == 1, [r.body for r in sms()]
    assert len(h.fake.sent) == 1
    assert {x.id for x in h.lines()} == {ret["id"]}
