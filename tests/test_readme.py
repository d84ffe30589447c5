"""The README stays true to the tree: its layout names every module, its rules excerpt is the
shipped rules file, and it names every setting, every command and the test variables."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

from keyrouter.cli import build_parser
from keyrouter.settings import _ENV

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_the_rules_excerpt_is_the_shipped_file() -> None:
    excerpt = re.search(r"## Rules\n.*?```yaml\n(.*?)```", README, re.S)
    assert excerpt, "README.md, Rules: no yaml block"
    shown = yaml.safe_load(excerpt.group(1))
    shipped = yaml.safe_load((ROOT / "rules" / "main.yaml").read_text(encoding="utf-8"))
    for document in (shown, shipped):  # the README shortens the examples
        for rule in document["rules"]:
            rule.pop("examples", None)
    assert shown == shipped


def test_every_setting_command_and_test_variable_is_named() -> None:
    config = section("Configuration")
    missing = [var for var in _ENV.values() if f"`{var}`" not in config and var not in config]
    assert not missing, f"README.md, Configuration: add {missing}"
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = section("Commands")
    missing = [name for name in sub.choices if f"`keyrouter {name}" not in commands]
    assert not missing, f"README.md, Commands: add {missing}"
    for var in ("KEYROUTER_TEST_REDIS_URL", "KEYROUTER_E2E_REDIS_URL"):
        assert var in README
