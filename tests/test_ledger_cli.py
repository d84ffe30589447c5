"""`keyrouter optouts stats|overdue|export` over a real SQLite store, with the clock moved."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime
from pathlib import Path

import pytest

from keyrouter.cli import main
from keyrouter.cli import optouts as ledger_cli
from keyrouter.compliance import overdue as compliance
from keyrouter.message import TURKEY
from keyrouter.rules.loader import load_rules
from keyrouter.store.base import OptOut
from keyrouter.store.sqlite import SqliteStore

MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=TURKEY).timestamp()  # due Friday 27th, 00:00
DUE = datetime(2026, 11, 27, 0, 0, tzinfo=TURKEY).timestamp()
HOUR = 3600.0
RULES = """version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers: [reply: {text: ok}, blacklist, iys]
  - name: optin
    keywords: [BASLA]
    handlers: [unblacklist, iys: {status: ONAY}]
  - name: survey
    keywords: [A]
    handlers: [log]
"""


def line(mid: str, action: str, handled: float, number: str = "+905321112233", **kw) -> OptOut:
    return OptOut(number, action, mid, "RET", MONDAY, handled, **kw)


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> dict[str, str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    path = tmp_path / "k.sqlite3"

    async def fill() -> None:
        async with SqliteStore(path, "default") as store:
            await store.record_optout(line("ok", "blacklist", MONDAY + 5))
            iys = line("ok", "iys_ret", DUE + HOUR, outcome="recorded", transaction_id="tx-9")
            await store.record_optout(iys)
            await store.record_optout(line("in", "unblacklist", MONDAY + 9, "+905329998877"))
            # Started, failed, waiting for its retry:
            await store.mark_optout_pending(line("wait", "iys_ret", 0.0, "+905324445566"))
            # Dead before reaching the opt-out entries (the reply failed): no marks at all.
            row = {"id": "dead", "date": "2026-11-23 10:00:00", "sender": "05327776655", "text": "RET"}
            assert await store.dead_letter("dead", "w", "reply: 5xx", rule="optout", row=row, now=MONDAY)
            row2 = {"id": "gone", "date": "2026-11-23 10:00:00", "sender": "05321110000", "text": "A"}
            assert await store.dead_letter("gone", "w", "log", rule="survey", row=row2, now=MONDAY)
            # Marked, then its dead letter was dropped by a person: decided, not pending.
            await store.mark_optout_pending(line("dropped", "blacklist", 0.0))
            await store.dead_letter("dropped", "w", "x", rule="optout", row={"id": "dropped"}, now=MONDAY)
            await store.drop_dead("dropped")

    asyncio.run(fill())
    monkeypatch.setenv("KEYROUTER_STORE", f"sqlite:///{path}")
    monkeypatch.setenv("KEYROUTER_RULES", str(rules))
    return {"path": str(path), "rules": str(rules)}


def at(monkeypatch, epoch: float) -> None:
    monkeypatch.setattr(ledger_cli, "CLOCK", lambda: epoch)


def test_overdue_exit_codes_as_the_clock_moves(env, monkeypatch, capsys) -> None:
    at(monkeypatch, MONDAY + HOUR)
    assert main(["optouts", "overdue"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["optouts", "overdue", "--within", "4d"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(x.startswith("DUE\t") for x in out)
    at(monkeypatch, DUE - 12 * HOUR)  # Thursday noon: due within a day
    assert main(["optouts", "overdue"]) == 0
    capsys.readouterr()
    assert main(["optouts", "overdue", "--within", "1d"]) == 1
    capsys.readouterr()
    at(monkeypatch, DUE + 10)  # Friday 00:00:10: past the deadline
    assert main(["optouts", "overdue"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert sorted(x.split("\t")[1] + " " + x.split("\t")[3] + " " + x.split("\t")[-1] for x in out) == [
        "provider blacklist message dead dead letter",
        "İYS message dead dead letter",
        "İYS message wait retrying",
    ]
    assert all(x.startswith("OVERDUE\t") and "deadline 2026-11-27 00:00" in x for x in out)
    assert "+90532***6655" in "\n".join(out) and "+905327776655" not in "\n".join(out)
    assert main(["optouts", "overdue", "--full"]) == 1
    assert "+905327776655" in capsys.readouterr().out


def test_overdue_clears_once_the_ledger_has_them(env, monkeypatch, capsys) -> None:
    async def settle() -> None:
        async with SqliteStore(env["path"], "default") as store:
            await store.record_optout(line("wait", "iys_ret", DUE + 50, "+905324445566", outcome="already"))
            await store.drop_dead("dead")  # a person decided

    asyncio.run(settle())
    at(monkeypatch, DUE + 100)
    assert main(["optouts", "overdue", "--within", "30d"]) == 0


def test_stats_per_effect(env, monkeypatch, capsys) -> None:
    at(monkeypatch, DUE - 5 * HOUR)  # Thursday 19:00
    assert main(["optouts", "stats"]) == 0
    out = capsys.readouterr().out
    assert "provider blacklist: 1 within deadline, 0 late, 1 pending; closest: 5.0 business hours left" in out
    assert "İYS: 0 within deadline, 1 late, 2 pending; closest: 5.0 business hours left" in out
    at(monkeypatch, datetime(2026, 11, 30, 1, 0, tzinfo=TURKEY).timestamp())  # Monday 01:00
    assert main(["optouts", "stats"]) == 0
    out = capsys.readouterr().out
    assert "1 pending (1 overdue); closest: 25.0 business hours overdue" in out  # Fri 24h + Mon 1h


def test_pending_counts_for_metrics(env) -> None:
    async def counts() -> dict:
        async with SqliteStore(env["path"], "default") as store:
            return await compliance.pending_counts(store, load_rules(env["rules"]), now=DUE + 1)

    assert asyncio.run(counts()) == {"blacklist": {"pending": 1, "overdue": 1},
                                     "iys_ret": {"pending": 2, "overdue": 2}}

    async def both() -> tuple[list, list]:
        effects = compliance.effects_of_rules(load_rules(env["rules"]))
        async with SqliteStore(env["path"], "default") as store:
            return (await compliance.collect(store, effects),
                    await compliance.collect(store, effects, pending_only=True))

    every, pending = asyncio.run(both())
    assert pending == [c for c in every if c.state == compliance.PENDING] and len(pending) == 3


def test_unreadable_rules_warn_and_count_marks_only(env, monkeypatch, capsys) -> None:
    at(monkeypatch, DUE + 10)
    assert main(["optouts", "overdue", "--rules", "/nonexistent/rules"]) == 1
    captured = capsys.readouterr()
    assert "warning: rules" in captured.err and len(captured.out.splitlines()) == 1


def test_bad_within_is_one_line(env, capsys) -> None:
    assert main(["optouts", "overdue", "--within", "soon"]) == 2
    assert "--within" in capsys.readouterr().err


def test_export_iys_records_and_csv_columns(env, capsys) -> None:
    assert main(["optouts", "export", "--format", "iys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = sorted((json.loads(x) for x in lines), key=lambda r: r["recipient"])
    assert records == [
        {"recipient": "+905321112233", "type": "MESAJ", "source": "HS_MESAJ", "status": "RET",
         "consentDate": "2026-11-23 10:00:00", "recipientType": "BIREYSEL"},
        {"recipient": "+905329998877", "type": "MESAJ", "source": "HS_MESAJ", "status": "ONAY",
         "consentDate": "2026-11-23 10:00:00", "recipientType": "BIREYSEL"},
    ]
    assert main(["optouts", "export"]) == 0
    rows = {(r["message_id"], r["action"]): r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    block, iys, back = rows["ok", "blacklist"], rows["ok", "iys_ret"], rows["in", "unblacklist"]
    assert block["deadline"] == "2026-11-27T00:00:00+03:00" and block["within_deadline"] == "yes"
    assert block["iys_outcome"] == "recorded" and block["iys_transaction_id"] == "tx-9"
    assert iys["within_deadline"] == "no" and iys["iys_transaction_id"] == "tx-9"
    assert back["deadline"] == "" and back["within_deadline"] == "" and back["iys_outcome"] == ""
    assert main(["optouts", "export", "--format", "jsonl"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert {"deadline", "within_deadline", "iys_outcome", "iys_transaction_id"} <= set(first)


def test_unreachable_store_is_exit_4(monkeypatch, capsys) -> None:
    monkeypatch.setenv("KEYROUTER_STORE", "redis://127.0.0.1:1/0")
    assert main(["optouts", "overdue"]) == 4
    assert "unreachable" in capsys.readouterr().err


def test_a_shared_row_held_up_before_its_opt_out_entry_is_pending(env, monkeypatch, capsys) -> None:
    row = {"id": "held", "date": "2026-11-23 10:00:00", "sender": "05325550000", "text": "RET"}

    async def share() -> None:
        async with SqliteStore(env["path"], "default") as store:
            token = await store.acquire_fetch("leader", 30, MONDAY)
            assert token is not None and await store.publish([("held", json.dumps(row))], token) == 1

    asyncio.run(share())
    at(monkeypatch, DUE + 10)
    assert main(["optouts", "overdue", "--full"]) == 1
    held = [x for x in capsys.readouterr().out.splitlines() if "message held" in x]
    assert len(held) == 2 and all(x.endswith("\twaiting") and "+905325550000" in x for x in held)
