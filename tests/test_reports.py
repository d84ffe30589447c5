from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from keyrouter.compliance import reports
from keyrouter.message import TURKEY
from keyrouter.store.base import OptOut, SurveyResults

ROOT = Path(__file__).parent.parent


def entry(i: int, delay: float, action: str = "blacklist") -> OptOut:
    return OptOut(number=f"+90555000{i:04d}", action=action, message_id=str(i), keyword="RET",
                  received_at=1_780_000_000 + i, handled_at=1_780_000_000 + i + delay)


def test_ledger_stats_delays() -> None:
    entries = [entry(i, delay=i) for i in range(1, 101)]
    stats = reports.ledger_stats(entries)
    assert stats["entries"] == 100 and stats["blacklist"] == 100 and stats["numbers"] == 100
    assert stats["delay_median"] == 50.5 and stats["delay_p99"] == 99 and stats["delay_max"] == 100
    text = reports.ledger_stats_text(stats)
    assert "median 50.5s" in text and "p99 99.0s" in text and "max 100.0s" in text
    assert reports.ledger_stats([])["entries"] == 0


def test_survey_table_percentages_and_bars() -> None:
    results = SurveyResults("spring", {"a": 3, "b": 1}, voters=4, last_vote_at=1_780_000_000, rejected=2)
    table = reports.survey_table(results, width=10).splitlines()
    assert table[1].split()[:3] == ["a", "3", "75.0%"] and table[1].endswith("█" * 10)
    assert table[2].split()[:3] == ["b", "1", "25.0%"] and table[2].endswith("█" * 3)
    assert "voters: 4, rejected votes: 2" in table[3]
    assert "last vote: 2026-05-28T" in table[3]


def test_replay_then_ledger_and_survey_from_the_command_line(tmp_path) -> None:
    """The shipped rules over a fresh inbox, in the sandbox, then the reports read the store."""
    now = datetime.now(TURKEY) - timedelta(minutes=2)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S")
    rows = [
        {"id": "a1", "date": stamp, "sender": "05321112233", "number": "7889", "text": "ILT AHKTEST RET"},
        {"id": "a2", "date": stamp, "sender": "05321112234", "number": "7889", "text": "anket a"},
        {"id": "a3", "date": stamp, "sender": "05321112235", "number": "7889", "text": "ANKET B"},
        {"id": "a4", "date": stamp, "sender": "05321112234", "number": "7889", "text": "anket b"},
        {"id": "a5", "date": stamp, "sender": "05321112236", "number": "7889", "text": "anket z"},
    ]
    inbox = tmp_path / "inbox.jsonl"
    inbox.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {"PATH": str(Path(sys.executable).parent), "KEYROUTER_RULES": str(ROOT / "rules"),
           "KEYROUTER_STORE": "sqlite:///state.sqlite3"}

    def keyrouter(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["keyrouter", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, check=False, timeout=60)

    done = keyrouter("replay", str(inbox), "--sandbox", "--store", "sqlite:///state.sqlite3")
    assert done.returncode == 0, done.stderr
    assert "5 messages: 5 done" in done.stdout
    assert "sandbox provider: 1 SMS sent, 1 numbers on the blacklist" in done.stdout
    export = keyrouter("optouts", "export")
    (line,) = list(csv.DictReader(io.StringIO(export.stdout)))
    assert (line["number"], line["action"], line["message_id"], line["keyword"]) == (
        "+905321112233", "blacklist", "a1", "RET")
    assert "1 ledger entries: 1 blacklist" in keyrouter("optouts", "stats").stdout
    results = json.loads(keyrouter("survey", "results", "spring-2026", "--format", "json").stdout)
    votes = {c["choice"]: c["votes"] for c in results["choices"]}
    assert votes == {"a": 0, "b": 2, "c": 0} and results["voters"] == 2  # 112234 moved its vote from a to b
    assert results["rejected"] == 0  # "anket z" never matched the survey rule
    assert "(Traceback" not in done.stderr
    future = keyrouter("optouts", "export", "--since", "2100-01-01", "--format", "jsonl")
    assert future.returncode == 0 and future.stdout == ""
