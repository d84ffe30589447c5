"""A SQLite ledger written before the İYS columns keeps its lines and gains the columns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from keyrouter.store import OptOut
from keyrouter.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

OLD = """CREATE TABLE optouts (
    ns TEXT NOT NULL, message_id TEXT NOT NULL, action TEXT NOT NULL, number TEXT NOT NULL,
    keyword TEXT, received_at REAL NOT NULL, handled_at REAL NOT NULL,
    PRIMARY KEY (ns, message_id, action)) WITHOUT ROWID"""


async def test_an_old_ledger_gains_the_iys_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(OLD)
    db.execute("INSERT INTO optouts VALUES ('ns', 'm1', 'blacklist', '+905551112233', 'RET', 1.0, 2.0)")
    db.commit()
    db.close()
    async with SqliteStore(path, "ns") as store:
        assert await store.optouts() == [OptOut("+905551112233", "blacklist", "m1", "RET", 1.0, 2.0)]
        new = OptOut("+905551112233", "iys_ret", "m1", "RET", 1.0, 3.0, "recorded", "tx1")
        await store.record_optout(new)
        assert (await store.optouts())[-1] == new
    async with SqliteStore(path, "ns") as store:  # opening again changes nothing
        assert len(await store.optouts()) == 2
