"""What the SQLite store's mixins (activity, conversations, reconciled, the ledger) use of
`SqliteStore` (sqlite/store.py), which they are mixed into: its connection plumbing, typed once here."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class SqlitePlumbing(Protocol):
    """`SqliteStore` implements these; a mixin subclasses this to call them."""

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `fn` in one transaction on the store's thread and returns its result."""
        ...

    async def _read(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """One statement with named parameters: all its rows."""
        ...

    def _p(self, **params: Any) -> dict[str, Any]:
        """Statement parameters, strings escaped, the namespace added."""
        ...
