"""The contract on MemoryStore, plus the parts of open_store that need no server."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from uuid import uuid4

import pytest

from keyrouter.store import Description, Store, open_store
from keyrouter.store.memory import MemoryStore, Space

from .contract import MakeStore, StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self) -> MakeStore:
        spaces: dict[str, Space] = {}

        def make(
            namespace: str | None = None,
            *,
            horizon: timedelta | None = None,
            clock: Callable[[], float] | None = None,
        ) -> Store:
            return MemoryStore(
                namespace or f"t-{uuid4().hex}", horizon, clock=clock or time.time, spaces=spaces
            )

        return make


def test_open_memory_url() -> None:
    store = open_store("memory://", "acct-1", timedelta(days=3))
    assert isinstance(store, MemoryStore)
    assert (store.namespace, store.horizon) == ("acct-1", timedelta(days=3))
    assert repr(store) == "MemoryStore(memory://, namespace='acct-1')"


@pytest.mark.parametrize(
    "url", ["postgres://user:s3cret@db/x", "mysql://s3cret@h", "user:s3cret@host://x", "s3cret"]
)
def test_open_unknown_scheme_names_it_without_secrets(url: str) -> None:
    with pytest.raises(ValueError, match="scheme") as caught:
        open_store(url)
    assert "s3cret" not in str(caught.value)
    if url.startswith("postgres"):
        assert "'postgres'" in str(caught.value)


@pytest.mark.parametrize("namespace", ["", "a:b", "a*", "with space", "x" * 101])
def test_namespaces_that_could_alias_keys_are_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        open_store("memory://", namespace)


def test_describe_says_memory_keeps_nothing() -> None:
    described = open_store("memory://", "acct-1").describe()
    assert described == Description("memory", "memory://", "acct-1", persistent=False)
