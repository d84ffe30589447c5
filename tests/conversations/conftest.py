"""A real local Redis Cluster for the conversation worker tests (as tests/store/conftest.py
starts one for the store tests): 3 masters on spare ports, stopped by pid at the end."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
from redis_server import CLUSTER_ARGS, RedisServer, cluster_ok, create_cluster


@pytest.fixture(scope="session")
def conversations_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.fail("the Redis Cluster tests need redis-server and redis-cli on PATH")
    base = tmp_path_factory.mktemp("conv-cluster")
    nodes = [RedisServer(base / f"node{i}", *CLUSTER_ARGS, "--cluster-node-timeout", "5000",
                         "--logfile", "redis.log") for i in range(3)]
    try:
        for node in nodes:
            node.start()
        created = create_cluster(nodes)
        if "[OK] All 16384 slots covered" not in created:
            pytest.fail(f"redis-cli --cluster create failed: {created.strip()[-500:]}")
        deadline = time.monotonic() + 30
        while not all(cluster_ok(n) for n in nodes):
            if time.monotonic() > deadline:
                pytest.fail("the conversation tests' Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{nodes[0].port}"
    finally:
        for node in nodes:
            node.stop()
