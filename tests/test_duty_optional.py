"""Optional entries: a confirmation SMS that fails never holds up the opt-out.  The shipped rules,
İYS on, on every backend: after a 402, a 450, a missing sender or a send-sms outage, the number is
blacklisted and registered in İYS in the same poll, and the failed confirmation shows in the
ledger and in a metric (docs/opt-out-duty.md)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from duty_support import NUMBER, Backend, backend_fixture, shipped_rules_with_iys  # noqa: F401
from prometheus_client import generate_latest

from keyrouter.ops.metrics import Metrics
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError
from keyrouter.testing import FakeIletiMerkezi, FakeIys, pipeline, process

pytestmark = pytest.mark.anyio

#: how each refusal is made: a provider fault, or the settings
REFUSALS: dict[str, tuple[int | str | None, dict[str, Any]]] = {
    "402 out of credit": (402, {}),
    "450 sender not approved": (450, {}),
    "no ILETIMERKEZI_SENDER": (None, {"sender": None}),
}


def metric(metrics: Metrics, final: str) -> float:
    text = generate_latest(metrics.registry).decode()
    wanted = f'keyrouter_optional_failures_total{{final="{final}",handler="reply",rule="optout"}}'
    found = [line for line in text.splitlines() if line.startswith(wanted)]
    return float(found[0].split()[-1]) if found else 0.0


@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_a_refused_confirmation_never_holds_up_the_opt_out(
        refusal: str, backend: Backend, tmp_path: Path) -> None:
    fault, settings = REFUSALS[refusal]
    rules = shipped_rules_with_iys(tmp_path)
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        iys.add_record(NUMBER, "ONAY")
        if fault is not None:
            provider.fail_next("send-sms", fault)
        async with pipeline(rules, fake=provider, store=backend.url, namespace=backend.namespace,
                            **{**iys.settings(), **settings}) as runtime:
            metrics = Metrics(process_metrics=False)
            runtime.dispatcher.events = metrics
            ret = provider.add_message("ILT AHKTEST RET", sender="05354104818")
            report = await process(runtime, [ret])  # one poll
            ledger = {(e.message_id, e.action): e for e in await runtime.store.optouts()}
            dead = await runtime.store.dead_letters()
    assert (report.done, report.dead) == (1, 0) and dead == []
    assert NUMBER in provider.blacklist
    assert [(r["recipient"], r["status"]) for r in iys.records] == [(NUMBER, "ONAY"), (NUMBER, "RET")]
    assert provider.sent == []
    assert set(ledger) == {(ret["id"], "blacklist"), (ret["id"], "iys_ret"),
                           (ret["id"], "reply_failed")}
    failed = ledger[(ret["id"], "reply_failed")]
    assert failed.number == NUMBER and "Permanent" in (failed.outcome or "")
    if fault is not None:
        assert str(fault) in (failed.outcome or "")
    else:
        assert "ILETIMERKEZI_SENDER" in (failed.outcome or "")
    assert metric(metrics, "true") == 1.0


async def test_a_send_sms_outage_never_holds_up_the_opt_out(backend: Backend,
                                                            tmp_path: Path) -> None:
    """send-sms answers 503 throughout: blacklist and İYS are done in the first poll; the reply is
    retried afterwards, and once its attempts are used up it is recorded as failed."""
    rules = shipped_rules_with_iys(tmp_path)
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        iys.add_record(NUMBER, "ONAY")
        provider.fail_next("send-sms", 503, times=100)
        async with pipeline(rules, fake=provider, store=backend.url, namespace=backend.namespace,
                            max_attempts=3, retry_base=0.05, retry_max=0.1,
                            **iys.settings()) as runtime:
            metrics = Metrics(process_metrics=False)
            runtime.dispatcher.events = metrics
            ret = provider.add_message("ILT AHKTEST RET", sender="05354104818")
            first = await process(runtime, [ret])
            assert first.retrying == 1
            assert NUMBER in provider.blacklist
            assert [(r["recipient"], r["status"]) for r in iys.records] == [(NUMBER, "ONAY"), (NUMBER, "RET")]
            actions = {e.action for e in await runtime.store.optouts()}
            assert actions == {"blacklist", "iys_ret"}  # in the same poll, the reply pending
            assert metric(metrics, "false") == 1.0
            deadline = time.monotonic() + 20
            while await runtime.store.unfinished([ret["id"]]):
                assert time.monotonic() < deadline, "the reply's retries never ended"
                await asyncio.sleep(0.1)
                await process(runtime, [ret])
            ledger = {e.action: e for e in await runtime.store.optouts()}
            dead = await runtime.store.dead_letters()
            blacklist_calls = [r for r in provider.requests if r.endpoint == "add-blacklist"]
    assert dead == [] and set(ledger) == {"blacklist", "iys_ret", "reply_failed"}
    assert "503" in (ledger["reply_failed"].outcome or "")
    assert len(blacklist_calls) == 1 and len(iys.records) == 2  # the legal effects ran once
    assert metric(metrics, "true") == 1.0


def test_optional_is_declared_beside_the_handler_name(write_rules) -> None:
    rules = load_rules(write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            handlers:
              - reply: {text: "tamam"}
                optional: true
                timeout: 5s
              - log
              - blacklist
    """))
    reply, log, blacklist = rules.rules[0].handlers
    assert (reply.optional, reply.timeout, dict(reply.params)) == (True, 5.0, {"text": "tamam"})
    assert not log.optional and not blacklist.optional


@pytest.mark.parametrize(("entry", "message", "line"), [
    ('- reply: {text: "x"}\n                optional: yes please',
     "optional: write true or false", 7),
    ("- blacklist:\n                optional: true",
     "blacklist: a legal effect cannot be optional", 6),
    ('- reply: {text: "x"}\n                optinal: true', "a handler entry is a name", 6),
])
def test_optional_errors_name_the_line(entry: str, message: str, line: int, write_rules) -> None:
    path = write_rules(f"""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            handlers:
              {entry}
    """)
    with pytest.raises(RulesError) as err:
        load_rules(path)
    assert f"{path}:{line}: {message}" in str(err.value)
