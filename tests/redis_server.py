"""Private redis-servers for tests, the one place tests start them: free ports (and cluster-safe
ones), a server in a temporary folder stopped by its pid, and a Redis Cluster made of them.  For
tests that must stop Redis, configure it, or run a cluster, without touching the shared one."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid (< 65536) too; never one this
    process handed out before, so the nodes of one cluster get distinct ports."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 30000)
        if port not in _HANDED_OUT and _bindable(port) and _bindable(port + 10000):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (CI installs redis-server, which brings redis-cli)"
    return found


class RedisServer:
    """A redis-server of this test's own, on a free port (cluster-safe with --cluster-enabled) in
    `folder`, without persistence unless `args` ask for it, stopped by its pid."""

    def __init__(self, folder: Path, *args: str, port: int | None = None) -> None:
        self.folder = folder
        self.args = args
        self.port = port or (cluster_port() if "--cluster-enabled" in args else free_port())
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        """Start (again, on the same port and folder) and wait until it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--save", "", "--appendonly", "no", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop by pid: SIGTERM (a clean shutdown) or SIGKILL (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


CLUSTER_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")


def create_cluster(nodes: Sequence[RedisServer], timeout: float = 60) -> str:
    """`redis-cli --cluster create` over started `nodes` (all masters); its output, which says
    "All 16384 slots covered" when it worked."""
    done = subprocess.run([_binary("redis-cli"), "--cluster", "create", *(n.address for n in nodes),
                           "--cluster-replicas", "0", "--cluster-yes"],
                          capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def cluster_ok(node: RedisServer) -> bool:
    """True once `node` says cluster_state:ok."""
    client = redis.Redis(port=node.port, socket_connect_timeout=1, socket_timeout=5)
    try:
        return client.cluster("info").get("cluster_state") == "ok"
    except redis.RedisError:
        return False
    finally:
        client.close()
