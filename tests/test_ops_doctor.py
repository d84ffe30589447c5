"""`keyrouter doctor` as a process, against the fake provider, private redis-servers and SQLite."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_support import Ops, ops_in
from redis_server import CLUSTER_ARGS, RedisServer, create_cluster

pytestmark = pytest.mark.slow

RULES = """\
version: 1
rules:
  - name: stop
    keywords: [RET]
    handlers:
      - reply: {text: "Listeden cikarildiniz"}
      - blacklist
    examples:
      match: [ret]
"""


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    (tmp_path / "data").mkdir()  # SQLite stores create their file, never folders
    with ops_in(tmp_path, RULES, store=f"sqlite:///{tmp_path / 'data' / 'state.sqlite3'}",
                key="doc-key-Qw19z", hash="doc-hash-Jk52n", approved_senders=["MYBRAND"]) as o:
        for i in range(4):
            o.fake.add_message(f"mesaj {i}", sender=f"+90532731826{i}")
        yield o


def lines(out: str) -> dict[str, str]:
    """check name -> its line (status first)."""
    found = {}
    for line in out.splitlines()[:-1]:
        status, rest = line.split(None, 1)
        found[rest.split(":", 1)[0]] = line
        assert status in ("ok", "warn", "fail", "skip"), line
    return found


def test_all_good_on_sqlite_exits_0(ops: Ops) -> None:
    done = ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND")
    assert done.returncode == 0, done.stdout + done.stderr
    found = lines(done.stdout)
    for name in ("version", "rules", "credentials", "balance", "sender", "clock", "pagination", "store",
                 "sqlite folder", "sqlite journal"):
        assert found[name].startswith("ok "), found.get(name, done.stdout)
    assert "SMS credits 1000" in found["balance"]
    assert "ignored" in found["pagination"]
    assert "ms" in found["store"]
    assert found["iys"].startswith("skip ")  # no `iys` in these rules, no IYS_* settings
    assert done.stdout.splitlines()[-1].endswith("0 failures, 1 not checked")
    for secret in (ops.fake.key, ops.fake.hash):
        assert secret not in done.stdout + done.stderr


def test_allkeys_lru_redis_fails_and_persistence_off_warns(ops: Ops, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", "--maxmemory-policy", "allkeys-lru").start()
    try:
        done = ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND", KEYROUTER_STORE=redis.url)
    finally:
        redis.stop()
    assert done.returncode == 2, done.stdout + done.stderr
    found = lines(done.stdout)
    assert found["redis maxmemory-policy"].startswith("fail ")
    policy = found["redis maxmemory-policy"]
    assert "allkeys-lru" in policy and "noeviction" in policy
    assert found["redis persistence"].startswith("warn ") and "appendonly yes" in found["redis persistence"]
    assert found["redis version"].startswith("ok ") and "Redis 7" in found["redis version"]
    assert found["store"].startswith("ok ")

    good = RedisServer(tmp_path / "redis2", "--maxmemory-policy", "noeviction",
                        "--appendonly", "yes").start()
    try:
        done = ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND", KEYROUTER_STORE=good.url)
    finally:
        good.stop()
    assert done.returncode == 0, done.stdout
    found = lines(done.stdout)
    assert found["redis maxmemory-policy"].startswith("ok ") and found["redis persistence"].startswith("ok ")


def test_a_401_provider_fails_with_the_three_causes(ops: Ops) -> None:
    done = ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND", ILETIMERKEZI_API_KEY="wrong-Kx01",
                   ILETIMERKEZI_API_HASH="wrong-Hy02")
    assert done.returncode == 2
    found = lines(done.stdout)
    line = found["credentials"]
    assert line.startswith("fail ") and "401" in line
    assert "key or hash wrong" in line and "Allow API access" in line and "IP allowlist" in line
    assert found["balance"].startswith("skip ") and found["pagination"].startswith("skip ")
    assert "wrong-Kx01" not in done.stdout + done.stderr and "wrong-Hy02" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_skewed_provider_clock_warns(ops: Ops) -> None:
    ops.fake.date_skew = -120.0
    done = ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND")
    assert done.returncode == 1, done.stdout
    line = lines(done.stdout)["clock"]
    assert line.startswith("warn ") and "ahead of" in line and "fix:" in line
    ops.fake.date_skew = 10.0
    assert ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND").returncode == 0


@pytest.mark.parametrize("mode", ["honoured", "ignored", "refused"])
def test_pagination_is_told_from_two_pages(ops: Ops, mode: str) -> None:
    ops.fake.inbox_paging = mode
    done = ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND")
    line = lines(done.stdout)["pagination"]
    assert line.split(None, 2)[2].startswith(mode), line
    pages = [r.body["request"] for r in ops.fake.requests
             if r.endpoint == "get-inbox" and "page" in r.body["request"]]
    assert [p["page"] for p in pages] == (["1"] if mode == "refused" else ["1", "2"])
    assert pages[0]["rowCount"] == "2"


def test_sender_and_balance_problems(ops: Ops) -> None:
    done = ops.cli("doctor", ILETIMERKEZI_SENDER="OTHER")
    assert done.returncode == 2
    assert lines(done.stdout)["sender"].startswith("fail ") and "MYBRAND" in done.stdout
    done = ops.cli("doctor")  # the rules reply, but no sender is set
    assert lines(done.stdout)["sender"].startswith("fail ") and "ILETIMERKEZI_SENDER" in done.stdout
    ops.fake.balance = {"amount": "0", "sms": "0"}
    done = ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND")
    assert done.returncode == 1 and lines(done.stdout)["balance"].startswith("warn ")


def test_bad_rules_and_unreachable_store_fail(ops: Ops) -> None:
    ops.rules("version: 1\nrules:\n  - name: x\n    keywords: [A]\n    handlers: [nope.nothing:here]\n")
    done = ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND", KEYROUTER_STORE="redis://127.0.0.1:1/0")
    assert done.returncode == 2
    found = lines(done.stdout)
    assert found["rules"].startswith("fail ") and "rules.yaml:5" in found["rules"]
    assert found["store"].startswith("fail ") and "unreachable" in found["store"]
    assert "Traceback" not in done.stderr


def test_a_cluster_is_checked_node_by_node(ops: Ops, tmp_path: Path) -> None:
    nodes = [RedisServer(tmp_path / f"node{i}", *CLUSTER_ARGS, *(("--maxmemory-policy", "allkeys-lru")
                                                                 if i == 2 else ())) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        created = create_cluster(nodes)
        assert "All 16384 slots covered" in created, created
        url = f"redis+cluster://127.0.0.1:{nodes[0].port}"
        found: dict[str, str] = {}
        for _ in range(50):  # the cluster settles a moment after create
            done = ops.cli("doctor", ILETIMERKEZI_SENDER="MYBRAND", KEYROUTER_STORE=url)
            found = lines(done.stdout)
            if found["store"].startswith("ok "):
                break
            time.sleep(0.2)
        policy = found["redis maxmemory-policy"]
        assert policy.startswith("fail ") and f"127.0.0.1:{nodes[2].port}" in policy
    finally:
        for node in nodes:
            node.stop()
