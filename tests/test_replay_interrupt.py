"""A replay stopped by one Ctrl-C: a real `keyrouter replay` process over 50,000 rows gets SIGINT;
its report says exactly what the store holds, and it exits 130 (docs/getting-started-notes.md)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from keyrouter.store import open_store

ROWS = 50_000
RULES = """\
version: 1
rules:
  - name: kampanya
    keywords: [KAMPANYA]
    handlers: [log]
default:
  handlers: [log]
"""


def write_inbox(path: Path) -> list[str]:
    ids = [str(7_000_000 + i) for i in range(ROWS)]
    rows = [{"id": i, "date": f"2026-11-20 10:{n // 60 % 60:02d}:{n % 60:02d}",
             "sender": f"+90535{n % 5000:07d}", "number": "+908505550000",
             "text": "KAMPANYA" if n % 2 else "MERHABA"} for n, i in enumerate(ids)]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return ids


def unfinished(url: str, ids: list[str]) -> set[str]:
    async def ask() -> set[str]:
        async with open_store(url) as store:
            return set(await store.unfinished(ids))
    return asyncio.run(ask())


def test_one_ctrl_c_reports_what_the_store_holds_and_exits_130(tmp_path: Path) -> None:
    """keyrouter replay big.json --sandbox --store sqlite:///big.sqlite3 --shift-dates, one
    Ctrl-C -> `interrupted: N of 50,000 done, M not started; run the same command again to
    continue`, exit 130."""
    ids = write_inbox(tmp_path / "big.json")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "main.yaml").write_text(RULES, encoding="utf-8")
    url = "sqlite:///big.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYROUTER_", "ILETIMERKEZI_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyrouter.cli", "replay", "big.json", "--sandbox", "--store", url,
         "--shift-dates"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    handled = [0]

    def drain() -> None:  # the log handler writes one line a message: count them
        assert proc.stderr is not None
        for line in proc.stderr:
            handled[0] += "inbound sms" in line

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while handled[0] < 500 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the replay ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    reader.join(timeout=10)
    assert proc.returncode == 130, out
    line = next(x for x in out.splitlines() if x.startswith("interrupted:"))
    found = re.fullmatch(r"interrupted: ([\d,]+) of 50,000 done, ([\d,]+) not started; "
                         r"run the same command again to continue", line)
    assert found, line
    done, not_started = (int(g.replace(",", "")) for g in found.groups())
    left = unfinished(f"sqlite:///{tmp_path}/big.sqlite3", ids)
    assert done == ROWS - len(left) and not_started == len(left)
    assert 500 <= done < ROWS  # stopped part-way: it did not run to the end after the signal
    assert "finished before" not in out
