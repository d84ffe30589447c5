"""The SQLite backend: one file, one writer thread, one transaction per call (store.py)."""

from keyrouter.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
