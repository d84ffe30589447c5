"""Conversations in `keyrouter run` processes against the fake provider and a real Redis (one
server and a cluster): kill -9 between recording an answer and sending the next question, and two
workers sharing respondents."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis
from processes import wait_started, wait_until
from redis_dbs import E2E_URL

from keyrouter.conversations.results import funnel
from keyrouter.conversations.steps import Record
from keyrouter.message import TURKEY
from keyrouter.store import open_store
from keyrouter.store.keys import Keys
from keyrouter.testing import FakeIletiMerkezi

from .support import ASK1, ASK2, ASK3, DONE, write_rules

pytestmark = pytest.mark.slow

REDIS_URL = E2E_URL
TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")


@dataclass
class Workers:
    tmp: Path
    fake: FakeIletiMerkezi
    store_url: str
    namespace: str = field(default_factory=lambda: f"conv-{uuid4().hex}")
    procs: list[Proc] = field(default_factory=list)

    def start(self, **env: str) -> Proc:
        err = self.tmp / f"worker{len(self.procs)}.err"
        full = {k: v for k, v in os.environ.items()
                if not k.startswith(("ILETIMERKEZI_", "KEYROUTER_"))}
        full.update({
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
            "ILETIMERKEZI_API_KEY": self.fake.key, "ILETIMERKEZI_API_HASH": self.fake.hash,
            "ILETIMERKEZI_BASE_URL": self.fake.base_url, "ILETIMERKEZI_SENDER": "TEST",
            "KEYROUTER_RULES": str(self.tmp / "rules.yaml"), "KEYROUTER_STORE": self.store_url,
            "KEYROUTER_NAMESPACE": self.namespace, "KEYROUTER_RETRY_BASE": "0.05",
            "KEYROUTER_RETRY_MAX": "0.5", "KEYROUTER_HTTP_TIMEOUT": "10", "KEYROUTER_LEASE": "3",
            **env,
        })
        with err.open("wb") as e:
            proc = subprocess.Popen([sys.executable, "-m", "keyrouter.cli", "run", "--interval",
                                     "0.2"], cwd=self.tmp, env=full, stdout=subprocess.DEVNULL,
                                    stderr=e)
        self.procs.append(Proc(proc, err))
        return self.procs[-1]

    def store(self, method: str, *args: Any) -> Any:
        async def go() -> Any:
            async with open_store(self.store_url, self.namespace) as store:
                return await getattr(store, method)(*args)

        return asyncio.run(go())

    def record(self, respondent: str) -> Record | None:
        return self.store("conversation_of", respondent)

    def sent_to(self, number: str) -> list[str]:
        with self.fake.lock:
            return [s.text for s in self.fake.sent if number in s.numbers]

    def send_requests(self) -> int:
        with self.fake.lock:
            return sum(r.endpoint == "send-sms" for r in self.fake.requests)

    def say(self, said: list[tuple[str, str]]) -> None:
        start = datetime.now(TURKEY) - timedelta(minutes=2)
        for i, (sender, text) in enumerate(said):
            self.fake.add_message(text, sender=sender, date=start + timedelta(seconds=i),
                                  id=f"{uuid4().hex[:8]}-{i:04d}")


def _cleanup(url: str, namespace: str) -> None:
    """Delete this test's keys (its own namespace) on a server or cluster."""
    if "+cluster" in url:
        client: Any = redis.RedisCluster.from_url(url.replace("redis+cluster", "redis", 1))
    else:
        client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=Keys(namespace).pattern, count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    url = getattr(request, "param", REDIS_URL)
    if url == "cluster":
        url = request.getfixturevalue("conversations_cluster_url")
    write_rules(tmp_path)
    with FakeIletiMerkezi(key="conv-key", hash="conv-hash") as fake:
        w = Workers(tmp_path, fake, url)
        try:
            yield w
        finally:
            for p in w.procs:
                if p.proc.poll() is None:
                    p.proc.kill()
                    p.proc.wait(10)
            _cleanup(url, w.namespace)


A = "+905321110001"


@pytest.mark.parametrize("fault", ["500", "slow:2"])
def test_kill_9_between_recording_an_answer_and_sending_the_next_question(
        workers: Workers, fault: str) -> None:
    """500: the send fails and waits for its retry; slow: the provider holds the send (and
    applies it) while the worker dies.  Either way the question goes out once, the answer counts
    once."""
    w = workers
    w.say([(A, "ANKET")])
    first = w.start(KEYROUTER_RETRY_BASE="4", KEYROUTER_RETRY_MAX="4")
    wait_until(lambda: w.sent_to(A) == [ASK1], 30, "the first question", [first])
    sends = w.send_requests()
    w.fake.fail_next("send-sms", int(fault) if fault.isdigit() else fault)
    w.say([(A, "5")])
    wait_until(lambda: (r := w.record(A)) is not None and r.step == 1, 30, "the answer recorded",
               [first])
    wait_until(lambda: w.send_requests() > sends, 30, "the next question's send", [first])
    first.proc.kill()  # SIGKILL: no clean-up of any kind
    first.proc.wait(10)
    assert w.sent_to(A) == [ASK1]  # the 500 sent nothing; the slow send is not applied yet
    second = w.start()
    wait_until(lambda: w.sent_to(A) == [ASK1, ASK2], 30, "the next question after the restart",
               [second])
    w.say([(A, "hizli teslimat")])
    wait_until(lambda: w.sent_to(A) == [ASK1, ASK2, ASK3], 30, "the third question", [second])
    record = w.record(A)
    assert record is not None and record.answers == {"score": "5", "reason": "hizli teslimat"}
    assert record.step == 2
    if fault != "500":  # the restarted worker repeated the send: the provider said 451
        assert "451" in second.stderr()


@pytest.mark.parametrize("workers", [REDIS_URL, "cluster"], indirect=True,
                         ids=["redis", "cluster"])
def test_two_workers_share_the_respondents(workers: Workers) -> None:
    """The issue's survey through two `keyrouter run` processes: respondents interleaved, one
    answering with 👍🏽, one with a typo, one sending RET mid-way."""
    w = workers
    happy = [f"+90532222{i:04d}" for i in range(4)]
    typo, ret = "+905323330001", "+905323330002"
    said: list[tuple[str, str]] = []
    for step in range(4):
        said += [(n, ("ANKET", "👍🏽", "hizli teslimat", "evet")[step]) for n in happy]
        said.append((typo, ("SURVEY", "4", "kargo geç geldi", "hayr")[step]))
        if step < 3:
            said.append((ret, ("Anket", "3", "RET")[step]))
    w.say(said)
    procs = [w.start(), w.start()]
    wait_started(*procs)  # the clean stop below needs each one's SIGTERM handler
    wait_until(lambda: all(w.sent_to(n) == [ASK1, ASK2, ASK3, DONE] for n in [*happy, typo])
               and len(w.sent_to(ret)) == 3, 60, "every respondent's SMS", procs)
    records = {r.respondent: r for r in w.store("conversation_records", "nps-2026")}
    assert sorted(records) == sorted([*happy, typo, ret])
    assert all(records[n].status == "completed" and records[n].answers == {
        "score": "5", "reason": "hizli teslimat", "callback": "EVET"} for n in happy)
    assert records[typo].answers == {"score": "4", "reason": "kargo geç geldi",
                                     "callback": "HAYIR"}
    assert records[ret].status == "opted_out" and records[ret].answers == {"score": "3"}
    assert ret in w.fake.blacklist and w.sent_to(ret)[:2] == [ASK1, ASK2]
    assert funnel(list(records.values()), None, 0.0) == {
        "started": 6, "completed": 5, "expired": 0, "incomplete": 0, "opted_out": 1}
    for p in procs:
        p.proc.terminate()
        assert p.proc.wait(15) == 0, p.stderr()
    assert all(w.sent_to(n) == [ASK1, ASK2, ASK3, DONE] for n in happy)  # nothing repeated


def test_kill_9_at_random_points_sends_each_step_once(workers: Workers) -> None:
    """Two workers, one killed with SIGKILL every so often and replaced, while ten respondents
    answer: every question and thanks arrives once (a repeated send meets the provider's 451),
    every answer is recorded once."""
    w = workers
    numbers = [f"+90533444{i:04d}" for i in range(10)]
    said: list[tuple[str, str]] = []
    for text in ("ANKET", "5", "hizli teslimat", "evet"):
        said += [(n, text) for n in numbers]
    w.say(said)
    w.fake.fail_next("send-sms", "slow:1.5", times=1000)  # each send held: kills land mid-send
    rng = random.Random(18)
    running = [w.start(), w.start()]
    for _ in range(6):
        time.sleep(rng.uniform(1.0, 2.0))
        i = rng.randrange(2)
        running[i].proc.kill()
        running[i].proc.wait(10)
        running[i] = w.start()
    steady, victim = running
    assert not all(len(w.sent_to(n)) == 4 for n in numbers)  # the kills came mid-way
    wait_until(lambda: all(len(w.sent_to(n)) == 4 for n in numbers), 90,
               "every respondent's four SMS", [steady, victim])
    time.sleep(2.0)  # a late repeat would show now
    assert all(w.sent_to(n) == [ASK1, ASK2, ASK3, DONE] for n in numbers)
    records = w.store("conversation_records", "nps-2026")
    assert len(records) == 10 and {r.status for r in records} == {"completed"}
    assert all(r.answers == {"score": "5", "reason": "hizli teslimat", "callback": "EVET"}
               for r in records)
