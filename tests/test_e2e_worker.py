"""End to end: real `keyrouter` worker processes, a real local HTTP fake of iletiMerkezi
(`keyrouter.testing.FakeIletiMerkezi`, served from this test process) and a real Redis.

The Redis is KEYROUTER_E2E_REDIS_URL (default db 14: tests/redis_dbs.py).  When it is
unreachable these tests FAIL, they never skip.  Each test uses its own namespace and deletes only
`keyrouter:{namespace}:*` (SCAN), never FLUSHDB.

Handlers are `recording:to_file` (tests/recording.py): each entry writes a flushed `start` and `end`
line (message id, tag, idempotency key, pid) to the file named by KEYROUTER_TEST_LOG, so the tests
can tell which entries ran, how often, in which process, and which ones a kill cut off.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
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

from keyrouter.message import TURKEY, content_id
from keyrouter.rules.entry_keys import entry_key, with_identities
from keyrouter.rules.model import HandlerEntry
from keyrouter.store import open_store
from keyrouter.store.keys import Keys
from keyrouter.testing import FakeIletiMerkezi, inbox_response

pytestmark = pytest.mark.slow

REDIS_URL = E2E_URL
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
INTERVAL = "0.2"


# ----------------------------------------------------------------------------- the log


@dataclass(frozen=True)
class Line:
    kind: str  # start | end
    id: str
    tag: str
    key: str
    pid: int


def read_log(path: Path) -> list[Line]:
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        kind, msg_id, tag, key, pid = raw.split("\t")  # a torn line fails the test loudly
        assert kind in ("start", "end"), raw
        lines.append(Line(kind, msg_id, tag, key, int(pid)))
    return lines


def by_entry(lines: list[Line]) -> dict[tuple[str, str], list[Line]]:
    entries: dict[tuple[str, str], list[Line]] = defaultdict(list)
    for line in lines:
        entries[(line.id, line.tag)].append(line)
    return entries


def count(lines: list[Line], kind: str) -> Counter[tuple[str, str]]:
    return Counter((x.id, x.tag) for x in lines if x.kind == kind)


def assert_every_start_ended(lines: list[Line]) -> None:
    """Per process: every `start` has its `end` (no handler was cut off)."""
    starts = Counter((x.id, x.tag, x.pid) for x in lines if x.kind == "start")
    ends = Counter((x.id, x.tag, x.pid) for x in lines if x.kind == "end")
    assert starts == ends, f"cut off: {starts - ends}, ends without start: {ends - starts}"


# ----------------------------------------------------------------------------- helpers


def get_inbox_calls(h: Harness) -> int:
    """How many get-inbox calls the fake provider has answered."""
    with h.fake.lock:
        return sum(r.endpoint == "get-inbox" for r in h.fake.requests)


def store_call(namespace: str, method: str, *args: Any, url: str = REDIS_URL) -> Any:
    async def go() -> Any:
        async with open_store(url, namespace) as store:
            return await getattr(store, method)(*args)

    return asyncio.run(go())


def unfinished(namespace: str, ids: list[str]) -> list[str]:
    return store_call(namespace, "unfinished", ids)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM; returns the exit code, failing if the worker takes longer than `timeout`."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.proc.pid} still running {timeout}s after SIGTERM\n{self.stderr()}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@dataclass
class Harness:
    """Everything one test needs to start keyrouter processes against the fake and Redis."""

    tmp: Path
    fake: FakeIletiMerkezi
    namespace: str
    log: Path
    workers: list[Worker] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ILETIMERKEZI_", "KEYROUTER_"))}
        pythonpath = [str(TESTS), str(self.tmp), str(REPO)]
        if os.environ.get("PYTHONPATH"):
            pythonpath.append(os.environ["PYTHONPATH"])
        env.update({
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PYTHONUNBUFFERED": "1",
            "ILETIMERKEZI_API_KEY": self.fake.key,
            "ILETIMERKEZI_API_HASH": self.fake.hash,
            "ILETIMERKEZI_BASE_URL": self.fake.base_url,
            "KEYROUTER_RULES": str(self.tmp / "rules.yaml"),
            "KEYROUTER_STORE": REDIS_URL,
            "KEYROUTER_NAMESPACE": self.namespace,
            "KEYROUTER_RETRY_BASE": "0.05",
            "KEYROUTER_RETRY_MAX": "0.5",
            "KEYROUTER_HTTP_TIMEOUT": "5",
            "KEYROUTER_TEST_LOG": str(self.log),
        })
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None and v != "<unset>"}

    def rules(self, handlers: str, **extra: str) -> None:
        """A rules file whose one rule matches every text and runs `handlers` (YAML list lines)."""
        (self.tmp / "rules.yaml").write_text(textwrap.dedent("""\
            version: 1
            rules:
              - name: all
                pattern: '.*'
                handlers:
            """) + textwrap.indent(textwrap.dedent(handlers).strip("\n"), "      ") + "\n",
            encoding="utf-8")

    def start(self, *args: str, **env: str) -> Worker:
        n = len(self.workers)
        out, err = self.tmp / f"worker{n}.out", self.tmp / f"worker{n}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen([sys.executable, "-m", "keyrouter.cli", *args], cwd=self.tmp,
                                    env=self.env(**env), stdout=o, stderr=e)
        worker = Worker(proc, out, err)
        self.workers.append(worker)
        return worker

    def run_worker(self, *extra: str, **env: str) -> Worker:
        return self.start("run", "--interval", INTERVAL, *extra, **env)

    def cli(self, *args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "keyrouter.cli", *args], cwd=self.tmp,
                              env=self.env(**env), capture_output=True, text=True, timeout=timeout)

    def lines(self) -> list[Line]:
        return read_log(self.log)

    def ended(self, ids: list[str], tags: tuple[str, ...]) -> bool:
        done = {(x.id, x.tag) for x in self.lines() if x.kind == "end"}
        return all((i, t) in done for i in ids for t in tags)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=10)
    try:
        client.ping()  # unreachable: the test errors out here, it does not skip
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_namespace(redis_client: redis.Redis) -> Iterator[str]:
    namespace = f"e2e-{uuid4().hex}"
    try:
        yield namespace
    finally:
        for key in redis_client.scan_iter(match=Keys(namespace).pattern, count=1000):
            redis_client.delete(key)


@pytest.fixture
def fake() -> Iterator[FakeIletiMerkezi]:
    with FakeIletiMerkezi(key="e2e-key-4f1c9a", hash="e2e-hash-8d2b7e") as server:
        yield server


@pytest.fixture
def h(tmp_path: Path, fake: FakeIletiMerkezi, redis_namespace: str) -> Iterator[Harness]:
    harness = Harness(tmp_path, fake, redis_namespace, tmp_path / "calls.log")
    try:
        yield harness
    finally:
        for w in harness.workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(10)


def mobile(n: int) -> str:
    return f"+90555{n:07d}"


# ----------------------------------------------------------------------------- 1. idempotency


def test_polling_the_same_inbox_again_runs_every_entry_once(h: Harness) -> None:
    h.rules("""
        - recording:to_file: {tag: a}
        - recording:to_file: {tag: b}
    """)
    ids = [h.fake.add_message(f"merhaba {i}", sender=mobile(i % 4))["id"] for i in range(8)]
    first = h.cli("run", "--once")
    assert first.returncode == 0, first.stderr
    assert count(h.lines(), "end") == {(i, t): 1 for i in ids for t in "ab"}

    ids += [h.fake.add_message(f"yeni {i}", sender=mobile(i))["id"] for i in range(5)]
    second = h.cli("run", "--once")
    assert second.returncode == 0, second.stderr
    after_second = h.lines()
    third = h.cli("run", "--once")  # nothing new: the inbox still returns every row
    assert third.returncode == 0, third.stderr

    lines = h.lines()
    assert lines == after_second, "a third poll over a fully processed inbox ran handlers"
    assert count(lines, "start") == {(i, t): 1 for i in ids for t in "ab"}
    assert count(lines, "end") == count(lines, "start")
    assert len(h.fake.inbox) == 13 and unfinished(h.namespace, ids) == []

    # the same again with one long-running worker over several intervals
    worker = h.run_worker()
    more = [h.fake.add_message(f"sonra {i}", sender=mobile(i))["id"] for i in range(3)]
    wait_until(lambda: h.ended(more, ("a", "b")), 15, "the messages added while running", (worker,))
    later = [h.fake.add_message("en son", sender=mobile(99))["id"]]
    wait_until(lambda: h.ended(later, ("a", "b")), 15, "a message added later", (worker,))
    time.sleep(1.0)  # several more polls over the same inbox
    assert worker.terminate() == 0, worker.stderr()
    lines = h.lines()
    assert count(lines, "start") == {(i, t): 1 for i in ids + more + later for t in "ab"}
    assert_every_start_ended(lines)


# ----------------------------------------------------------------------------- 2. SIGKILL

# the progress keys of the two entries below (keyrouter.rules.entry_keys: rule, handler, params digest)
#: progress keys -> tag, for the two recording entries these tests write (with the sleeps they use)
ENTRY_TAGS = {entry_key("all", i, e): e.params["tag"] for sleep in (0.03, 0.05)
              for i, e in enumerate(with_identities(
                  [HandlerEntry("recording:to_file", {"tag": tag, "sleep": sleep}) for tag in "ab"]))}


def recorded(client: redis.Redis, namespace: str, ids: list[str]) -> set[tuple[str, str]]:
    """The entries the store counts as succeeded: every entry of a done message, plus the progress
    of unfinished ones (read straight from the keys in keyrouter/store/keys.py)."""
    keys = Keys(namespace)
    found: set[tuple[str, str]] = set()
    for msg_id in ids:
        if client.sismember(keys.done, msg_id):
            found |= {(msg_id, "a"), (msg_id, "b")}
        else:
            found |= {(msg_id, ENTRY_TAGS[e.decode()]) for e in client.smembers(keys.progress(msg_id))}
    return found


def test_sigkill_mid_batch_loses_nothing_and_repeats_only_running_entries(
        h: Harness, redis_client: redis.Redis) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    h.rules("""
        - recording:to_file: {tag: a, sleep: 0.05}
        - recording:to_file: {tag: b, sleep: 0.05}
    """)
    # 12 senders x 5 messages: 5 waves of 12, so the batch takes a while; one second apart, so each
    # sender's messages have an order (within one second the order is by id, an opaque string)
    base = datetime.now(TURKEY) - timedelta(minutes=5)
    ids = [h.fake.add_message(f"mesaj {i}", sender=mobile(i % 12), date=base + timedelta(seconds=i))["id"]
           for i in range(60)]
    env = {"KEYROUTER_LEASE": "1"}
    in_flight: dict[int, set[tuple[str, str]]] = {}  # killed pid -> entries started, not recorded
    settled_at_kill: list[set[tuple[str, str]]] = []  # entries recorded as succeeded, per kill
    lines_at_kill: list[int] = []
    for _ in range(4):
        worker = h.run_worker(**env)
        pid = worker.proc.pid
        want = rng.randint(2, 30)  # kill after this many entries started in this process...
        wait_until(
            lambda pid=pid, want=want: (sum(x.kind == "start" and x.pid == pid for x in h.lines()) >= want
                                        or not unfinished(h.namespace, ids)),
            20, f"worker {pid} to start {want} entries (seed {seed})", (worker,), step=0.005)
        time.sleep(rng.uniform(0, 0.06))  # ...plus a random moment inside or between entries
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
        lines = h.lines()
        lines_at_kill.append(len(lines))
        done_now = recorded(redis_client, h.namespace, ids)
        started = {(x.id, x.tag) for x in lines if x.kind == "start" and x.pid == pid}
        in_flight[pid] = started - done_now
        settled_at_kill.append(done_now)
    lines = h.lines()
    cut_at_kill = {(x.id, x.tag, x.pid) for x in lines if x.kind == "start"} - \
        {(x.id, x.tag, x.pid) for x in lines if x.kind == "end"}
    assert len(settled_at_kill[-1]) < 2 * len(ids) - 10, f"the batch ended before the kills (seed {seed})"
    assert cut_at_kill, f"no kill landed inside a handler (seed {seed})"

    final = h.run_worker(**env)
    wait_until(lambda: not unfinished(h.namespace, ids), 30, f"every message done (seed {seed})", (final,))
    assert final.terminate() == 0, final.stderr()
    assert store_call(h.namespace, "dead_letters") == []

    lines = h.lines()
    entries = by_entry(lines)
    expected = {(i, t) for i in ids for t in "ab"}
    assert set(entries) == expected, f"entries never started (seed {seed}): {expected - set(entries)}"
    keys = {entry: {x.key for x in found} for entry, found in entries.items()}
    assert all(len(k) == 1 for k in keys.values()), f"a repeat with another key (seed {seed})"
    assert len({next(iter(k)) for k in keys.values()}) == len(expected), "two entries share a key"
    killed = set(in_flight)
    for entry, found in entries.items():
        starts = [x.pid for x in found if x.kind == "start"]
        ends = [x.pid for x in found if x.kind == "end"]
        assert ends, f"lost: {entry} never ended (seed {seed})"
        assert len(starts) == len(set(starts)), f"{entry} ran twice in one process (seed {seed})"
        assert set(ends) <= set(starts)
        assert set(starts) - set(ends) <= killed, f"{entry} cut off without a kill (seed {seed})"
        # a repeat only of an entry that was running at a kill: every run but the last was in a
        # killed process that had started it and not yet had its success recorded
        for pid in starts[:-1]:
            assert entry in in_flight.get(pid, set()), \
                f"{entry} repeated after a run in {pid} not in flight at a kill: {found} (seed {seed})"
    # an entry recorded as succeeded at a kill never starts again after it...
    for at, done_then in zip(lines_at_kill, settled_at_kill, strict=True):
        again = {(x.id, x.tag) for x in lines[at:] if x.kind == "start"} & done_then
        assert not again, f"recorded as succeeded, yet ran again: {sorted(again)} (seed {seed})"
    # ...and once `b` of a message started, its `a` never starts again
    for msg_id in ids:
        b_started = False
        for x in lines:
            if x.id == msg_id and x.kind == "start":
                b_started = b_started or x.tag == "b"
                assert not (b_started and x.tag == "a"), f"{msg_id}: `a` ran again after `b` (seed {seed})"
    # one sender's messages run in order: the next one starts after the last run of the previous
    position = {(x.kind, x.id, x.tag, x.pid): n for n, x in enumerate(lines)}
    for earlier, later in zip(ids, ids[12:], strict=False):  # message i and i + 12 share a sender
        last_end = max(n for (kind, i, _, _), n in position.items() if kind == "end" and i == earlier)
        first_start = min(n for (kind, i, _, _), n in position.items() if kind == "start" and i == later)
        assert last_end < first_start, f"{later} ran before {earlier} (same sender) was done (seed {seed})"


# ----------------------------------------------------------------------------- 3. SIGTERM


def test_sigterm_mid_batch_exits_0_and_cuts_no_handler(h: Harness) -> None:
    h.rules("""
        - recording:to_file: {tag: a, sleep: 0.4}
        - recording:to_file: {tag: b, sleep: 0.4}
    """)
    ids = [h.fake.add_message(f"mesaj {i}", sender=mobile(i))["id"] for i in range(40)]
    worker = h.run_worker()
    wait_until(lambda: any(x.kind == "start" for x in h.lines()), 15, "the first handler start", (worker,))
    sent = time.monotonic()
    assert worker.terminate(timeout=8) == 0, worker.stderr()
    took = time.monotonic() - sent
    assert took < 5, f"clean stop took {took:.1f}s"
    lines = h.lines()
    assert_every_start_ended(lines)
    assert not [x for x in lines if x.tag == "b"], "a new stage of handlers started after SIGTERM"
    assert "Traceback" not in worker.stderr()
    left = unfinished(h.namespace, ids)
    assert left, "SIGTERM did not stop the batch: every message ran"

    # what was given back is picked up by the next worker, and nothing runs twice
    again = h.cli("run", "--once")
    assert again.returncode == 0, again.stderr
    lines = h.lines()
    assert unfinished(h.namespace, ids) == []
    assert count(lines, "start") == {(i, t): 1 for i in ids for t in "ab"}
    assert_every_start_ended(lines)


def test_sigterm_starts_no_new_message(h: Harness) -> None:
    threads = 16  # the dispatcher's handler thread pool: the rest of the wave queues behind it
    h.rules("- recording:to_file: {tag: a, sleep: 1.5}")
    for i in range(40):  # one wave of 40 > 16 handler threads
        h.fake.add_message(f"mesaj {i}", sender=mobile(i))
    worker = h.run_worker()

    def started() -> set[str]:
        return {x.id for x in h.lines() if x.kind == "start"}

    # every thread busy for 1.5 s: no further handler may start before they return
    wait_until(lambda: len(started()) >= threads, 15, "the pool's first handlers", (worker,))
    before = started()
    assert worker.terminate(timeout=8) == 0, worker.stderr()
    started_after = started() - before
    assert not started_after, f"{len(started_after)} messages started after SIGTERM"
    assert_every_start_ended(h.lines())


def test_a_second_signal_exits_at_once(h: Harness) -> None:
    h.rules("- recording:to_file: {tag: a, sleep: 30}")
    h.fake.add_message("uzun", sender=mobile(1))
    worker = h.run_worker()
    wait_until(lambda: any(x.kind == "start" for x in h.lines()), 15, "the long handler", (worker,))
    worker.proc.send_signal(signal.SIGINT)  # first: wait for the 30 s handler...
    time.sleep(0.5)
    assert worker.proc.poll() is None
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGINT)  # ...second: at once
    assert worker.proc.wait(5) == 130
    assert time.monotonic() - started < 5
    assert "exiting at once" in worker.stderr()


# ----------------------------------------------------------------------------- 4. API faults


def test_worker_survives_get_inbox_faults(h: Harness) -> None:
    h.rules("- recording:to_file: {tag: a}")
    first = h.fake.add_message("ilk", sender=mobile(0))["id"]
    worker = h.run_worker(KEYROUTER_HTTP_TIMEOUT="1")
    wait_until(lambda: h.ended([first], ("a",)), 15, "the first message", (worker,))
    ids = [first]
    faults: list[int | str] = [500, "html502", "truncated", "reset", "slow:3", 503]
    for n, fault in enumerate(faults, 1):
        with h.fake.lock:
            polls = len(h.fake.requests)
            h.fake.fail_next("get-inbox", fault)
            ids.append(h.fake.add_message(f"sonra {n}", sender=mobile(n))["id"])
        wait_until(lambda polls=polls: len(h.fake.requests) > polls, 10, f"a poll meeting {fault}", (worker,))
        wait_until(lambda i=ids[-1]: h.ended([i], ("a",)), 15, f"the message after {fault}", (worker,))
        assert worker.proc.poll() is None, f"worker died on {fault}"
    assert worker.terminate() == 0, worker.stderr()
    err = worker.stderr()
    assert err.count("get-inbox failed") == len(faults), err
    assert "no answer in time" in err, "KEYROUTER_HTTP_TIMEOUT did not bound the slow answer"
    assert "Traceback" not in err
    assert count(h.lines(), "end") == {(i, "a"): 1 for i in ids}


# ----------------------------------------------------------------------------- 5. 401


def test_wrong_credentials_exit_3_with_the_causes_and_no_secrets(h: Harness) -> None:
    h.rules("- recording:to_file: {tag: a}")
    h.fake.add_message("merhaba")
    key, hash_ = "wrong-key-Zq81xK", "wrong-hash-Pw93vL"
    worker = h.run_worker(ILETIMERKEZI_API_KEY=key, ILETIMERKEZI_API_HASH=hash_)
    try:
        code = worker.proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail("a refused worker kept running")
    out, err = worker.stdout(), worker.stderr()
    assert code == 3, err
    assert "key or hash is wrong" in err
    assert "Allow API access" in err
    assert "IP allowlist" in err
    for secret in (key, hash_, h.fake.key, h.fake.hash):
        assert secret not in out and secret not in err
    assert "Traceback" not in err
    assert h.lines() == []


# ----------------------------------------------------------------------------- 6. bad rows


def test_malformed_rows_are_skipped_idless_rows_kept_and_good_ones_processed(h: Harness) -> None:
    h.rules("- recording:to_file: {tag: a}")
    good = [h.fake.add_message(f"iyi {i}", sender=mobile(i))["id"] for i in range(3)]
    day = "2026-03-01 10:00:00"
    with h.fake.lock:
        h.fake.inbox[1:1] = [
            {"date": day, "sender": mobile(10), "number": "+908505550000", "text": "no id"},
            {"id": None, "date": day, "sender": mobile(11), "text": "null id"},
            {"id": "", "date": day, "sender": mobile(12), "text": "empty id"},
            "not an object",
            42,
            None,
            ["a", "list"],
            {"id": 9001, "date": day, "sender": 5551112233, "number": 908505550000, "text": 12345},
            {"id": 9002.0, "date": day, "sender": 905551112244, "text": "float id"},
            {"id": "null-text", "date": day, "sender": mobile(13), "number": "+908505550000", "text": None},
            {"id": "no-date", "sender": mobile(14), "number": "+908505550000", "text": "tarih yok"},
            {"id": "bad-date", "date": "2026-13-45 99:99:99", "sender": mobile(15), "text": "x"},
            {"id": "null-all", "date": None, "sender": None, "number": None, "text": None},
            {"id": "ms-date", "date": 1732670000000, "sender": mobile(16), "text": "epoch ms"},
            {"id": "huge-date", "date": 1e300, "sender": mobile(17), "text": "huge"},
            {"id": "list-date", "date": [2026, 3, 1], "sender": {"a": 1}, "text": ["x"]},
        ]
    good += ["9001", "9002", "null-text", "no-date", "bad-date", "null-all", "ms-date", "huge-date",
             "list-date"]
    good += [content_id(row) for row in h.fake.inbox[1:4]]  # id-less: an id from the content
    done = h.cli("run", "--once")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert count(h.lines(), "end") == {(i, "a"): 1 for i in good}
    assert unfinished(h.namespace, good) == []
    again = h.cli("run", "--once")
    assert again.returncode == 0 and "Traceback" not in again.stderr
    assert count(h.lines(), "start") == {(i, "a"): 1 for i in good}


# ----------------------------------------------------------------------------- 7. retries

FLAKY = '''
import os


def fail_twice(message, match, context):
    """Fails on the first two attempts of each message, then succeeds."""
    path = os.path.join(context.params["dir"], message.id + ".attempts")
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{context.attempt}\\t{context.idempotency_key}\\n")
    with open(path, encoding="utf-8") as f:
        tries = len(f.read().splitlines())
    if tries <= 2:
        raise RuntimeError(f"flaky failure {tries}")
'''


def test_failing_handler_is_retried_and_earlier_entries_run_once(h: Harness) -> None:
    (h.tmp / "flaky_handlers.py").write_text(FLAKY, encoding="utf-8")
    attempts = h.tmp / "attempts"
    attempts.mkdir()
    h.rules(f"""
        - recording:to_file: {{tag: before}}
        - flaky_handlers:fail_twice: {{dir: '{attempts}'}}
        - recording:to_file: {{tag: after}}
    """)
    base = datetime.now(TURKEY) - timedelta(minutes=1)
    first = h.fake.add_message("bir", sender=mobile(1), date=base)["id"]
    other = h.fake.add_message("iki", sender=mobile(2), date=base)["id"]
    # the same sender, a second later: waits until `first` is done
    later = h.fake.add_message("uc", sender=mobile(1), date=base + timedelta(seconds=1))["id"]
    ids = [first, other, later]
    worker = h.run_worker()
    wait_until(lambda: not unfinished(h.namespace, ids), 20, "every message done", (worker,))
    assert worker.terminate() == 0, worker.stderr()
    assert store_call(h.namespace, "dead_letters") == []
    lines = h.lines()
    assert count(lines, "start") == {(i, t): 1 for i in ids for t in ("before", "after")}
    assert_every_start_ended(lines)
    for i in ids:
        tries = [row.split("\t") for row in (attempts / f"{i}.attempts").read_text().splitlines()]
        assert [t[0] for t in tries] == ["1", "2", "3"], f"message {i}: attempts {tries}"
        assert len({t[1] for t in tries}) == 1, "the idempotency key changed between attempts"
    order = [(x.kind, x.id, x.tag) for x in lines]
    assert order.index(("end", first, "after")) < order.index(("start", later, "before")), \
        "a sender's later message ran before the earlier one finished"
    assert worker.stderr().count("retry in") == 2 * len(ids)


# ----------------------------------------------------------------------------- 8. two workers


def test_two_workers_on_one_redis_run_each_entry_once(h: Harness) -> None:
    h.rules("""
        - recording:to_file: {tag: a, sleep: 0.01}
        - recording:to_file: {tag: b}
    """)
    # four slots: a worker claims what it starts soon, so both claim from the same publications
    # (with the default 64, whoever read a publication first could claim all of it, and on a
    # loaded machine one worker took every one in about one run in ten)
    workers = [h.run_worker(KEYROUTER_CONCURRENCY="4") for _ in range(2)]
    wait_started(*workers)  # a slow start on a loaded machine must not leave the burst to the other
    ids: list[str] = []
    for batch in range(15):  # messages keep arriving while both workers poll
        ids += [h.fake.add_message(f"mesaj {n}", sender=mobile(n))["id"]
                for n in range(batch * 20, batch * 20 + 20)]
        time.sleep(0.1)
    wait_until(lambda: not unfinished(h.namespace, ids), 60, "300 messages done", tuple(workers))
    time.sleep(0.5)  # a few more polls over the finished inbox
    for w in workers:
        assert w.terminate() == 0, w.stderr()
    lines = h.lines()
    assert len(ids) == 300
    assert count(lines, "end") == {(i, t): 1 for i in ids for t in "ab"}
    assert count(lines, "start") == count(lines, "end")
    pids = Counter(x.pid for x in lines if x.kind == "end")
    assert set(pids) == {w.proc.pid for w in workers}, f"one worker did all the work: {pids}"


# ----------------------------------------------------------------------------- 9. CLI


def test_run_without_credentials_exits_2(h: Harness) -> None:
    h.rules("- recording:to_file: {tag: a}")
    done = h.cli("run", "--once", ILETIMERKEZI_API_KEY="<unset>", ILETIMERKEZI_API_HASH="<unset>")
    assert done.returncode == 2
    assert "ILETIMERKEZI_API_KEY" in done.stderr and "ILETIMERKEZI_API_HASH" in done.stderr
    assert "Traceback" not in done.stderr
    assert h.fake.requests == []


FIXABLE = '''
import os

from keyrouter.retries import PermanentError


def handle(message, match, context):
    if os.path.exists(context.params["broken_if"]):
        raise PermanentError("the CRM refuses this message")
    with open(os.environ["KEYROUTER_TEST_LOG"], "a", encoding="utf-8") as log:
        log.write(f"end\\t{message.id}\\tfixable\\t{context.idempotency_key}\\t{os.getpid()}\\n")
'''


def test_replay_and_dead_letters_end_to_end_on_sqlite(h: Harness) -> None:
    (h.tmp / "fixable_handlers.py").write_text(FIXABLE, encoding="utf-8")
    broken = h.tmp / "broken"
    h.rules(f"""
        - recording:to_file: {{tag: a}}
        - fixable_handlers:handle: {{broken_if: '{broken}'}}
    """)
    store = f"sqlite:///{h.tmp / 'state.sqlite3'}"
    rows = [{"id": f"j{i}", "date": "2026-03-01 10:00:00", "sender": mobile(i),
             "number": "+908505550000", "text": f"satir {i}"} for i in range(3)]
    jsonl = h.tmp / "inbox.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    saved = h.tmp / "inbox.json"
    saved_rows = [{**r, "id": f"s{i}"} for i, r in enumerate(rows)]
    saved.write_text(json.dumps(inbox_response(saved_rows)), encoding="utf-8")
    no_provider = {"ILETIMERKEZI_API_KEY": "<unset>", "ILETIMERKEZI_API_HASH": "<unset>"}

    for path, prefix in ((jsonl, "j"), (saved, "s")):
        done = h.cli("replay", str(path), "--store", store, **no_provider)
        assert done.returncode == 0, done.stderr
        assert "3 messages: 3 done" in done.stdout
        ended = count(h.lines(), "end")
        assert all(ended[(f"{prefix}{i}", t)] == 1 for i in range(3) for t in ("a", "fixable"))
    again = h.cli("replay", str(saved), "--store", store, **no_provider)
    assert again.returncode == 0 and "0 done" in again.stdout, again.stdout

    broken.touch()
    dead_row = [{**rows[0], "id": "dead-1"}]
    dead_file = h.tmp / "dead.jsonl"
    dead_file.write_text(json.dumps(dead_row[0]) + "\n", encoding="utf-8")
    failed = h.cli("replay", str(dead_file), "--store", store, **no_provider)
    assert failed.returncode == 1, failed.stderr
    assert "ids: dead-1" in failed.stdout  # summarised by reason, not one line per dead letter
    listed = h.cli("dead-letters", "list", "--json", KEYROUTER_STORE=store)
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [d["id"] for d in letters] == ["dead-1"]
    assert letters[0]["rule"] == "all" and "the CRM refuses this message" in letters[0]["error"]
    assert letters[0]["attempts"] == 1  # a permanent error is not retried

    broken.unlink()  # the handler is fixed
    retried = h.cli("dead-letters", "retry", "--all", KEYROUTER_STORE=store)
    assert retried.returncode == 0, retried.stderr
    assert "1 dead letters will run again from their stored rows" in retried.stdout
    fixed = h.cli("replay", str(dead_file), "--store", store, **no_provider)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "1 done" in fixed.stdout
    assert h.cli("dead-letters", "list", KEYROUTER_STORE=store).stdout == "no dead letters\n"
    ended = count(h.lines(), "end")
    assert ended[("dead-1", "a")] == 1, "the entry that succeeded before the dead letter ran again"
    assert ended[("dead-1", "fixable")] == 1

    bad = h.tmp / "bad.jsonl"
    bad.write_text('{"id": "x"}\nnot json\n', encoding="utf-8")
    rejected = h.cli("replay", str(bad), "--store", store, **no_provider)
    assert rejected.returncode == 2 and "bad.jsonl:2" in rejected.stderr
