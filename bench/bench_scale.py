"""Scale-out with real worker processes, a real Redis and the fake provider (not a test).

    .venv/bin/python bench/bench_scale.py [--redis URL] [--hang SECONDS] [--interval SECONDS]
                                          [--messages N] [--only throughput,polls,hol]

Default Redis: redis://127.0.0.1:6379/11 (its own db; only this run's keys are deleted).
Handlers are `async def` awaiting 200 ms; every worker runs at KEYROUTER_CONCURRENCY=16.

(a) throughput: N messages (2,000, one per sender) processed by 1 and by 4 `keyrouter run`
    processes; the figure is messages / (last handler end - first handler start), and how many
    each worker ran.  Target: 4 workers at least 3.5x one, each doing work.  Naive baseline: the
    ideal of one worker, 16 / 0.2 s = 80 messages/s, times the number of workers.
(b) get-inbox calls per interval, 1 worker vs 4, over the same window.  Target: at most 1.5x.
    Naive baseline: every worker polls, 4x.
(c) head-of-line: one worker; one message's handler hangs (--hang, 120 s by default), then a burst
    of N normal messages (200 ms handlers), then, 1 s later, a RET from another sender: seconds
    from its arrival in the inbox to the start of its first handler.  Target: at most one poll
    interval + 2 s.  Naive baseline: the first round's batch dispatcher, where it waits for the
    hung handler.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import redis

from keyrouter.store.keys import Keys
from keyrouter.testing import FakeIletiMerkezi

REPO = Path(__file__).resolve().parent.parent
HANDLERS = '''
import asyncio
import os
import time


def _log(kind, message):
    with open(os.environ["BENCH_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{kind}\\t{message.id}\\t{os.getpid()}\\t{time.time():.6f}\\n")


async def work(message, match, context):
    _log("start", message)
    await asyncio.sleep(float(context.params.get("seconds", 0.2)))
    _log("end", message)
'''


@dataclass
class Line:
    kind: str
    id: str
    pid: int
    at: float


class Run:
    """One scenario: its namespace, log, rules and worker processes."""

    def __init__(self, tmp: Path, fake: FakeIletiMerkezi, url: str, interval: float,
                 rules: str) -> None:
        self.tmp, self.fake, self.url, self.interval = tmp, fake, url, interval
        self.namespace = f"bench-scale-{uuid4().hex[:12]}"
        self.log = tmp / f"{self.namespace}.log"
        self.rules = tmp / f"{self.namespace}.yaml"
        self.rules.write_text(textwrap.dedent(rules), encoding="utf-8")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.errs: list[Path] = []

    def start(self, n: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ILETIMERKEZI_", "KEYROUTER_"))}
        env.update({
            "PYTHONPATH": os.pathsep.join([str(self.tmp), str(REPO)]),
            "PYTHONUNBUFFERED": "1",
            "ILETIMERKEZI_API_KEY": self.fake.key, "ILETIMERKEZI_API_HASH": self.fake.hash,
            "ILETIMERKEZI_BASE_URL": self.fake.base_url,
            "KEYROUTER_RULES": str(self.rules), "KEYROUTER_STORE": self.url,
            "KEYROUTER_NAMESPACE": self.namespace, "KEYROUTER_CONCURRENCY": "16",
            "KEYROUTER_LOG_LEVEL": "INFO", "BENCH_LOG": str(self.log),
        })
        for _ in range(n):
            err = self.tmp / f"{self.namespace}.{len(self.procs)}.err"
            with err.open("wb") as e:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "keyrouter.cli", "run", "--interval", str(self.interval)],
                    cwd=self.tmp, env=env, stdout=subprocess.DEVNULL, stderr=e))
            self.errs.append(err)
        deadline = time.monotonic() + 60  # give them time to import and connect
        while not all(" started (namespace" in e.read_text(errors="replace") for e in self.errs):
            self._check_alive()
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not start within 60 s")
            time.sleep(0.1)
        time.sleep(2 * self.interval)  # the first polls and reads of an empty inbox

    def _polls(self) -> int:
        with self.fake.lock:
            return sum(r.endpoint == "get-inbox" for r in self.fake.requests)

    def _check_alive(self) -> None:
        for p, err in zip(self.procs, self.errs, strict=True):
            if p.poll() is not None:
                raise SystemExit(f"worker {p.pid} exited {p.returncode}:\n{err.read_text()[-2000:]}")

    def lines(self) -> list[Line]:
        if not self.log.exists():
            return []
        found = []
        for raw in self.log.read_text(encoding="utf-8").splitlines():
            kind, msg_id, pid, at = raw.split("\t")
            found.append(Line(kind, msg_id, int(pid), float(at)))
        return found

    def wait_ended(self, ids: set[str], timeout: float) -> list[Line]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if ids <= {x.id for x in lines if x.kind == "end"}:
                return lines
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {len(ids - {x.id for x in lines if x.kind == 'end'})} "
                                 "messages not done")
            self._check_alive()
            time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(10)
        client = redis.Redis.from_url(self.url)
        for key in client.scan_iter(match=Keys(self.namespace).pattern, count=1000):
            client.delete(key)
        client.close()
        with self.fake.lock:
            self.fake.inbox.clear()
            self.fake.requests.clear()


WORK_RULES = """\
    version: 1
    rules: []
    default:
      handlers:
        - bench_scale_handlers:work: {seconds: 0.2}
"""


def burst(fake: FakeIletiMerkezi, n: int, prefix: str) -> set[str]:
    with fake.lock:
        return {fake.add_message(f"{prefix} {i}", sender=f"+90555{i:07d}")["id"] for i in range(n)}


def throughput(tmp: Path, fake: FakeIletiMerkezi, url: str, interval: float, n: int,
               workers: int) -> tuple[float, float, Counter[int]]:
    run = Run(tmp, fake, url, interval, WORK_RULES)
    try:
        run.start(workers)
        added = time.time()
        ids = burst(fake, n, "anket")
        lines = run.wait_ended(ids, 600)
    finally:
        run.stop()
    first = min(x.at for x in lines if x.kind == "start")
    last = max(x.at for x in lines if x.kind == "end")
    per_pid = Counter(x.pid for x in lines if x.kind == "end")
    return n / (last - first), n / (last - added), per_pid


def polls(tmp: Path, fake: FakeIletiMerkezi, url: str, interval: float, workers: int,
          window: float) -> float:
    run = Run(tmp, fake, url, interval, WORK_RULES)
    try:
        run.start(workers)
        before = run._polls()
        time.sleep(window)
        calls = run._polls() - before
    finally:
        run.stop()
    return calls / (window / interval)


def head_of_line(tmp: Path, fake: FakeIletiMerkezi, url: str, interval: float, n: int,
                 hang: float) -> float | None:
    rules = f"""\
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            priority: high
            handlers:
              - bench_scale_handlers:work: {{seconds: 0.2}}
          - name: hang
            keywords: [TAKIL]
            handlers:
              - bench_scale_handlers:work: {{seconds: {hang}}}
            timeout: {int(hang) + 60}s
        default:
          handlers:
            - bench_scale_handlers:work: {{seconds: 0.2}}
    """
    run = Run(tmp, fake, url, interval, rules)
    try:
        run.start(1)
        with fake.lock:
            stuck = fake.add_message("TAKIL", sender="+905550000001")["id"]
        _wait(lambda: any(x.id == stuck and x.kind == "start" for x in run.lines()), 60, run)
        burst(fake, n, "kampanya")
        time.sleep(max(1.0, 2 * interval))  # the burst is fetched and queued
        with fake.lock:
            ret = fake.add_message("RET", sender="+905559999999")["id"]
        arrived = time.time()
        deadline = time.monotonic() + hang + 30
        while time.monotonic() < deadline:
            started = [x.at for x in run.lines() if x.id == ret and x.kind == "start"]
            if started:
                return started[0] - arrived
            run._check_alive()
            time.sleep(0.05)
        return None
    finally:
        run.stop()


def _wait(predicate: object, timeout: float, run: Run) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the scenario to begin")
        run._check_alive()
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--hang", type=float, default=120.0)
    parser.add_argument("--only", default="throughput,polls,hol")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    redis.Redis.from_url(args.redis).ping()
    with tempfile.TemporaryDirectory() as folder, FakeIletiMerkezi() as fake:
        tmp = Path(folder)
        (tmp / "bench_scale_handlers.py").write_text(HANDLERS, encoding="utf-8")
        print(f"poll interval {args.interval:g}s, {args.messages} messages, async 200 ms handlers, "
              "concurrency 16 per worker")
        if "throughput" in parts:
            one, one_wall, _ = throughput(tmp, fake, args.redis, args.interval, args.messages, 1)
            four, four_wall, per = throughput(tmp, fake, args.redis, args.interval, args.messages, 4)
            print(f"(a) throughput, 1 worker:  {one:7.1f} messages/s ({one_wall:.1f}/s from arrival); "
                  "ideal 80/s")
            print(f"    throughput, 4 workers: {four:7.1f} messages/s ({four_wall:.1f}/s from arrival); "
                  "ideal 320/s")
            shares = ", ".join(str(c) for c in sorted(per.values(), reverse=True))
            print(f"    ratio {four / one:.2f}x (target >= 3.5x); messages per worker: {shares} "
                  f"({len(per)} of 4 did work)")
        if "polls" in parts:
            window = max(10.0, 10 * args.interval)
            p1 = polls(tmp, fake, args.redis, args.interval, 1, window)
            p4 = polls(tmp, fake, args.redis, args.interval, 4, window)
            print(f"(b) get-inbox calls per interval: 1 worker {p1:.2f}, 4 workers {p4:.2f}: "
                  f"{p4 / p1:.2f}x (target <= 1.5x; naive, every worker polling: 4x)")
        if "hol" in parts:
            waited = head_of_line(tmp, fake, args.redis, args.interval, args.messages, args.hang)
            shown = f"{waited:.2f}s" if waited is not None else f"more than {args.hang + 30:.0f}s"
            print(f"(c) head-of-line: RET started {shown} after it arrived, behind a {args.hang:g}s "
                  f"hung handler and {args.messages} queued messages (target <= "
                  f"{args.interval + 2:g}s; naive batch dispatcher: after the hung handler, "
                  f"{args.hang:g}s+)")


if __name__ == "__main__":
    main()
