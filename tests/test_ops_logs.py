"""KEYROUTER_LOG_FORMAT / KEYROUTER_LOG_LEVEL: JSON lines from a real worker, bad values."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_support import Ops, ops_in

from keyrouter.ops.logs import LogConfigError, mask_text, read_config, setup_logging

RULES = """\
version: 1
rules:
  - name: hello
    keywords: [MERHABA]
    handlers: [ops_handlers:ok, log]
  - name: flaky
    keywords: [TEKRAR]
    handlers: [ops_handlers:fail_once]
"""
SENDERS = ("+905327318264", "+905417318265")


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    with ops_in(tmp_path, RULES, key="json-key-Zx81q", hash="json-hash-Rv73p") as o:
        yield o


def test_json_logs_parse_line_by_line_without_numbers_or_secrets(ops: Ops) -> None:
    hello = ops.fake.add_message("MERHABA", sender=SENDERS[0])["id"]
    flaky = ops.fake.add_message("TEKRAR", sender=SENDERS[1])["id"]
    done = ops.cli("run", "--once", KEYROUTER_LOG_FORMAT="json", KEYROUTER_LOG_LEVEL="debug")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line is one object
    assert lines
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert line["time"].endswith("+00:00")
    text = done.stderr
    for number in SENDERS:
        assert number not in text and number[1:] not in text and number[3:] not in text
    for secret in (ops.fake.key, ops.fake.hash):
        assert secret not in text
    # the plugin logged the full sender: masked, and tagged with the structured fields
    plugin = [x for x in lines if x["logger"] == "keyrouter.handler.ops_handlers:ok"]
    assert plugin and "+90532***8264" in plugin[0]["message"]
    assert plugin[0]["message_id"] == hello and plugin[0]["rule"] == "hello"
    assert plugin[0]["handler"] == "ops_handlers:ok" and plugin[0]["attempt"] == 1
    retry = [x for x in lines if x["message"].startswith("retry in")]
    assert retry and retry[0]["message_id"] == flaky and retry[0]["handler"] == "ops_handlers:fail_once"
    assert retry[0]["level"] == "WARNING"
    assert any(x["logger"] == "keyrouter.handler.log" for x in lines)


@pytest.mark.parametrize(("var", "bad"), [("KEYROUTER_LOG_LEVEL", "loud"), ("KEYROUTER_LOG_FORMAT", "xml")])
def test_a_bad_log_setting_is_one_line_naming_it_and_exit_2(ops: Ops, var: str, bad: str) -> None:
    for command in (("check",), ("run", "--once"), ("doctor",)):
        done = ops.cli(*command, **{var: bad})
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.count("\n") == 1 and var in done.stderr and bad in done.stderr
        assert "Traceback" not in done.stderr


def test_text_and_json_mask_numbers_alike() -> None:
    assert mask_text("from +905354104818 and 05354104819, order 1234567") == \
        "from +90535***4818 and +90535***4819, order 1234567"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    setup_logging({"KEYROUTER_LOG_FORMAT": "json"}, stream=out)
    try:
        logging.getLogger("keyrouter.test").warning("sender %s", "905354104818",
                                                    extra={"message_id": "m1", "rule": "r"})
        line = json.loads(out.getvalue())
        assert line["message"] == "sender +90535***4818"
        assert line["message_id"] == "m1" and line["rule"] == "r" and "handler" not in line
        out2 = io.StringIO()
        setup_logging({}, stream=out2)
        logging.getLogger("keyrouter.test").warning("sender %s", "905354104818")
        assert out2.getvalue().rstrip().endswith("keyrouter.test: sender +90535***4818")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert read_config({"KEYROUTER_LOG_LEVEL": "warning", "KEYROUTER_LOG_FORMAT": "JSON"}) == (30, "json")
    with pytest.raises(LogConfigError, match="KEYROUTER_LOG_FORMAT"):
        read_config({"KEYROUTER_LOG_FORMAT": "yaml"})
