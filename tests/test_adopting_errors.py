"""A new user's mistakes and the small things, each with the command that showed it and the first
line of its output (docs/getting-started-notes.md): normalize across files, strip_* typos, YAML
errors, --shift-dates against the real store, a store password, totalRows, `optouts overdue`,
`doctor` offline, exit codes in --help, the tests' Redis databases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from uuid import uuid4

import pytest
from redis_dbs import BENCH_DB, E2E_DB, STORE_DB, STORE_URL, WEB_DB, delete_namespace
from redis_server import free_port

from keyrouter.cli import main
from keyrouter.store.choice import redact_store_url

REPO = Path(__file__).resolve().parent.parent


def rules_in(folder: Path, **files: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def run(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYROUTER_", "ILETIMERKEZI_"))}
    return subprocess.run([sys.executable, "-m", "keyrouter.cli", *args], cwd=cwd,
                          env={**env, **extra}, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------ 5. normalize across files
def test_a_second_file_with_other_normalize_settings_is_named(tmp_path: Path, capsys) -> None:
    """keyrouter check (b.yaml without strip_prefixes) -> `rules/b.yaml:1: warning: normalize
    differs from rules/a.yaml:2: ...`; explain says whose settings applied."""
    rules = rules_in(tmp_path / "rules", **{
        "a.yaml": """\
            version: 1
            normalize: {strip_prefixes: [ACME]}
            rules:
              - {name: optout, keywords: [RET], handlers: [log]}
        """,
        "b.yaml": """\
            version: 1
            rules:
              - name: kampanya
                keywords: [KAMPANYA]
                handlers: [log]
                examples: {match: ["ACME KAMPANYA"]}
        """})
    assert main(["check", "--rules", str(rules)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"{rules}/b.yaml:1: warning: normalize differs from {rules}/a.yaml:2: "
                      "strip_prefixes: [] here, [ACME] there; this file's keywords and the texts "
                      "its rules see use its own settings (copy the section to share it)")
    assert err[1] == (f"{rules}/b.yaml:6: example 'ACME KAMPANYA' should match rule 'kampanya' "
                      "but routes to no rule (the default) (normalized: 'acme kampanya', with the "
                      f"settings of {rules}/b.yaml (no normalize: the defaults))")
    assert main(["explain", "--rules", str(rules), "ACME RET"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"normalize settings from: +{re.escape(str(rules))}/a.yaml:2", out), out


# ------------------------------------------------------------------ 6. strip_* typos
@pytest.mark.parametrize(("typo", "wanted"), [
    ("strip_prefix: [ACME]", "unknown key 'strip_prefix' in normalize (did you mean 'strip_prefixes'?)"),
    ("strip_punctuaton: true",
     "unknown key 'strip_punctuaton' in normalize (did you mean 'strip_punctuation'?)"),
    ("lowercase: true", "unknown key 'lowercase' in normalize (allowed: locale, fold_accents, "
                        "strip_punctuation, strip_prefixes)"),
])
def test_strip_typos_get_the_right_suggestion(tmp_path: Path, capsys, typo: str, wanted: str) -> None:
    """keyrouter check (normalize: {strip_prefix: ...}) -> `rules.yaml:3: unknown key
    'strip_prefix' in normalize (did you mean 'strip_prefixes'?)`."""
    path = tmp_path / "rules.yaml"
    path.write_text(f"version: 1\nnormalize:\n  {typo}\nrules:\n  - {{name: a, keywords: [A], "
                    "handlers: [log]}\n", encoding="utf-8")
    assert main(["check", "--rules", str(path)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"{path}:3: {wanted}"


# ------------------------------------------------------------------ 7. YAML errors
@pytest.mark.parametrize(("text", "line", "hint"), [
    ("version: 1\nrules:\n  - name: a\n    keywords: [A]\n   handlers: [log]\n", 5,
     "YAML syntax: did not find expected '-' indicator; check the indentation"),
    ('version: 1\nrules:\n  - name: a\n    pattern: "rez (\\d+)"\n    handlers: [log]\n', 4,
     "YAML syntax: found unknown escape character; inside double quotes a backslash starts an "
     "escape: write a regex in single quotes (pattern: 'rez (\\d+)')"),
    ("version: 1\nrules:\n\t- name: a\n", 3, "often a tab (indent with spaces only)"),
])
def test_yaml_errors_say_how_to_fix(tmp_path: Path, capsys, text: str, line: int, hint: str) -> None:
    """keyrouter check (a bad indentation) -> `rules.yaml:5: YAML syntax: did not find expected
    '-' indicator; check the indentation ...`."""
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["check", "--rules", str(path)]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"{path}:{line}: ") and hint in first, first


def test_a_bad_regex_is_the_only_error_of_its_rule(tmp_path: Path, capsys) -> None:
    """keyrouter check (pattern with a missing `]`, a reply using its group) -> one line."""
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nrules:\n  - name: a\n    pattern: 'rez (?P<code>[0-9+'\n"
                    "    handlers:\n      - reply: {text: 'code {code}'}\n", encoding="utf-8")
    assert main(["check", "--rules", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:4: pattern does not compile: missing ]: [0-9+ (RE2 syntax: docs/rules.md, Pattern syntax)"]


# ------------------------------------------------------------------ replay and the real store
def test_shift_dates_is_refused_without_sandbox_or_dry_run(tmp_path: Path, capsys) -> None:
    """keyrouter replay examples/inbox.json --shift-dates -> `keyrouter: --shift-dates invents
    receive and consent dates: ...`, exit 2, no store written."""
    code = main(["replay", str(REPO / "examples" / "inbox.json"), "--shift-dates", "--rules",
                 str(REPO / "rules"), "--store", f"sqlite:///{tmp_path}/real.sqlite3"])
    assert code == 2 and not (tmp_path / "real.sqlite3").exists()
    assert capsys.readouterr().err.splitlines()[0] == (
        "keyrouter: --shift-dates invents receive and consent dates: use it with --sandbox or "
        "--dry-run, never against the real provider and store")
    assert main(["replay", str(REPO / "examples" / "inbox.json"), "--shift-dates", "--dry-run",
                 "--rules", str(REPO / "rules")]) == 0


def test_no_store_password_in_any_output(tmp_path: Path) -> None:
    """keyrouter replay ... --sandbox --store redis://:PASSWORD@... -> `store: redis://:***@...`."""
    password = f"pw-{uuid4().hex}"
    namespace = f"adopt-{uuid4().hex[:12]}"
    url = STORE_URL.replace("redis://", f"redis://:{password}@", 1)
    try:
        done = run(REPO, "replay", "examples/inbox.json", "--sandbox", "--store", url,
                   KEYROUTER_NAMESPACE=namespace)
        assert done.returncode == 1, done.stderr  # the shipped inbox leaves one dead letter
        assert password not in done.stdout + done.stderr
        assert f"store: {redact_store_url(url)}" in done.stdout.splitlines()
        assert "dead letters: 1 (keyrouter dead-letters list --store URL)" in done.stdout
        listed = run(REPO, "dead-letters", "list", "--store", url, KEYROUTER_NAMESPACE=namespace)
        assert listed.returncode == 0 and password not in listed.stdout + listed.stderr
        down = run(REPO, "dead-letters", "list", "--store",
                   f"redis://:{password}@127.0.0.1:{free_port()}/0")
        assert down.returncode == 4 and password not in down.stdout + down.stderr
    finally:
        assert delete_namespace(STORE_URL, namespace) == 0
    assert redact_store_url("redis://user:p@ss:w@host:6379/2?x=1") == "redis://user:***@host:6379/2?x=1"
    assert redact_store_url("rediss+cluster://secret@h:1") == "rediss+cluster://***@h:1"
    assert redact_store_url("sqlite:///a.sqlite3") == "sqlite:///a.sqlite3"


# ------------------------------------------------------------------ 9. small things
def test_replay_says_when_total_rows_does_not_fit(tmp_path: Path, capsys) -> None:
    """keyrouter replay saved.json --dry-run (totalRows 5, 1 row) -> `keyrouter: warning:
    saved.json:1: totalRows is 5 but the answer holds 1 rows; ...`."""
    row = {"id": "1", "date": "2026-11-20 10:00:00", "sender": "+905351112233",
           "number": "+908505550000", "text": "RET"}
    for total, note in (("5", "totalRows is 5 but the answer holds 1 rows; the provider had more "
                              "rows than this answer holds"),
                        ("many", "totalRows 'many' is not a number (1 rows in the answer)")):
        saved = tmp_path / "saved.json"
        saved.write_text(json.dumps({"response": {"status": {"code": 200}, "orders": {
            "totalRows": total, "order": [row]}}}), encoding="utf-8")
        assert main(["replay", str(saved), "--dry-run", "--rules", str(REPO / "rules")]) == 0
        assert capsys.readouterr().err.splitlines()[0] == f"keyrouter: warning: {saved}:1: {note}"


def test_optouts_overdue_says_none_overdue(tmp_path: Path) -> None:
    """keyrouter optouts overdue (a store with nothing pending) -> `none overdue`, exit 0."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "version: 1\nrules:\n  - {name: a, keywords: [A], handlers: [log]}\n", encoding="utf-8")
    (tmp_path / "in.json").write_text("[]", encoding="utf-8")
    assert run(tmp_path, "replay", "in.json", "--sandbox").returncode == 0
    done = run(tmp_path, "optouts", "overdue", "--sandbox")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "none overdue\n"


def test_doctor_offline_says_the_provider_could_not_be_reached(tmp_path: Path) -> None:
    """keyrouter doctor (nothing listens at the base URL) -> `fail  credentials: the provider
    could not be reached: ...`; the later provider checks say why they did not run."""
    done = run(REPO, "doctor", ILETIMERKEZI_API_KEY="key-x", ILETIMERKEZI_API_HASH="hash-x",
               ILETIMERKEZI_BASE_URL=f"http://127.0.0.1:{free_port()}/",
               KEYROUTER_STORE=f"sqlite:///{tmp_path}/d.sqlite3")
    lines = done.stdout.splitlines()
    credentials = next(x for x in lines if "credentials:" in x)
    assert credentials.startswith("fail  credentials: the provider could not be reached: ")
    assert "skip  balance: not checked: the provider could not be reached" in lines
    assert not any("credentials did not work" in x for x in lines)


def test_help_lists_every_exit_code(capsys) -> None:
    """keyrouter --help -> the exit codes, 5 and 130 included."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "4 store or provider unreachable, 5 (run) stopped for a restart" in out
    assert "130 interrupted (Ctrl-C)" in out


# ------------------------------------------------------------------ 8. the tests' databases
def test_each_redis_purpose_has_one_documented_variable_and_database() -> None:
    """tests/redis_dbs.py is the only place a test names one of the tests' Redis databases on
    6379 (a database that holds keys: 11 to 14); the docs and the benchmarks' defaults agree."""
    named = re.compile(r"redis://127\.0\.0\.1:6379/\d+")
    for path in (REPO / "tests").rglob("*.py"):
        if path.name not in ("redis_dbs.py", "test_adopting_errors.py"):
            found = named.findall(path.read_text(encoding="utf-8"))
            assert not [f for f in found if f.endswith(("/11", "/12", "/13", "/14"))], path
    notes = (REPO / "docs" / "getting-started-notes.md").read_text(encoding="utf-8")
    for variable, db in (("KEYROUTER_TEST_WEB_REDIS_URL", WEB_DB), ("KEYROUTER_TEST_REDIS_URL", STORE_DB),
                         ("KEYROUTER_E2E_REDIS_URL", E2E_DB)):
        assert re.search(rf"`{variable}`.*\| *{db} *\|", notes), variable
    for bench in (REPO / "bench").glob("bench_*.py"):
        for found in named.findall(bench.read_text(encoding="utf-8")):
            assert found.endswith(f"/{BENCH_DB}"), (bench, found)
