"""The README's main command, on a fresh copy of the repository, shows every path
of the shipped rules whatever today's date, and says what the sandbox provider received."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


def readme_main_command() -> list[str]:
    """The line the README marks as the main job."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("keyrouter ") and "# the main job" in line:
            return shlex.split(line.split("#", 1)[0])
    raise AssertionError("README.md has no line marked `# the main job`")


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    """The repository's files as a clone has them (no store, no venv, no caches)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    target = tmp_path / "keyrouter"
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(cwd)}
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, check=False,
                          timeout=180)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def check_every_path(out: str) -> None:
    # an opt-out confirmed by SMS and blacklisted
    assert re.search(r"\d+ SMS from KEYROUTER: 'Talebiniz alindi, listeden cikarildiniz.' to "
                     r"\+90\d{3}\*\*\*\d{4}", out), out
    blacklisted = next(line for line in out.splitlines() if line.strip().startswith("blacklisted:"))
    assert "+90535***4818" in blacklisted and "4818" in blacklisted and "+905354104818" not in out
    # a survey vote
    assert re.search(r"^survey spring-2026: a \d+, b [1-9]\d*, c [1-9]\d* \(\d+ voters", out, re.M), out
    # a conversation: three questions and the thanks, each sent once, the answers counted
    assert "conversation nps-2026: started 1, completed 1, expired 0, incomplete 0, opted out 0 " \
           "(score 5:1; callback EVET:1)" in out, out
    for text in ("Bizi 1 (kotu) ile 5 (cok iyi) arasinda puanlar misiniz?",
                 "Kisaca nedenini yazar misiniz?", "Sizi arayalim mi? EVET / HAYIR",
                 "Tesekkurler, yanitiniz kaydedildi."):
        assert f"1 SMS from KEYROUTER: {text!r} to +90542***4321" in out, out
    # a reservation code, answered with its capture
    assert "'Rezervasyon 123456: talebiniz alindi, sizi arayacagiz.' to +90532***9988" in out
    # an opt-in
    assert "'Tekrar listemizdesiniz.' to +90555***2233" in out
    # per rule, noise (no rule matched) included
    by_rule = next(line for line in out.splitlines() if line.strip().startswith("by rule:"))
    for rule in ("optout", "optin", "survey", "reservation", "conversation:nps-2026",
                 "no rule (default)"):
        assert re.search(rf"{re.escape(rule)} [1-9]", by_rule), by_rule
    # a malformed row, and a row without an id (an opt-out all the same)
    assert "malformed row(s), routed as they are: 1022 (no date, number, text)" in out
    assert re.search(r"1 row\(s\) without an id, given one from their content and routed as usual: "
                     r"h-[0-9a-f]{32}", out), out
    # a link-click opt-out (on the sandbox's blacklist only) reconciled into the ledger
    assert "+90541***0042 clicked the opt-out link (no inbox row): in the ledger, channel provider" in out
    # a short-code sender goes to the dead letters, with the reason
    assert "dead letters: 1 (keyrouter dead-letters list --sandbox)" in out
    assert "not a mobile number" in out and "ids: 1012" in out


def test_the_readme_main_command_shows_every_path(fresh_copy: Path) -> None:
    command = readme_main_command()
    assert command[:2] == ["keyrouter", "replay"] and "--sandbox" in command
    done = run(command, fresh_copy)
    assert done.returncode == 1, done.stderr  # 1: dead letters left (the short-code sender's)
    check_every_path(done.stdout)
    assert done.stdout.startswith("examples/inbox.json: dates shifted by ")
    assert (fresh_copy / "keyrouter-sandbox.sqlite3").exists()  # the sandbox's own store
    assert not (fresh_copy / "keyrouter.sqlite3").exists()  # never the real one
    again = run(command, fresh_copy)  # everything is already processed
    assert re.search(r"^\d+ messages: 0 done, 0 skipped, 1 in dead letters, \d+ finished before",
                     again.stdout, re.M), again.stdout
    assert "sandbox provider: 0 SMS sent" in again.stdout


@pytest.mark.parametrize("year", [2019, 2031])
def test_the_demo_does_not_depend_on_the_inbox_date(fresh_copy: Path, year: int) -> None:
    inbox = fresh_copy / "examples" / "inbox.json"
    document = json.loads(inbox.read_text(encoding="utf-8"))
    for row in document["response"]["orders"]["order"]:
        if row.get("date"):
            row["date"] = f"{year}{row['date'][4:]}"
    inbox.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    done = run(readme_main_command(), fresh_copy)
    assert done.returncode == 1, done.stderr
    check_every_path(done.stdout)


def test_replay_dead_letters_are_summarised_not_listed(tmp_path: Path) -> None:
    """Item 6: many dead letters are one line per reason with a few ids, not one line each."""
    rows = "".join(json.dumps({"id": f"d{i}", "sender": f"78{i:02d}", "text": "RET"}) + "\n"
                   for i in range(60))
    (tmp_path / "rows.jsonl").write_text(rows)
    done = run(["keyrouter", "replay", "rows.jsonl", "--sandbox", "--rules", str(ROOT / "rules")],
               tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == "60 messages: 0 done, 0 skipped, 60 in dead letters"
    assert len(lines) < 15 and not any("dead letter: d" in line for line in lines)
    (reason,) = [line for line in lines if line.startswith("  60 x rule optout: ")]
    assert "not a mobile number" in reason
    assert any(line.strip().startswith("ids: d0, d1,") and line.endswith("... and 50 more")
               for line in lines)


def test_a_large_replay_on_a_terminal_shows_a_bar_not_a_line_per_message(tmp_path: Path) -> None:
    """Item 6: on a terminal (a pseudo-terminal here) a large replay draws rich's progress bar;
    the per-message log lines are held back and counted, the summary stays on stdout."""
    import pty
    import select

    rows = "".join(json.dumps({"id": f"n{i}", "date": "2026-11-26 14:00:00", "sender": f"0532{i:07d}",
                               "number": "+908505550000", "text": "merhaba"}) + "\n"
                   for i in range(1500))
    (tmp_path / "rows.jsonl").write_text(rows)
    leader, follower = pty.openpty()
    env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "COLUMNS": "100",
           "TERM": "xterm"}
    process = subprocess.Popen(
        ["keyrouter", "replay", "rows.jsonl", "--store", "memory://", "--rules", str(ROOT / "rules")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower side closed: the process is done
            break
        if not chunk:
            break
        seen += chunk
    out, _ = process.communicate(timeout=120)
    os.close(leader)
    terminal = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", "replace"))  # no colours
    assert process.returncode == 0, terminal
    assert "1500/1500" in terminal and "━" in terminal  # rich's bar, finished
    assert "inbound sms" not in terminal  # the log handler's per-message lines were held back
    assert "1500 per-message log lines held back during the progress bar" in terminal
    assert "Traceback" not in terminal
    assert out.splitlines()[0] == "1500 messages: 1500 done, 0 skipped, 0 in dead letters"
