"""A new user's next hour, each finding with the command that showed it and the first line of its
output (docs/getting-started-notes.md): a project folder holding `rules/` and a handler module,
no install; read commands on the store the user just used; rules that would do nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis_server import free_port

HANDLER = '''\
def handle(message, match, context):
    context.logger.info("booked %s", message.id)
'''
RULES = """\
version: 1
rules:
  - name: booking
    keywords: [REZERVASYON]
    handlers:
      - acme_handlers.booking:handle
  - name: kampanya-anketi-cok-uzun-bir-kural-adi
    pattern: 'anket (?P<choice>[ab])'
    handlers:
      - survey: {id: spring, choice: "{choice}", choices: [a, b]}
      - acme_handlers.booking:handle
"""
INBOX = "".join(
    json.dumps({"id": i, "date": f"2026-11-20 10:00:0{i}", "sender": f"+90535111223{i}",
                "number": "+908505550000", "text": text}) + "\n"
    for i, text in (("1", "REZERVASYON"), ("2", "anket a")))


def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """rules/ and acme_handlers/ side by side; nothing installed, nothing on PYTHONPATH."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "main.yaml").write_text(RULES, encoding="utf-8")
    (tmp_path / "acme_handlers").mkdir()
    (tmp_path / "acme_handlers" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "acme_handlers" / "booking.py").write_text(HANDLER, encoding="utf-8")
    (tmp_path / "inbox.jsonl").write_text(INBOX, encoding="utf-8")
    return tmp_path


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("KEYROUTER_", "ILETIMERKEZI_")) and k != "PYTHONPATH"}
    return {**clean, **extra}


def keyrouter(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: `-P` keeps the current folder off the import path, as the
    installed `keyrouter` script does."""
    return subprocess.run([sys.executable, "-P", "-m", "keyrouter.cli", *args], cwd=cwd,
                          env=env(**extra), capture_output=True, text=True, timeout=120)


@pytest.fixture
def dashboard(project: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started by the test (after the replay), stopped here by its pid."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


def start_dashboard(project: Path, procs: list[subprocess.Popen[bytes]]) -> str:
    port = free_port()
    with (project / "dashboard.log").open("w") as log:
        procs.append(subprocess.Popen(
            [sys.executable, "-P", "-m", "keyrouter.cli", "dashboard", "--port", str(port),
             "--sandbox"], cwd=project, env=env(), stdout=log, stderr=subprocess.STDOUT))
    base = f"http://127.0.0.1:{port}"
    wait_up(procs[-1], base, project / "dashboard.log")
    return base


def wait_up(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


# ------------------------------------------------------------------ 2. your own handler module
def test_check_replay_and_dashboard_find_the_handler_module_beside_the_rules(
        project: Path, dashboard: list[subprocess.Popen[bytes]]) -> None:
    """keyrouter check -> `./rules: 2 rules valid, 0 examples hold`."""
    done = keyrouter(project, "check")
    assert done.returncode == 0, done.stderr
    assert first_line(done.stdout) == "./rules: 2 rules valid, 0 examples hold"
    done = keyrouter(project, "replay", "inbox.jsonl", "--sandbox")
    assert done.returncode == 0, done.stderr
    assert first_line(done.stdout) == "2 messages: 2 done, 0 skipped, 0 in dead letters"
    assert "booked 1" in done.stderr and "booked 2" in done.stderr
    base = start_dashboard(project, dashboard)
    page = httpx.get(base + "/surveys", timeout=10).text
    assert "spring" in page and 'data-votes="1"' in page


def test_a_missing_module_names_where_it_looked_and_the_fix(project: Path) -> None:
    """keyrouter check (no acme_handlers/) -> `rules/main.yaml:6: cannot import module ...`."""
    (project / "acme_handlers" / "booking.py").rename(project / "booking.py")
    done = keyrouter(project, "check")
    assert done.returncode == 2
    line = first_line(done.stderr)
    assert line.startswith("rules/main.yaml:6: cannot import module 'acme_handlers.booking': "
                           "No module named 'acme_handlers.booking'"), line
    assert f"looked in the installed packages and {project}" in line
    assert "pip install -e ." in line and "KEYROUTER_PLUGIN_PATH" in line
    # KEYROUTER_PLUGIN_PATH: a folder elsewhere holding the module
    elsewhere = project / "lib" / "acme_handlers"
    elsewhere.mkdir(parents=True)
    (elsewhere / "__init__.py").write_text("", encoding="utf-8")
    (project / "booking.py").rename(elsewhere / "booking.py")
    (project / "acme_handlers" / "__init__.py").unlink()
    (project / "acme_handlers").rmdir()
    done = keyrouter(project, "check", KEYROUTER_PLUGIN_PATH=str(project / "lib"))
    assert done.returncode == 0, done.stderr


def test_read_commands_need_no_handler_code(project: Path,
                                           dashboard: list[subprocess.Popen[bytes]]) -> None:
    """keyrouter survey results spring --sandbox, without acme_handlers/ -> `survey spring`."""
    assert keyrouter(project, "replay", "inbox.jsonl", "--sandbox").returncode == 0
    (project / "acme_handlers" / "booking.py").unlink()
    done = keyrouter(project, "survey", "results", "spring", "--sandbox")
    assert done.returncode == 0, done.stderr
    assert first_line(done.stdout) == "survey spring" and "b       0" in done.stdout
    for args in (("dead-letters", "list", "--sandbox"), ("optouts", "stats", "--sandbox"),
                 ("optouts", "overdue", "--sandbox")):
        done = keyrouter(project, *args)
        assert done.returncode == 0 and "cannot import" not in done.stderr, (args, done.stderr)
    base = start_dashboard(project, dashboard)
    assert 'data-votes="1"' in httpx.get(base + "/surveys", timeout=10).text


# ------------------------------------------------------------------ 3. the store just used
def test_read_commands_never_create_a_store_and_name_the_sandbox(project: Path) -> None:
    """keyrouter dead-letters list (after replay --sandbox) -> `keyrouter: no store at
    keyrouter.sqlite3 (...)`; with --sandbox -> `no dead letters`."""
    assert keyrouter(project, "replay", "inbox.jsonl", "--sandbox").returncode == 0
    for args in (("dead-letters", "list"), ("optouts", "stats"), ("optouts", "overdue"),
                 ("survey", "results", "spring")):
        done = keyrouter(project, *args)
        assert done.returncode == 2, args
        assert first_line(done.stderr) == (
            "keyrouter: no store at keyrouter.sqlite3 (sqlite:///keyrouter.sqlite3, the default; "
            "KEYROUTER_STORE or --store to choose): nothing was recorded there; `replay --sandbox` "
            "writes keyrouter-sandbox.sqlite3: add --sandbox to read it (it exists here)"), args
        assert not (project / "keyrouter.sqlite3").exists()
    done = keyrouter(project, "dead-letters", "list", "--sandbox")
    assert done.returncode == 0 and done.stdout == "no dead letters\n"
    done = keyrouter(project, "dead-letters", "list", "--sandbox", "--store", "sqlite:///x.sqlite3")
    assert done.returncode == 2 and "give --sandbox or --store, not both" in done.stderr


def test_the_dashboard_on_a_missing_store_says_so(project: Path) -> None:
    """keyrouter dashboard -> `keyrouter: no store at keyrouter.sqlite3 ...`, exit 2."""
    done = keyrouter(project, "dashboard", "--port", str(free_port()))
    assert done.returncode == 2
    assert first_line(done.stderr).startswith("keyrouter: no store at keyrouter.sqlite3 ")
    assert not (project / "keyrouter.sqlite3").exists()


# ------------------------------------------------------------------ 4. rules that do nothing
def test_rules_with_no_rule_and_no_default_are_refused(project: Path) -> None:
    """keyrouter check (a file with only `version: 1`) -> `keyrouter: rules: ./rules has no
    rule and no `default:` ...`, exit 2; replay refuses too."""
    (project / "rules" / "main.yaml").write_text("version: 1\n", encoding="utf-8")
    done = keyrouter(project, "check")
    assert done.returncode == 2 and first_line(done.stderr) == (
        "keyrouter: rules: ./rules has no rule and no `default:`: every message would be marked "
        "done with nothing run; add a rule under `rules:` or a `default:`")
    done = keyrouter(project, "replay", "inbox.jsonl", "--sandbox")
    assert done.returncode == 2 and "has no rule and no `default:`" in done.stderr
    assert not (project / "keyrouter-sandbox.sqlite3").exists()


def test_a_message_no_rule_handles_is_logged_with_rule_none(project: Path) -> None:
    """keyrouter replay (a text no rule matches, no default) -> an INFO line with rule none."""
    (project / "inbox.jsonl").write_text(INBOX.replace("REZERVASYON", "MERHABA"), encoding="utf-8")
    done = keyrouter(project, "replay", "inbox.jsonl", "--sandbox", KEYROUTER_LOG_FORMAT="json")
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if "matched no rule" in x)
    assert '"level": "INFO"' in line and '"rule": "none"' in line and '"message_id": "1"' in line
