"""`run` warns at start when Redis would lose done markers: no AOF, an evicting maxmemory policy,
or a CONFIG command it refuses (managed Redis) so the policy cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer, free_port

from keyrouter.ops.durability import durability_warnings
from keyrouter.store import open_store


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    started = RedisServer(tmp_path / "redis", *request.param).start()
    try:
        yield started
    finally:
        started.stop()


async def warnings_of(url: str) -> list[str]:
    async with open_store(url, "durability") as store:
        return await durability_warnings(store)


@pytest.mark.anyio
@pytest.mark.parametrize("server", [("--appendonly", "yes", "--maxmemory-policy", "noeviction")],
                         indirect=True)
async def test_a_persisting_non_evicting_redis_gets_no_warning(server: RedisServer) -> None:
    assert await warnings_of(server.url) == []


@pytest.mark.anyio
@pytest.mark.parametrize("server", [("--maxmemory-policy", "allkeys-lru")], indirect=True)
async def test_no_aof_and_an_evicting_policy_each_get_a_warning(server: RedisServer) -> None:
    found = await warnings_of(server.url)
    assert len(found) == 2, found
    assert "appendonly yes" in found[0]
    assert "allkeys-lru" in found[1] and "noeviction" in found[1]


@pytest.mark.anyio
@pytest.mark.parametrize("server", [("--appendonly", "yes", "--rename-command", "CONFIG", "")],
                         indirect=True)
async def test_a_refused_config_command_is_said_not_fatal(server: RedisServer) -> None:
    found = await warnings_of(server.url)
    assert len(found) == 1, found
    assert "could not read Redis's maxmemory-policy" in found[0] and "noeviction" in found[0]


@pytest.mark.anyio
async def test_other_stores_get_no_warning(tmp_path: Path) -> None:
    assert await warnings_of("memory://") == []
    assert await warnings_of(f"sqlite:///{tmp_path / 'state.sqlite3'}") == []


@pytest.mark.anyio
async def test_an_unreachable_redis_is_left_to_the_worker_to_report() -> None:

    assert await warnings_of(f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=1") == []


@pytest.mark.anyio
@pytest.mark.parametrize("server", [("--appendonly", "yes", "--rename-command", "INFO", "")],
                         indirect=True)
async def test_a_refused_info_command_is_said_not_fatal(server: RedisServer) -> None:
    found = await warnings_of(server.url)
    assert len(found) == 1 and "could not ask Redis about persistence" in found[0], found
