"""The SQLite store's connection, shared by its parts (store.py, ledger.py, parts.py): every call
runs on a thread under one lock, a write in one transaction that holds the write lock from the
start, so workers in other processes wait on the file's busy timeout instead of failing."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from keyrouter.store.codec import escape, unescape

T = TypeVar("T")
WAL_RETRY = 0.02  # seconds between two asks to switch to WAL while another connection holds a lock


def _decoded(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(unescape(v) if type(v) is str else v for v in row)


class Db:
    """One connection (WAL mode) and the namespace and clock every statement is given."""

    def __init__(self, path: str, namespace: str, clock: Callable[[], float], busy_timeout: float) -> None:
        self.namespace = namespace
        self.clock = clock
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                     check_same_thread=False)
        self._conn.row_factory = _decoded
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._use_wal(busy_timeout)

    def _use_wal(self, busy_timeout: float) -> None:
        """Switch the file to WAL (once per file: it stays so).  SQLite answers a switch that
        meets another connection's lock with "database is locked" at once, without the busy
        timeout, which is what workers starting together on a new file meet: ask again until
        the busy timeout has passed."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
                time.sleep(WAL_RETRY)

    def tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction, holding the write lock from the start."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`tx` on a thread: the event loop never waits on the file."""
        return await asyncio.to_thread(self.tx, fn)

    async def read(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """One statement with named parameters: all its rows."""
        def run() -> list[tuple[Any, ...]]:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()

        return await asyncio.to_thread(run)

    async def snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn`'s reads in one read transaction: they all see the same state."""
        def run() -> T:
            with self._lock:
                self._conn.execute("BEGIN")
                try:
                    return fn(self._conn)
                finally:
                    self._conn.execute("COMMIT")

        return await asyncio.to_thread(run)

    def params(self, **params: Any) -> dict[str, Any]:
        """Statement parameters; strings go in through `escape` (codec.py), so NUL and lone
        surrogates are stored exactly, and every row read comes back through `unescape`."""
        encoded = {k: escape(v) if isinstance(v, str) else v for k, v in params.items()}
        return {"ns": self.namespace, "t": self.clock(), **encoded}

    async def close(self) -> None:
        def run() -> None:
            with self._lock:
                self._conn.close()

        await asyncio.to_thread(run)
