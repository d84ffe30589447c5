"""Bounded rules parsing: a bad rules file is one line and exit 2 from
`keyrouter check`, in bounded time and memory, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keyrouter.cli import main
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError
from keyrouter.settings import DEFAULT_MAX_BYTES, Settings

#: The child imports keyrouter first, then times `check` alone and reports its peak memory.
CHILD = """
import contextlib, io, json, sys, time
from keyrouter.cli import main
err = io.StringIO()
start = time.perf_counter()
with contextlib.redirect_stderr(err):
    code = main(["check", "--rules", sys.argv[1]])
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a big pytest process
# would report its parent's peak
with open("/proc/self/status") as status:
    peak_mb = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
print(json.dumps({"code": code, "seconds": seconds, "peak_mb": peak_mb, "err": err.getvalue()}))
"""

ALIAS_BOMB = """version: 1
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
RULE = "  - name: a\n    keywords: [{keyword}]\n    handlers: [log]\n"


def check_in_child(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # the child itself never fails
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("name", "text", "line", "message"),
    [
        ("alias bomb", ALIAS_BOMB, 6, "YAML aliases expand this file past"),
        ("5,000-deep flow nesting", "version: 1\nrules: " + "[" * 5000 + "]" * 5000 + "\n", 2,
         "YAML syntax: exceeded maximum nesting depth"),
        ("5,000-deep block nesting", "version: 1\nrules:\n" + "- " * 5000 + "a\n", 3,
         "nesting deeper than 32 levels"),
        ("5,000-deep maps", "version: 1\nrules: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", 2,
         "nesting deeper than 32 levels"),
        ("!!python/name", "version: 1\nrules:\n  - name: !!python/name:os.system x\n", 3,
         "YAML tag !!python/name:os.system is not allowed in a rules file"),
        ("!!python/object/apply as a keyword",
         "version: 1\nrules:\n" + RULE.format(keyword="!!python/object/apply:os.system [echo]"), 4,
         "YAML tag !!python/object/apply:os.system is not allowed"),
        ("!!python/object/new", "version: 1\nx: !!python/object/new:os.system [echo]\n", 2,
         "YAML tag !!python/object/new:os.system is not allowed"),
        ("!!python/module", "version: 1\nx: !!python/module:os\n", 2,
         "YAML tag !!python/module:os is not allowed"),
        ("a local tag", "version: 1\nrules:\n" + RULE.format(keyword="!mine A"), 4,
         "YAML tag !mine is not allowed"),
        ("a recursive alias", "version: 1\nrules: &r [*r]\n", 2, "YAML alias *r inside its own anchor"),
        ("an oversized file", "# " + "x" * (DEFAULT_MAX_BYTES + 10) + "\nversion: 1\n", 1,
         f"too large: {DEFAULT_MAX_BYTES + 24:,} bytes, and rules files may hold "
         f"{DEFAULT_MAX_BYTES:,} bytes in all (raise KEYROUTER_RULES_MAX_BYTES if that is meant)"),
    ],
)
def test_bad_rules_files_exit_2_with_one_line_in_bounded_time_and_memory(
        tmp_path, name, text, line, message) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    got = check_in_child(path)
    assert got["code"] == 2, name
    (printed,) = got["err"].splitlines()
    assert printed.startswith(f"{path}:{line}: {message}"), printed
    assert got["seconds"] < 2, name
    assert got["peak_mb"] < 200, name


def test_aliases_that_share_a_value_still_work(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: a
            keywords: [RET]
            handlers: &h [log, {reply: {text: ok}}]
          - name: b
            keywords: [STOP]
            handlers: *h
    """)
    first, second = load_rules(path).rules
    assert [h.name for h in second.handlers] == ["log", "reply"] == [h.name for h in first.handlers]


def test_standard_tags_are_plain_values(write_rules) -> None:
    path = write_rules("""
        version: !!int 1
        rules:
          - {name: !!str a, keywords: [!!str 0850], handlers: [log]}
    """)
    (rule,) = load_rules(path).rules
    assert rule.name == "a" and rule.keywords[0].normalized == "0850"


def test_a_second_document_is_refused(write_rules) -> None:
    path = write_rules("version: 1\n---\nversion: 1\n")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(info.value) == f"{path}:2: a rules file is one YAML document (no second `---`)"


def test_the_limit_counts_every_file_of_a_folder_and_is_a_setting(write_rules, tmp_path,
                                                                   monkeypatch, capsys) -> None:
    body = "version: 1\nrules:\n" + RULE.format(keyword="A")
    write_rules(body, "a.yaml")
    write_rules(body.replace("name: a", "name: b").replace("[A]", "[B]"), "b.yaml")
    size = len(body.encode())
    assert len(load_rules(tmp_path, 2 * size).rules) == 2
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path, 2 * size - 1)
    assert str(info.value).startswith(f"{tmp_path / 'b.yaml'}:1: too large:")
    assert Settings().rules_max_bytes == DEFAULT_MAX_BYTES
    monkeypatch.setenv("KEYROUTER_RULES_MAX_BYTES", str(2 * size - 1))
    with pytest.raises(RulesError):  # callers without Settings (reload, doctor) read it too
        load_rules(tmp_path)
    monkeypatch.setenv("KEYROUTER_RULES_MAX_BYTES", "lots")
    assert len(load_rules(tmp_path).rules) == 2  # Settings reports the bad value, see below
    assert main(["check", "--rules", str(tmp_path)]) == 2  # a bad setting: exit 2
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv("KEYROUTER_RULES_MAX_BYTES", str(size))
    monkeypatch.setenv("KEYROUTER_RULES", str(tmp_path))
    assert main(["check"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'b.yaml'}:1: too large: {size:,} bytes, and rules files may hold {size:,} "
        "bytes in all (raise KEYROUTER_RULES_MAX_BYTES if that is meant)"]
