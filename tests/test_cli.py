from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from keyrouter.cli import main

SHIPPED = str(Path(__file__).parent.parent / "rules")


def test_check_passes_on_the_shipped_rules(capsys) -> None:
    assert main(["check", "--rules", SHIPPED]) == 0
    out = capsys.readouterr().out
    assert "rules valid" in out and "examples hold" in out


def test_check_reports_every_problem_and_exits_2(write_rules, capsys) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: a, keywords: [RET], handlers: [log], colour: red}
          - {name: b, pattern: '(', handlers: [log]}
    """)
    assert main(["check", "--rules", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{path}:3: unknown key 'colour' in a rule (allowed: name, keywords, pattern, "
                   "match, fuzzy, receivers, max_age, priority, timeout, handlers, examples)"]
    # shape errors stop that file
    path = write_rules("""
        version: 1
        rules:
          - {name: a, keywords: [RET], handlers: [nope]}
          - {name: b, pattern: '(', handlers: [log]}
    """)
    assert main(["check", "--rules", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith(f"{path}:3: unknown handler 'nope'")
    assert err[1].startswith(f"{path}:4: pattern does not compile")


def test_check_runs_examples(write_rules, capsys) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            handlers: [log]
            examples:
              match: ["ret.", "retro"]
              no_match: ["RET!", "iptal"]
          - name: local
            keywords: [ANKET]
            receivers: ["7889"]
            handlers: [log]
            examples: {match: [anket]}
    """)
    assert main(["check", "--rules", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:7: example 'retro' should match rule 'optout' but routes to no rule (the default) "
        f"(normalized: 'retro', with the settings of {path} (no normalize: the defaults))",
        f"{path}:8: example 'RET!' should not match rule 'optout' but does (normalized: 'ret', "
        f"with the settings of {path} (no normalize: the defaults))",
    ]


def test_check_warnings_do_not_fail(write_rules, capsys) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: a, keywords: [RET], fuzzy: 1, handlers: [log]}
    """)
    assert main(["check", "--rules", str(path)]) == 0
    assert "warning: fuzzy ignored for 'RET'" in capsys.readouterr().err


def test_explain_json_has_exactly_the_spec_fields(capsys) -> None:
    assert main(["explain", "--rules", SHIPPED, "--json", "ILT AHKTEST RET", "anket b", "merhaba"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    fields = {"text", "normalized", "rule", "keyword", "captures", "fuzzy", "priority", "handlers"}
    assert all(set(line) == fields for line in lines)
    assert [line["priority"] for line in lines] == ["high", "normal", "normal"]
    assert lines[0]["normalized"] == "ret" and lines[0]["rule"] == "optout" and lines[0]["keyword"] == "RET"
    assert lines[0]["handlers"][0] == {"reply": {"text": "Talebiniz alindi, listeden cikarildiniz."}}
    assert lines[1]["captures"] == {"choice": "b"} and lines[1]["rule"] == "survey"
    assert lines[2]["rule"] is None and lines[2]["handlers"] == ["log"]


def test_explain_text_shows_steps_and_why(capsys) -> None:
    main(["explain", "--rules", SHIPPED, "ILT AHKTEST İPTAL!!", "ipatl", "merhaba"])
    out = capsys.readouterr().out
    assert "lowercase (tr):" in out and "'ılt ahktest iptal!!'" in out
    assert "prefixes stripped:" in out
    assert "-> rule 'optout'" in out and "exact keyword 'IPTAL'" in out
    assert "priority: high" in out
    assert "fuzzy match of keyword 'IPTAL' at distance 1" in out
    assert "-> no rule matched; default handlers: log" in out


def test_explain_receiver_flag(write_rules, capsys) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: sc, keywords: [RET], receivers: ['7889'], handlers: [log]}
    """)
    main(["explain", "--rules", str(path), "--json", "--receiver", "7889", "RET"])
    main(["explain", "--rules", str(path), "--json", "RET"])
    first, second = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert first["rule"] == "sc" and second["rule"] is None


def test_console_script_double_dash_and_env_rules(tmp_path) -> None:
    env = {"KEYROUTER_RULES": SHIPPED, "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(["keyrouter", "explain", "--json", "--", "-RET", "--help"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(x) for x in done.stdout.splitlines())
    assert first["text"] == "-RET" and first["rule"] == "optout"
    assert second["text"] == "--help" and second["rule"] is None


def test_console_script_bad_rules_exit_2(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules: [\n")
    env = {"PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(["keyrouter", "check", "--rules", str(bad)], capture_output=True,
                          text=True, env=env, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{bad}:")


def test_bad_store_url_and_bad_settings_exit_2(tmp_path, capsys, monkeypatch) -> None:
    inbox = tmp_path / "inbox.jsonl"
    inbox.write_text('{"id": "1", "text": "RET"}\n')
    assert main(["replay", str(inbox), "--rules", SHIPPED, "--store", "bogus://x"]) == 2
    assert "unsupported store URL scheme 'bogus'" in capsys.readouterr().err
    monkeypatch.setenv("KEYROUTER_HORIZON", "forever")
    assert main(["replay", str(inbox), "--rules", SHIPPED, "--store", "memory://"]) == 2
    assert "'forever' is not a duration" in capsys.readouterr().err
    monkeypatch.setenv("KEYROUTER_HORIZON", "30d")
    monkeypatch.setenv("KEYROUTER_MAX_ATTEMPTS", "zero")
    assert main(["replay", str(inbox), "--rules", SHIPPED, "--store", "memory://"]) == 2
    assert capsys.readouterr().err.startswith("keyrouter: invalid setting: KEYROUTER_MAX_ATTEMPTS='zero'")


def test_replay_rejects_unreadable_input_with_file_and_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "RET"}\n{"id": 2,\n')
    assert main(["replay", str(bad), "--rules", SHIPPED, "--store", "memory://"]) == 2
    assert f"{bad}:2: invalid JSON" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.json"), "--rules", SHIPPED]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_replay_dry_run_routes_without_touching_the_store(tmp_path, capsys) -> None:
    saved = Path(__file__).parent.parent / "examples" / "inbox.json"
    state = tmp_path / "state.sqlite3"
    assert main(["replay", str(saved), "--rules", SHIPPED, "--dry-run",
                 "--store", f"sqlite:///{state}"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["id"] == "1001" and lines[0]["rule"] == "optout"
    assert {"id", "text", "normalized", "rule", "handlers"} <= set(lines[0])
    assert not state.exists()


def test_run_without_credentials_exits_2(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ILETIMERKEZI_API_KEY", raising=False)
    monkeypatch.delenv("ILETIMERKEZI_API_HASH", raising=False)
    assert main(["run", "--once", "--rules", SHIPPED, "--store", "memory://"]) == 2
    assert "ILETIMERKEZI_API_KEY" in capsys.readouterr().err


def test_explain_shows_entry_timeouts(write_rules, capsys) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: hook
            keywords: [HOOK]
            timeout: 30s
            handlers:
              - log
              - webhook: {url: "https://example.com/h"}
                timeout: 2.5
    """)
    assert main(["explain", "--rules", str(path), "--json", "hook"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["priority"] == "normal"
    assert line["handlers"] == [{"log": None, "timeout": 30.0},
                                {"webhook": {"url": "https://example.com/h"}, "timeout": 2.5}]
    main(["explain", "--rules", str(path), "hook"])
    assert "handlers: log (timeout 30s), webhook (timeout 2.5s)" in capsys.readouterr().out
