"""`health()` and `describe()`, part of the contract on every backend: what tools ask instead of
guessing the backend from its attributes."""

from __future__ import annotations

import pytest

from keyrouter.store import Store

SCHEMES = {"memory": ("memory://",), "sqlite": ("sqlite://",), "redis": ("redis://", "rediss://"),
           "redis-cluster": ("redis+cluster://", "rediss+cluster://")}


class InfoContract:
    pytestmark = pytest.mark.anyio

    async def test_health_answers_with_its_latency(self, store: Store) -> None:
        health = await store.health()
        assert health.ok, health
        assert (health.error, health.cluster_node) == ("", False)
        assert 0 < health.latency_ms < 10_000

    async def test_health_on_redis_reports_each_server(self, store: Store) -> None:
        health = await store.health()
        if store.describe().kind.startswith("redis"):
            # each server says its version, or why it would not (fakeredis has no INFO)
            assert health.servers, health
            assert all((s.version != "unknown") != bool(s.info_error) for s in health.servers), health
        else:
            assert health.servers == ()

    async def test_describe_names_the_backend_and_where_it_keeps_state(self, store: Store) -> None:
        described = store.describe()
        assert described.kind in SCHEMES
        assert described.location.startswith(SCHEMES[described.kind]), described
        assert described.namespace == store.namespace
        assert described.persistent == (described.kind != "memory" and described.file != ":memory:")
        assert (described.file is not None) == (described.kind == "sqlite")
