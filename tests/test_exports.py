"""The ledger and survey files (keyrouter.compliance.exports): one column list, one masking rule,
one time format, whether `keyrouter optouts export` / `survey results` or the dashboard writes them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from keyrouter.cli import main
from keyrouter.compliance import exports
from keyrouter.store.base import OptOut, SurveyResults
from keyrouter.store.memory import MemoryStore
from keyrouter.store.sqlite import SqliteStore
from keyrouter.web.app import create_app
from keyrouter.web.pages import RulesInfo

TOKEN = "exports-test-token"
BEARER = {"authorization": f"Bearer {TOKEN}"}
T0 = 1_790_000_000.0  # 2026-09-21 (a Monday) 17:13:20 +03:00
RULES = """version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers: [blacklist, iys]
  - name: survey
    pattern: 'anket (?P<choice>[a-z]+)'
    handlers:
      - survey: {id: spring-2026, choices: [a, b, c]}
"""
LEDGER = (
    OptOut("+905321112233", "blacklist", "m1", "RET", T0, T0 + 30),
    OptOut("+905321112233", "iys_ret", "m1", "RET", T0, T0 + 40, outcome="recorded",
           transaction_id="tx-1"),
    OptOut("+905324445566", "unblacklist", "m2", "BASLA", T0 + 60, T0 + 65),
    OptOut("+905327778899", "blacklist", "=cmd", "-RET", T0 + 90, T0 + 4 * 86400.0, dated=False),
    OptOut("+905327778899", "reply_failed", "=cmd", "-RET", T0 + 90, T0 + 95, outcome="reply: 500"),
)


def entry(i: int, delay: float, action: str = "blacklist") -> OptOut:
    return OptOut(number=f"+90555000{i:04d}", action=action, message_id=str(i), keyword="RET",
                  received_at=1_780_000_000 + i, handled_at=1_780_000_000 + i + delay)


def test_ledger_csv_and_jsonl() -> None:
    entries = [entry(1, 5), entry(2, 7, "unblacklist")]
    text = exports.ledger_csv(entries)
    assert text.splitlines()[0] == ",".join(exports.LEDGER_FIELDS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["number"] for r in rows] == ["+905550000001", "+905550000002"]
    assert rows[1]["action"] == "unblacklist" and rows[0]["received_at"].endswith("+03:00")
    assert rows[0]["status"] == "handled" and rows[0]["where"] == "ledger"
    lines = [json.loads(x) for x in exports.ledger_jsonl(entries)]
    assert lines[0]["message_id"] == "1" and lines[0]["keyword"] == "RET"
    assert list(lines[0]) == list(exports.LEDGER_FIELDS)


def test_one_masking_rule_and_the_outcome_of_the_line_or_its_messages_iys_line() -> None:
    full, masked = (list(exports.ledger_rows(LEDGER, full_numbers=f)) for f in (True, False))
    assert full[0]["number"] == "+905321112233" and masked[0]["number"] == "+90532***2233"
    assert {k: v for k, v in full[0].items() if k != "number"} == {
        k: v for k, v in masked[0].items() if k != "number"}
    block, iys, back, late, failed = full
    assert (block["iys_outcome"], block["iys_transaction_id"]) == ("recorded", "tx-1")
    assert (iys["iys_outcome"], iys["within_deadline"]) == ("recorded", "yes")
    assert (back["deadline"], back["within_deadline"], back["iys_outcome"]) == ("", "", "")
    assert late["within_deadline"] == "no" and late["date_given"] == "no"
    assert failed["iys_outcome"] == "reply: 500"  # a failed handler's error is its own outcome


def test_a_run_of_equal_received_times_is_joined_across_chunks() -> None:
    """The dashboard reads the ledger a chunk at a time; a message's İYS line in the next chunk
    still fills its blacklist line."""

    async def run() -> list[dict[str, str]]:
        store = MemoryStore("exports-chunks")
        for e in LEDGER:
            await store.record_optout(e)
        chunks = [c async for c in exports.ledger_csv_stream(store, full_numbers=True, chunk=1)]
        assert len(chunks) == len(LEDGER) + 1 and chunks[0].startswith("number,action,")
        return list(csv.DictReader(io.StringIO("".join(chunks))))

    rows = {(r["message_id"], r["action"]): r for r in asyncio.run(run())}
    assert rows["m1", "blacklist"]["iys_transaction_id"] == "tx-1"
    assert rows["'=cmd", "blacklist"]["keyword"] == "'-RET"  # no formula reaches a spreadsheet


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    path = tmp_path / "k.sqlite3"

    async def fill() -> None:
        async with SqliteStore(path, "default") as store:
            for e in LEDGER:
                await store.record_optout(e)
            for voter, choice in (("v1", "a"), ("v2", "b"), ("v3", "a")):
                await store.vote("spring-2026", voter, choice, policy="last", now=T0 + 60)
            await store.vote("spring-2026", "v4", "zzz", policy="last", now=T0 + 61, valid=False)

    asyncio.run(fill())
    monkeypatch.setenv("KEYROUTER_STORE", f"sqlite:///{path}")
    monkeypatch.setenv("KEYROUTER_RULES", str(rules))
    return path


@pytest.fixture
def dashboard(filled: Path) -> Iterator[TestClient]:
    info = RulesInfo.load(str(filled.parent / "rules.yaml"), T0)
    with TestClient(create_app(lambda: SqliteStore(filled, "default"), info, token=TOKEN)) as client:
        yield client


def test_the_cli_and_the_dashboard_write_the_same_ledger_csv(
        filled: Path, dashboard: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optouts", "export"]) == 0
    cli = capsys.readouterr().out.splitlines()
    web = dashboard.get("/optouts.csv", headers=BEARER).text.splitlines()
    assert cli[0] == web[0] == ",".join(exports.LEDGER_FIELDS)
    # the same lines: the CLI oldest first, the dashboard newest first
    assert len(cli) == len(LEDGER) + 1 and sorted(cli[1:]) == sorted(web[1:])
    row = next(csv.DictReader(io.StringIO("\n".join(cli))))
    assert row["number"] == "+905321112233" and row["received_at"] == "2026-09-21T17:13:20+03:00"


def test_the_cli_and_the_dashboard_write_the_same_survey_csv(
        filled: Path, dashboard: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["survey", "results", "spring-2026", "--format", "csv"]) == 0
    cli = capsys.readouterr().out
    web = dashboard.get("/surveys/spring-2026.csv", headers=BEARER).text
    assert cli == web
    rows = list(csv.reader(io.StringIO(cli)))
    assert rows[0] == list(exports.SURVEY_FIELDS)
    assert rows[1:4] == [["spring-2026", "a", "2", "66.7", "yes"], ["spring-2026", "b", "1", "33.3", "yes"],
                         ["spring-2026", "c", "0", "0.0", "yes"]]
    assert rows[-3:] == [["voters", "3"], ["rejected", "1"], ["last_vote", "2026-09-21T17:14:20+03:00"]]


def test_survey_rows_and_json() -> None:
    results = SurveyResults("spring", {"a": 3, "b": 1}, voters=4, last_vote_at=1_780_000_000, rejected=2)
    assert [(r["choice"], r["votes"], r["percent"], r["declared"])
            for r in exports.survey_rows(results, ("b", "c"))] == [
        ("a", 3, 75.0, "no"), ("b", 1, 25.0, "yes"), ("c", 0, 0.0, "yes")]
    assert exports.survey_dict(results)["last_vote_at"].startswith("2026-05-28")
    assert exports.survey_csv(results).splitlines()[:3] == [
        "survey,choice,votes,percent,declared", "spring,a,3,75.0,no", "spring,b,1,25.0,no"]


def test_csv_cells_never_start_a_formula() -> None:
    cell = exports.cell
    assert cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert [cell(v) for v in ("+SUM(A1)", "-1+2", "@cmd", "\tx", "a=b", 5)] == [
        "'+SUM(A1)", "'-1+2", "'@cmd", "'\tx", "a=b", 5]
    assert cell("+905321234567") == "+905321234567"  # an E.164 number stays a number
