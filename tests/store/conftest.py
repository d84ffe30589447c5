"""A real local Redis Cluster (3 masters, no replicas) for the store tests, started once per session
with `redis-server --cluster-enabled yes` on spare ports in a tmp folder, stopped by pid at the end.
Never skipped: without redis-server and redis-cli the tests that need it fail, saying so."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MASTERS = 3


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _spare_ports(n: int) -> list[int]:
    """Ports free now whose cluster bus port (+10000) is free too."""
    found: list[int] = []
    rng = random.Random()
    while len(found) < n:
        port = rng.randrange(20000, 30000)
        if port not in found and _free(port) and _free(port + 10000):
            found.append(port)
    return found


def _cli(cli: str, *args: str, timeout: float = 10) -> str:
    done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def _wait(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"Redis Cluster test fixture: {what} not reached in {seconds:.0f}s")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`redis+cluster://127.0.0.1:PORT` of a fresh 3-master cluster."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        pytest.fail("the Redis Cluster tests need redis-server and redis-cli on PATH "
                    "(Debian: apt-get install redis-server)")
    base: Path = tmp_path_factory.mktemp("redis-cluster")
    ports = _spare_ports(MASTERS)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            folder = base / str(port)
            folder.mkdir()
            procs.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
                 "--dir", str(folder), "--save", "", "--appendonly", "no", "--logfile", "redis.log"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port in ports:
            _wait(f"PONG from port {port}", lambda p=port: "PONG" in _cli(cli, "-p", str(p), "ping"))
        nodes = [f"127.0.0.1:{port}" for port in ports]
        created = _cli(cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes",
                       timeout=60)
        if "[OK] All 16384 slots covered" not in created:
            pytest.fail(f"redis-cli --cluster create failed: {created.strip()[-500:]}")
        for port in ports:
            _wait(f"cluster_state:ok on port {port}",
                  lambda p=port: "cluster_state:ok" in _cli(cli, "-p", str(p), "cluster", "info"))
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
