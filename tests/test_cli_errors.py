"""Every command answers an expected failure in one line with its own
exit code, never a traceback.  Each test runs the installed `keyrouter` console script (the real
entry point: logging set-up, the error layer, the interpreter's own exit), asserts the exit code
and the first line of what it printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from redis_server import free_port

ROOT = Path(__file__).parent.parent
SHIPPED = str(ROOT / "rules")
INBOX = str(ROOT / "examples" / "inbox.json")
BIN = Path(sys.executable).parent

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def keyrouter(tmp_path: Path) -> Run:
    """Run the console script in tmp_path with a clean environment (plus `env`)."""

    def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
            shell: str | None = None) -> subprocess.CompletedProcess[str]:
        full = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "KEYROUTER_RULES": SHIPPED,
                **(env or {})}
        command: str | list[str] = shell if shell is not None else ["keyrouter", *args]
        done = subprocess.run(command, capture_output=True, text=True, env=full, cwd=tmp_path,
                              input=stdin, check=False, timeout=120, shell=shell is not None,
                              executable="/bin/bash" if shell is not None else None)
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        return done

    return run


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def error_line(stderr: str) -> str:
    """The first `keyrouter: ...` line (log lines about the input may come before it)."""
    return next((line for line in stderr.splitlines() if line.startswith("keyrouter: ")), "")


# ------------------------------------------------------------------ 1. the error layer
STORE_COMMANDS = [
    ("replay", INBOX),
    ("dead-letters", "list"),
    ("dead-letters", "retry", "--all"),
    ("optouts", "export"),
    ("optouts", "stats"),
    ("optouts", "overdue"),
    ("survey", "results", "spring-2026"),
]


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_redis_on_a_wrong_port_is_exit_4_naming_the_setting(keyrouter: Run, command) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = keyrouter(*command, "--store", url)
    assert done.returncode == 4
    assert error_line(done.stderr).startswith("keyrouter: the Redis store is unreachable: ")
    assert done.stderr.strip().endswith("(check --store)")
    done = keyrouter(*command, env={"KEYROUTER_STORE": url})
    assert done.returncode == 4 and done.stderr.strip().endswith("(check KEYROUTER_STORE)")


def test_redis_db_99_is_exit_4(keyrouter: Run) -> None:
    done = keyrouter("dead-letters", "list", "--store", "redis://127.0.0.1:6379/99")
    assert done.returncode == 4
    assert first_line(done.stderr) == ("keyrouter: the Redis store has no such database number: "
                                       "DB index is out of range (check --store)")


def test_sqlite_in_a_folder_nobody_can_write_is_exit_4(keyrouter: Run) -> None:
    # /proc takes no new files, even from root (tests may run as root, where chmod does not bind).
    # A command that writes (a read command never creates a store: docs/getting-started-notes.md).
    done = keyrouter("dead-letters", "retry", "--all", "--store", "sqlite:////proc/keyrouter-test.sqlite3")
    assert done.returncode == 4
    assert first_line(done.stderr).startswith(
        "keyrouter: the SQLite store /proc/keyrouter-test.sqlite3 cannot be opened: unable to open")


def test_sqlite_on_a_full_disk_is_exit_4(keyrouter: Run) -> None:
    done = keyrouter("dead-letters", "list", "--store", "sqlite:////dev/full")  # every write: ENOSPC
    assert done.returncode == 4
    assert first_line(done.stderr) == ("keyrouter: the SQLite store /dev/full cannot be written: "
                                       "the disk is full (check --store)")


def test_bad_settings_name_the_variable_without_a_url(keyrouter: Run) -> None:
    done = keyrouter("dead-letters", "list", "--store", "memory://", env={"KEYROUTER_MAX_ATTEMPTS": "zero"})
    assert done.returncode == 2
    assert first_line(done.stderr) == (
        "keyrouter: invalid setting: KEYROUTER_MAX_ATTEMPTS='zero': input should be a valid "
        "integer, unable to parse string as an integer")
    assert "http" not in done.stderr and "max_attempts" not in done.stderr
    done = keyrouter("optouts", "stats", env={"KEYROUTER_NAMESPACE": "my account"})
    assert done.returncode == 2
    assert first_line(done.stderr).startswith("keyrouter: invalid setting: KEYROUTER_NAMESPACE: ")
    done = keyrouter("check", env={"KEYROUTER_LEASE": "-1"})
    assert done.returncode == 2
    assert first_line(done.stderr).startswith("keyrouter: invalid setting: KEYROUTER_LEASE='-1': ")


def test_secrets_are_never_echoed_in_a_settings_error() -> None:
    from pydantic import ValidationError

    from keyrouter.cli.errors import settings_problem
    from keyrouter.settings import Settings

    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"api_key": ["s3cret-key"], "max_attempts": "x"})
    line = settings_problem(caught.value)
    assert "ILETIMERKEZI_API_KEY: " in line and "s3cret" not in line


@pytest.mark.parametrize("level", ["verbose", "loud", "5x"])
def test_a_bad_log_level_is_one_line_exit_2(keyrouter: Run, level: str) -> None:
    done = keyrouter("check", env={"KEYROUTER_LOG_LEVEL": level})
    assert done.returncode == 2
    assert first_line(done.stderr) == (f"keyrouter: KEYROUTER_LOG_LEVEL={level!r} is not a log "
                                       "level: use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    assert keyrouter("check", env={"KEYROUTER_LOG_LEVEL": "debug"}).returncode == 0


def test_a_reader_that_goes_away_is_a_quiet_exit(keyrouter: Run, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'dead.sqlite3'}"
    rows = "".join(json.dumps({"id": f"m{i}", "sender": f"0532{i:07d}", "text": "BASLA"}) + "\n"
                   for i in range(400))
    (tmp_path / "rows.jsonl").write_text(rows)
    # No credentials: unblacklist cannot run, so every message is a dead letter at once.
    made = keyrouter("replay", "rows.jsonl", "--store", store)
    assert made.returncode == 1 and "400 in dead letters" in made.stdout
    done = keyrouter(shell=f"keyrouter dead-letters list --json --store {store} | head -3; "
                     "echo \"status ${PIPESTATUS[0]}\"")
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["id"].startswith("m")
    assert lines[-1] == "status 0" and done.stderr == ""
    # 11: the reason names what is missing, and no dry run (a dry run never runs handlers).
    assert "ILETIMERKEZI_API_KEY" in lines[0] and "dry run" not in lines[0]


def test_an_unknown_command_or_flag_is_argparse_exit_2(keyrouter: Run) -> None:
    done = keyrouter("dead-letters", "purge")
    assert done.returncode == 2 and "invalid choice: 'purge'" in done.stderr


# ------------------------------------------------------------------ 2. nothing to do is fine
@pytest.mark.parametrize("action", ["retry", "drop"])
def test_retry_or_drop_all_with_no_dead_letters_is_exit_0(keyrouter: Run, action: str) -> None:
    done = keyrouter("dead-letters", action, "--all", "--store", "sqlite:///s.sqlite3")
    assert done.returncode == 0 and first_line(done.stdout) == "no dead letters"
    done = keyrouter("dead-letters", action, "--store", "sqlite:///s.sqlite3")
    assert done.returncode == 2
    assert first_line(done.stderr).startswith("keyrouter: give dead letter ids, or --all")
    listed = keyrouter("dead-letters", "list", "--store", "sqlite:///s.sqlite3")
    assert listed.returncode == 0 and listed.stdout == "no dead letters\n"


# ------------------------------------------------------------------ 3. no folders created
def test_a_missing_sqlite_folder_is_exit_2_and_nothing_is_created(keyrouter: Run, tmp_path: Path) -> None:
    target = tmp_path / "typo" / "dir" / "x.sqlite3"
    for command in (("dead-letters", "list"), ("replay", INBOX)):
        done = keyrouter(*command, "--store", f"sqlite:///{target}")
        assert done.returncode == 2
        assert error_line(done.stderr) == (
            f"keyrouter: the SQLite store's folder {target.parent} does not exist: create it, "
            "or fix the store URL (KEYROUTER_STORE / --store)")
    assert not (tmp_path / "typo").exists()
    # a read command never creates the file either; a command that writes does
    done = keyrouter("dead-letters", "list", "--store", "sqlite:///here.sqlite3")
    assert done.returncode == 2 and not (tmp_path / "here.sqlite3").exists()
    assert first_line(done.stderr).startswith("keyrouter: no store at here.sqlite3 ")
    done = keyrouter("dead-letters", "retry", "--all", "--store", "sqlite:///here.sqlite3")
    assert done.returncode == 0 and (tmp_path / "here.sqlite3").exists()


# ------------------------------------------------------------------ 4. replay input
@pytest.mark.parametrize(("content", "expected"), [
    ("", "the file is empty"),
    ("  \n\n", "the file is empty"),
    ('{"a": 1}', "not an inbox"),
    ('[{"a": 1}, {"b": 2}]', "not an inbox"),
    ('"hello"', "not an inbox"),
    ('{"response": {"status": {"code": 401, "message": "Üyelik bilgileri hatalı"}}}',
     "a saved error answer, not an inbox: status 401 (Üyelik bilgileri hatalı)"),
    ('{"response": {"status": {"code": "503"}, "orders": {"order": []}}}',
     "a saved error answer, not an inbox: status 503"),
])
def test_replay_refuses_what_is_not_an_inbox(keyrouter: Run, tmp_path: Path, content: str,
                                             expected: str) -> None:
    (tmp_path / "in.json").write_text(content, encoding="utf-8")
    done = keyrouter("replay", "in.json", "--store", "memory://")
    assert done.returncode == 2
    line = first_line(done.stderr)
    assert line.startswith("keyrouter: in.json:") and expected in line, line
    assert done.stdout == ""


def test_replay_accepts_a_utf8_bom_and_an_empty_inbox(keyrouter: Run, tmp_path: Path) -> None:
    document = {"response": {"status": {"code": 200}, "orders": {"totalRows": "1", "order": [
        {"id": "b1", "date": "2026-11-26 14:00:00", "sender": "+905551234567", "text": "merhaba"}]}}}
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(document).encode())
    done = keyrouter("replay", "bom.json", "--store", "memory://")
    assert done.returncode == 0
    assert first_line(done.stdout) == "1 messages: 1 done, 0 skipped, 0 in dead letters"
    (tmp_path / "none.json").write_text('{"response": {"status": {"code": 200}, "orders": {"order": []}}}')
    done = keyrouter("replay", "none.json", "--store", "memory://")
    assert done.returncode == 0 and first_line(done.stdout).startswith("0 messages")


# ------------------------------------------------------------------ 8. help and version
def test_version(keyrouter: Run) -> None:
    from importlib.metadata import version

    done = keyrouter("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"keyrouter {version('keyrouter')}"


def every_command_and_action() -> list[tuple[str, ...]]:
    """(), each command, and each command's actions, as the parser has them (others' too)."""
    import argparse

    from keyrouter.cli import build_parser

    def subs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(found[0].choices) if found else {}

    found: list[tuple[str, ...]] = [()]
    for name, parser in subs(build_parser()).items():
        found.append((name,))
        found += [(name, action) for action in subs(parser)]
    return found


HELPS = every_command_and_action()


@pytest.mark.parametrize("command", HELPS, ids=lambda c: " ".join(c) or "keyrouter")
def test_every_command_and_action_has_a_description_and_an_example(keyrouter: Run, command) -> None:
    done = keyrouter(*command, "--help")
    assert done.returncode == 0
    usage, description = done.stdout.split("\n\n")[:2]
    assert usage.startswith("usage: keyrouter")
    assert description.strip() and "Thin" not in done.stdout and "docstring" not in done.stdout
    assert "example" in done.stdout and f"keyrouter {' '.join(command)}".strip() in done.stdout


# ------------------------------------------------------------------ 9. survey results
def test_survey_results_show_every_declared_choice_and_refuse_unknown_ids(keyrouter: Run) -> None:
    assert keyrouter("dead-letters", "retry", "--all", "--store", "sqlite:///s.sqlite3").returncode == 0
    done = keyrouter("survey", "results", "spring-2026", "--store", "sqlite:///s.sqlite3",
                     "--format", "json")
    assert done.returncode == 0
    result = json.loads(done.stdout)
    assert [(c["choice"], c["votes"]) for c in result["choices"]] == [("a", 0), ("b", 0), ("c", 0)]
    table = keyrouter("survey", "results", "spring-2026", "--store", "sqlite:///s.sqlite3")
    assert [line.split()[0] for line in table.stdout.splitlines()[1:4]] == ["a", "b", "c"]
    done = keyrouter("survey", "results", "autumn", "--store", "sqlite:///s.sqlite3")
    assert done.returncode == 2
    assert first_line(done.stderr) == ("keyrouter: no survey 'autumn': no rule declares it and no "
                                       f"vote uses it (surveys in {SHIPPED}: spring-2026)")


# ------------------------------------------------------------------ 10. one time convention
def test_every_time_shown_is_turkey_time_with_its_offset(keyrouter: Run, tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"id": "t1", "date": "2026-11-26 14:00:00", "sender": "7889", "text": "RET"}) + "\n"
        + json.dumps({"id": "t2", "date": "2026-11-26 14:01:00", "sender": "05321112233",
                      "text": "anket a"}) + "\n")
    store = "sqlite:///t.sqlite3"
    assert keyrouter("replay", "rows.jsonl", "--store", store).returncode == 1  # t1: dead letter
    listed = keyrouter("dead-letters", "list", "--json", "--store", store)
    assert json.loads(listed.stdout)["failed_at"].endswith("+03:00")
    assert keyrouter("dead-letters", "list", "--store", store).stdout.split("\t")[1].endswith("+03:00")
    survey = json.loads(keyrouter("survey", "results", "spring-2026", "--format", "json",
                                  "--store", store).stdout)
    assert survey["last_vote_at"].endswith("+03:00")
    from keyrouter.compliance import exports
    from keyrouter.store.base import OptOut

    entry = OptOut("+905321112233", "blacklist", "m", "RET", 1_780_000_000, 1_780_000_001)
    row = list(exports.ledger_rows([entry]))
    assert row[0]["received_at"] == "2026-05-28T23:26:40+03:00"


# ------------------------------------------------------------------ 11. smaller things
def test_rules_pointing_nowhere_names_the_setting(keyrouter: Run) -> None:
    done = keyrouter("check", "--rules", "nowhere.yaml")
    assert done.returncode == 2
    assert first_line(done.stderr) == ("keyrouter: rules: nowhere.yaml does not exist: check --rules "
                                       "(a YAML file, or a folder of them)")
    done = keyrouter("explain", "RET", env={"KEYROUTER_RULES": "/etc/nope"})
    assert done.returncode == 2
    assert first_line(done.stderr) == ("keyrouter: rules: /etc/nope does not exist: check "
                                       "KEYROUTER_RULES (a YAML file, or a folder of them)")
    bare = subprocess.run(["keyrouter", "check"], capture_output=True, text=True, check=False,
                          cwd=Path(SHIPPED).anchor, env={"PATH": str(BIN)})
    assert bare.returncode == 2 and first_line(bare.stderr) == (
        "keyrouter: rules: ./rules does not exist: give --rules PATH or set KEYROUTER_RULES "
        "(the default is ./rules) (a YAML file, or a folder of them)")
