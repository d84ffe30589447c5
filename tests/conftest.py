from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

# A busy CI machine must not turn a slow example into a failure: properties, not timings.
settings.register_profile("keyrouter", deadline=None)
settings.load_profile("keyrouter")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def write_rules(tmp_path: Path) -> Callable[..., Path]:
    """Write a rules file (dedented) and return its path."""

    def write(text: str, name: str = "rules.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write
