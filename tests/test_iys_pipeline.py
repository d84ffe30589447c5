"""The shipped rules with their İYS lines enabled: `keyrouter check` validates them, and the
whole pipeline records opt-outs at the fake provider and the fake İYS, with the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyrouter.cli import main
from keyrouter.testing import FakeIletiMerkezi, FakeIys, pipeline, process

ROOT = Path(__file__).resolve().parent.parent


def enabled_rules(tmp_path: Path) -> Path:
    text = (ROOT / "rules" / "main.yaml").read_text(encoding="utf-8")
    assert "      # - iys\n" in text and "      # - iys: {status: ONAY}" in text
    text = text.replace("      # - iys\n", "      - iys\n")
    text = text.replace("# - iys: {status: ONAY}", "- iys: {status: ONAY}")
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_accepts_the_shipped_iys_lines(tmp_path: Path, capsys) -> None:
    assert main(["check", "--rules", str(enabled_rules(tmp_path))]) == 0


def test_check_names_the_line_of_bad_iys_params(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nrules:\n  - name: optout\n    keywords: [RET]\n    handlers:\n"
                    "      - iys: {status: RED}\n", encoding="utf-8")
    assert main(["check", "--rules", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:6" in err and "RET (opt-out) or ONAY" in err


@pytest.mark.anyio
async def test_opt_out_and_back_in_through_the_pipeline(tmp_path: Path) -> None:
    rules = enabled_rules(tmp_path)
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        iys.add_record("+905321112233", "ONAY")
        async with pipeline(rules, fake=provider, **iys.settings()) as runtime:
            ret = provider.add_message("ILT AHKTEST RET", sender="05321112233", date="2026-11-27 09:15:00")
            never = provider.add_message("IPTAL", sender="05324445566", date="2026-11-27 09:16:00")
            code = provider.add_message("RET", sender="7889", date="2026-11-27 09:17:00")
            report = await process(runtime, [ret, never, code])
            assert report.done == 2
            start = provider.add_message("BASLA", sender="05321112233", date="2026-11-28 10:00:00")
            assert (await process(runtime, [start])).done == 1
            ledger = await runtime.store.optouts()
            dead = await runtime.store.dead_letters()
    assert "+905321112233" not in provider.blacklist
    lines = {(e.message_id, e.action, e.outcome) for e in ledger}
    assert len(ledger) == 6 and lines == {
        (ret["id"], "blacklist", None), (ret["id"], "iys_ret", "recorded"),
        (never["id"], "blacklist", None), (never["id"], "iys_ret", "nothing_to_withdraw"),
        (start["id"], "unblacklist", None), (start["id"], "iys_onay", "recorded"),
    }
    assert [(r["status"], r["consentDate"]) for r in iys.records[1:]] == [
        ("RET", "2026-11-27 09:15:00"), ("ONAY", "2026-11-28 10:00:00")]
    [letter] = dead
    assert letter.id == code["id"] and "not a mobile number" in letter.error
    assert iys.password not in letter.error


def test_replay_sandbox_reaches_the_fake_iys(tmp_path: Path, capsys, monkeypatch) -> None:
    for name in ("IYS_USERNAME", "IYS_PASSWORD", "IYS_CODE", "IYS_BRAND_CODE", "IYS_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    inbox = tmp_path / "inbox.jsonl"
    inbox.write_text('{"id": "a1", "date": "2026-11-27 09:15:00", "sender": "05321112233", "text": "BASLA"}\n'
                     '{"id": "a2", "date": "2026-11-27 09:20:00", "sender": "05321112233", "text": "RET"}\n',
                     encoding="utf-8")
    store = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    rules = str(enabled_rules(tmp_path))
    code = main(["replay", str(inbox), "--sandbox", "--rules", rules, "--store", store])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "sandbox İYS: 2 consent records" in out


def test_a_worker_killed_after_iys_recorded_costs_no_second_record(tmp_path: Path) -> None:
    """SIGKILL a real `keyrouter replay` while İYS has recorded the RET but not yet answered; the
    next run asks İYS, finds the decision held, sends nothing, and writes the ledger line."""
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import time

    from keyrouter.store.sqlite import SqliteStore

    rules = tmp_path / "iys-only.yaml"
    rules.write_text("version: 1\nrules:\n  - name: optout\n    keywords: [RET]\n    handlers: [iys]\n",
                     encoding="utf-8")
    inbox = tmp_path / "inbox.jsonl"
    inbox.write_text('{"id": "k1", "date": "2026-11-27 09:15:00", "sender": "05321112233", "text": "RET"}\n',
                     encoding="utf-8")
    db = tmp_path / "k.sqlite3"
    with FakeIys() as iys:
        iys.add_record("+905321112233", "ONAY")
        iys.fail_next("consents", "hang")
        env = {**os.environ, "IYS_USERNAME": iys.username, "IYS_PASSWORD": iys.password,
               "IYS_CODE": iys.iys_code, "IYS_BRAND_CODE": iys.brand_code, "IYS_BASE_URL": iys.base_url,
               "KEYROUTER_LEASE": "1", "KEYROUTER_RETRY_BASE": "0.1", "KEYROUTER_LOG_LEVEL": "WARNING"}
        command = [sys.executable, "-m", "keyrouter.cli", "replay", str(inbox), "--rules", str(rules),
                   "--store", f"sqlite:///{db}"]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(iys.records) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(iys.records) == 2, proc.communicate(timeout=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(1.2)  # the dead worker's lease runs out
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(iys.records) == 2
        assert [r.endpoint for r in iys.requests].count("consents") == 1

    async def ledger() -> list:
        async with SqliteStore(db, "default") as store:
            return [e for e in await store.optouts() if e.action == "iys_ret"]

    [line] = asyncio.run(ledger())
    assert line.message_id == "k1" and line.outcome == "already"
