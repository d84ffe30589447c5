"""The dispatcher's per-rule hourly counts for the dashboard (keyrouter/dispatch/tally.py): done,
skipped and dead messages are summed in memory and written in one `count_routed` call, not one per
message, and a failed write never fails a message."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import pytest

from keyrouter.dispatch import Dispatcher
from keyrouter.message import TURKEY, Message, parse_row
from keyrouter.retries import RetryPolicy
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.store.memory import MemoryStore

pytestmark = pytest.mark.anyio
RULES = """
version: 1
rules:
  - name: anket
    keywords: [EVET]
    max_age: 1h
    handlers: [recording:record]
  - name: broken
    keywords: [BOZUK]
    handlers: [recording:permanent]
default:
  handlers: [recording:record]
"""


def msg(id: str, text: str, minutes_ago: float = 1) -> Message:
    when = datetime.now(TURKEY) - timedelta(minutes=minutes_ago)
    return parse_row({"id": id, "text": text, "sender": f"+90535410{int(id):04d}",
                      "number": "+908505550000", "date": when.strftime("%Y-%m-%d %H:%M:%S")})


class CountingStore(MemoryStore):
    def __init__(self, *args, fail: bool = False, **kw) -> None:
        super().__init__(*args, **kw)
        self.calls, self.fail = 0, fail

    async def count_routed(self, counts) -> None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("store down for the counters")
        await super().count_routed(counts)


async def test_finished_messages_are_counted_per_rule_in_one_write(write_rules) -> None:
    store = CountingStore()
    d = Dispatcher(Router(load_rules(write_rules(RULES))), store,
                   policy=RetryPolicy(max_attempts=1, base_delay=0.0, jitter=0.0))
    inbox = [msg(str(i), "EVET") for i in range(30)] + [msg("100", "EVET", minutes_ago=90)]
    inbox += [msg("200", "BOZUK"), msg("300", "merhaba")]
    report = await d.process(inbox)
    assert (report.done, report.skipped, report.dead) == (31, 1, 1)
    hour = int(time.time() // 3600)
    got = await store.routed_since(hour - 1)
    merged: dict[str, int] = {}
    for by_rule in got.values():
        for rule, n in by_rule.items():
            merged[rule] = merged.get(rule, 0) + n
    assert merged == {"anket": 31, "broken": 1, "default": 1}
    assert 1 <= store.calls <= 3, store.calls  # a second or so of work: never one per message


async def test_a_failed_count_write_is_dropped_and_the_messages_finish(
        write_rules, caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore(fail=True)
    d = Dispatcher(Router(load_rules(write_rules(RULES))), store)
    report = await asyncio.wait_for(d.process([msg(str(i), "EVET") for i in range(5)]), 30)
    assert report.done == 5 and await store.unfinished([str(i) for i in range(5)]) == []
    assert store.calls >= 1 and "could not write 5 per-rule counts" in caplog.text
    assert await store.routed_since(0) == {}
