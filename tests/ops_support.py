"""Helpers for the operations tests: worker processes with a metrics listener, scraping over real
HTTP (private redis-servers: tests/redis_server.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from keyrouter.testing import FakeIletiMerkezi

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

HANDLERS = '''
import os
import time


def ok(message, match, context):
    context.logger.info("ok handled a message from %s", message.sender)
    with open(os.environ["OPS_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{message.id}\\t{context.params.get('tag', context.rule)}\\n")


def fail_permanent(message, match, context):
    from keyrouter.retries import PermanentError
    raise PermanentError("refused for good")


def fail_once(message, match, context):
    path = os.path.join(os.environ["OPS_DIR"], message.id + ".tries")
    with open(path, "a", encoding="utf-8") as f:
        f.write("x")
    if os.path.getsize(path) == 1:
        raise RuntimeError("first attempt fails")


def wait_for_file(message, match, context):
    deadline = time.monotonic() + 60
    while not os.path.exists(context.params["path"]) and time.monotonic() < deadline:
        time.sleep(0.05)


async def block_loop(message, match, context):
    time.sleep(float(context.params["seconds"]))  # blocks the event loop on purpose
'''


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    status, text = http_get(base + "/metrics")
    assert status == 200, text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    err: Path
    out: Path

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@dataclass
class Ops:
    """A tmp folder with rules and plugin handlers, the fake provider, processes to clean up."""

    tmp: Path
    fake: FakeIletiMerkezi
    store: str
    procs: list[Proc] = field(default_factory=list)

    @property
    def calls(self) -> Path:
        return self.tmp / "calls.log"

    def called(self) -> list[tuple[str, str]]:
        if not self.calls.exists():
            return []
        return [tuple(line.split("\t")) for line in self.calls.read_text().splitlines()]  # type: ignore[misc]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ILETIMERKEZI_", "KEYROUTER_"))}
        env.update({
            "PYTHONPATH": os.pathsep.join([str(self.tmp), str(REPO)]),
            "PYTHONUNBUFFERED": "1",
            "ILETIMERKEZI_API_KEY": self.fake.key,
            "ILETIMERKEZI_API_HASH": self.fake.hash,
            "ILETIMERKEZI_BASE_URL": self.fake.base_url,
            "KEYROUTER_RULES": str(self.tmp / "rules.yaml"),
            "KEYROUTER_STORE": self.store,
            "KEYROUTER_NAMESPACE": "ops",
            "KEYROUTER_RETRY_BASE": "0.05",
            "KEYROUTER_RETRY_MAX": "0.2",
            "KEYROUTER_HTTP_TIMEOUT": "5",
            "OPS_LOG": str(self.calls),
            "OPS_DIR": str(self.tmp),
        })
        env.update(extra)
        return {k: v for k, v in env.items() if v != "<unset>"}

    def rules(self, text: str) -> None:
        (self.tmp / "rules.yaml").write_text(text, encoding="utf-8")

    def start(self, *args: str, **env: str) -> Proc:
        n = len(self.procs)
        out, err = self.tmp / f"p{n}.out", self.tmp / f"p{n}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen([sys.executable, "-m", "keyrouter.cli", *args], cwd=self.tmp,
                                    env=self.env(**env), stdout=o, stderr=e)
        p = Proc(proc, err, out)
        self.procs.append(p)
        return p

    def cli(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "keyrouter.cli", *args], cwd=self.tmp,
                              env=self.env(**env), capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        for p in self.procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)


@contextlib.contextmanager
def ops_in(tmp: Path, rules: str, *, store: str | None = None, **fake: Any) -> Iterator[Ops]:
    """The `ops` fixture of the ops tests: `tmp` holds the rules and the plugin handlers, the fake
    provider (`fake` keywords) runs, SQLite in `tmp` unless `store` says otherwise; the processes
    started are killed at the end."""
    (tmp / "ops_handlers.py").write_text(HANDLERS, encoding="utf-8")
    with FakeIletiMerkezi(**fake) as provider:
        o = Ops(tmp, provider, store or f"sqlite:///{tmp / 'state.sqlite3'}")
        o.rules(rules)
        try:
            yield o
        finally:
            o.close()
