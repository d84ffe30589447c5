"""A real local Redis Cluster (3 masters, no replicas) for the store tests, started once per session
with `redis-server --cluster-enabled yes` on spare ports in a tmp folder, stopped by pid at the end.
Never skipped: without redis-server and redis-cli the tests that need it fail, saying so."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator

import pytest
from redis_server import CLUSTER_ARGS, RedisServer, cluster_ok, create_cluster

MASTERS = 3


def _wait(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"Redis Cluster test fixture: {what} not reached in {seconds:.0f}s")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`redis+cluster://127.0.0.1:PORT` of a fresh 3-master cluster."""
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.fail("the Redis Cluster tests need redis-server and redis-cli on PATH "
                    "(Debian: apt-get install redis-server)")
    base = tmp_path_factory.mktemp("redis-cluster")
    nodes = [RedisServer(base / f"node{i}", *CLUSTER_ARGS, "--cluster-node-timeout", "5000",
                         "--logfile", "redis.log") for i in range(MASTERS)]
    try:
        for node in nodes:
            node.start()
        created = create_cluster(nodes)
        if "[OK] All 16384 slots covered" not in created:
            pytest.fail(f"redis-cli --cluster create failed: {created.strip()[-500:]}")
        for node in nodes:
            _wait(f"cluster_state:ok on port {node.port}", lambda n=node: cluster_ok(n))
        yield f"redis+cluster://127.0.0.1:{nodes[0].port}"
    finally:
        for node in nodes:
            node.stop()
