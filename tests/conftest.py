from __future__ import annotations

import os
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import recording
from hypothesis import settings

from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.testing import FakeIletiMerkezi

# A busy CI machine must not turn a slow example into a failure: properties, not timings.
settings.register_profile("keyrouter", deadline=None)
settings.load_profile("keyrouter")


@pytest.fixture(scope="session", autouse=True)
def _rules_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The compiled-rules cache (`KEYROUTER_RULES_CACHE=auto`) of every test, and of the
    processes tests start, under the session's temporary folder, not the user's cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(autouse=True)
def clean_recording() -> Iterator[None]:
    """The recording handlers (tests/recording.py) start every test with nothing recorded,
    planned or started."""
    recording.reset()
    yield
    recording.reset()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeIletiMerkezi]:
    """The fake provider with its default credentials (modules that need others define their own)."""
    with FakeIletiMerkezi() as server:
        yield server


@pytest.fixture
async def client(fake: FakeIletiMerkezi) -> AsyncIterator[IletiMerkezi]:
    """The real API client, pointed at `fake`."""
    async with IletiMerkezi(fake.key, fake.hash, base_url=fake.base_url) as c:
        yield c


@pytest.fixture
def write_rules(tmp_path: Path) -> Callable[..., Path]:
    """Write a rules file (dedented) and return its path."""

    def write(text: str, name: str = "rules.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write
