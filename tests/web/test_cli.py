"""`keyrouter dashboard`'s refusals: one line and an exit code, before anything listens."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from keyrouter.cli import main
from keyrouter.cli.dashboard import is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "example.com"])
def test_non_loopback_host_needs_the_token(host: str, rules_path: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KEYROUTER_DASHBOARD_TOKEN", raising=False)
    store = f"sqlite:///{tmp_path}/k.sqlite3"
    assert main(["dashboard", "--host", host, "--rules", str(rules_path), "--store", store]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "KEYROUTER_DASHBOARD_TOKEN" in err[0] and "not a loopback" in err[0]


def test_missing_web_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, rules_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["dashboard", "--rules", str(rules_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["keyrouter: the dashboard needs the web extra (uvicorn is missing): "
                   "pip install 'keyrouter[web]'"]


def test_bad_rules_and_unreachable_store(write_rules, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # (a handler that cannot be imported is no reason to refuse: the dashboard never runs one)
    bad = write_rules("version: 1\nrules:\n  - {name: a, keywords: [RET], handlers: [log], colour: red}\n")
    assert main(["dashboard", "--rules", str(bad), "--store", "memory://"]) == 2
    assert "unknown key 'colour' in a rule" in capsys.readouterr().err
    good = write_rules("version: 1\nrules: []\n", name="good.yaml")
    assert main(["dashboard", "--rules", str(good), "--store", "redis://127.0.0.1:1/0"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0]
    assert main(["dashboard", "--rules", str(good), "--store", "ftp://x"]) == 2
    assert main(["dashboard", "--rules", str(good), "--store", "memory://", "--port", "0"]) == 2


def test_worker_modules_do_not_import_the_web_libraries() -> None:
    import subprocess

    code = ("import sys, keyrouter.cli, keyrouter.worker.loop, keyrouter.worker.runtime; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('starlette', 'jinja2', 'uvicorn', 'multipart', 'python_multipart')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
