"""`keyrouter doctor`: the command around keyrouter.ops.doctor's checks."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from keyrouter.cli.common import command
from keyrouter.ops.doctor import STATUSES, diagnose, exit_code
from keyrouter.settings import Settings


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = command(subparsers, "doctor", "check this host's set-up before production (0 ok, 1 warnings, "
                "2 failures)", "keyrouter doctor --store redis://redis.internal:6379/0")
    p.add_argument("--rules", help="rules file or folder (env KEYROUTER_RULES, default ./rules)")
    p.add_argument("--store", help="store URL (env KEYROUTER_STORE)")
    p.set_defaults(func=cmd_doctor)
    return p


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    results = asyncio.run(diagnose(settings, lambda c: print(c.line(), flush=True)))
    code = exit_code(results)
    counts = {s: sum(c.status == s for c in results) for s in STATUSES}
    print(f"{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failures, "
          f"{counts['skip']} not checked")
    return code
