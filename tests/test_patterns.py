"""Patterns run on RE2: linear time, clear `check` errors for what RE2 lacks."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from keyrouter.cli import main
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError
from keyrouter.rules.patterns import capture_groups, compile_pattern, first_chars, nested_repetition
from keyrouter.rules.router import Router


def check(path) -> subprocess.CompletedProcess[str]:
    """`keyrouter check` in its own process, as an operator runs it."""
    return subprocess.run([sys.executable, "-c", "from keyrouter.cli import main; raise SystemExit(main())",
                           "check", "--rules", str(path)], capture_output=True, text=True, timeout=60)


def pattern_rules(pattern: str) -> str:
    return f"""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            handlers: [log]
          - name: p
            pattern: '{pattern}'
            handlers: [log]
    """


def test_catastrophic_pattern_routes_a_40_character_text_fast_and_check_warns(write_rules) -> None:
    path = write_rules(pattern_rules("(a+)+b"))
    router = Router(load_rules(path))
    for text in ("a" * 40, "a" * 39 + "c", "a" * 40 + "b"):
        start = time.perf_counter()
        route = router.route(text)
        assert time.perf_counter() - start < 0.05  # Python's re: minutes for these
        assert (route.rule is not None) is text.endswith("b")
    done = check(path)
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"{path}:7: warning: pattern repeats a group that itself repeats")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        (r"(\\w+) \\1", "a backreference"),
        (r"(?P<w>\\w+) (?P=w)", "a named backreference"),
        (r"ret(?=x)", "a lookahead"),
        (r"ret(?!x)", "a lookahead"),
        (r"(?<=x)ret", "a lookbehind"),
        (r"(?<!x)ret", "a lookbehind"),
        (r"a++b", "a possessive quantifier"),
        (r"a*+b", "a possessive quantifier"),
        (r"(?>a+)b", "an atomic group"),
        (r"(a)?(?(1)b|c)", "a conditional"),
        (r"ret\\Z", "\\Z"),
        (r"(?x) r e t", "an inline flag RE2 lacks"),
    ],
)
def test_check_rejects_what_re2_lacks_with_file_line(write_rules, capsys, pattern, named) -> None:
    path = write_rules(pattern_rules(pattern.replace("\\\\", "\\")))
    assert main(["check", "--rules", str(path)]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()  # one line: RE2's own logging is switched off
    assert line.startswith(f"{path}:7: pattern: {named}")
    assert "is not supported (patterns use RE2 syntax, which matches in linear time)" in line


def test_other_compile_errors_and_duplicate_group_names(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: a, pattern: 'x{1001}', handlers: [log]}
          - {name: b, pattern: '(?P<n>a) (?P<n>b)', handlers: [log]}
          - {name: c, pattern: '[a-', handlers: [log]}
    """)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    found = [str(p) for p in info.value.problems]
    assert found[0] == (f"{path}:3: pattern does not compile: invalid repetition size: {{1001}} "
                        "(RE2 allows counts up to 1000)")
    assert found[1].startswith(f"{path}:4: pattern names the group 'n' twice")
    assert found[2].startswith(f"{path}:5: pattern does not compile: missing ]")


def test_named_groups_capture_in_both_spellings_and_unnamed_groups_do_not(write_rules) -> None:
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: rez, pattern: '(?:rez|rezervasyon) (?P<code>\\d{6})( ok)?', handlers: [log]}
          - {name: two, pattern: '(?<a>x+) (y)+ (?P<b>z+)', handlers: [log]}
    """)))
    assert router.route("Rez 123456 ok").match.captures == {"code": "123456"}
    assert router.route("xx y zzz").match.captures == {"a": "xx", "b": "zzz"}
    assert router.route("rezervasyon: 654321").match.captures == {"code": "654321"}


def test_groups_are_read_past_escapes_classes_and_quotes() -> None:
    source = r"(a)(?P<x>b)(?<y>c)(?:d)\(e\)[(f)][]( ][^](]\Q(g\E[[:alpha:](]"
    assert [(s, name) for s, _, name in capture_groups(source)] == [(0, None), (3, "x"), (11, "y")]


def test_folded_patterns_keep_file_order_with_tricky_syntax(write_rules) -> None:
    router = Router(load_rules(write_rules("""
        version: 1
        normalize: {strip_punctuation: false}
        rules:
          - {name: parens, pattern: 'a\\((?P<in>[^)]*)\\)', handlers: [log]}
          - {name: quoted, pattern: '\\Qa(b\\E(?P<rest>.*)', handlers: [log]}
          - {name: posix, pattern: '[[:digit:]]+x', handlers: [log]}
          - {name: flags, pattern: '(?i)a.*', handlers: [log]}
          - {name: later, pattern: 'a(?P<n>b)c', handlers: [log]}
    """)))
    assert router.route("a(bc)").match.captures == {"in": "bc"}
    assert (router.route("a(b!").match.rule, router.route("a(b!").match.captures) == (
        "quoted", {"rest": "!"})
    assert router.route("12x").match.rule == "posix"  # a first character Python's parser misreads
    assert router.route("abc").match.rule == "flags"  # the earlier rule wins over `later`


def test_lone_surrogates_and_long_texts_are_routed_safely(write_rules) -> None:
    router = Router(load_rules(write_rules("""
        version: 1
        rules:
          - {name: any, pattern: 'x (?P<rest>.*)', handlers: [log]}
    """)))
    route = router.route("x a\ud83d")  # half of an emoji from a split SMS
    assert route.rule is not None and route.match.captures == {"rest": "a\ufffd"}


def test_first_characters_and_nesting_are_inferred_conservatively() -> None:
    assert first_chars(r"(?:kod|code) \d+") == frozenset("kc")
    for unsure in (r"[[:alpha:]]x", r"(?i)ab", r"\pLx", r"a?b", r".*"):
        assert first_chars(unsure) is None
    assert nested_repetition(r"(a+)+b") and nested_repetition(r"(\w+\s?)*")
    assert not nested_repetition(r"(\d{4})+") and not nested_repetition(r"(?:rez|rezervasyon) \d{6}")


PIECES = ["a", "b", "ab", "a+", "b*", "(?:a|b)", "[ab]", "(?P<g>a)", "(b)", "a?", ".", "(?i)A"]


@given(st.lists(st.lists(st.sampled_from(PIECES), min_size=1, max_size=4), min_size=1,
                max_size=6),
       st.lists(st.text("abAB ", max_size=6), min_size=1, max_size=20))
def test_folding_agrees_with_trying_each_pattern_in_order(tmp_path_factory, parts, texts) -> None:
    sources = ["".join(p) for p in parts]
    assume(all(s.count("(?P<g>") <= 1 for s in sources))  # a name twice is a rules error
    path = tmp_path_factory.mktemp("r") / "rules.yaml"
    path.write_text("version: 1\nnormalize: {locale: none}\nrules:\n" + "".join(
        f"  - {{name: r{i}, pattern: '{s}', handlers: [log]}}\n" for i, s in enumerate(sources)))
    router = Router(load_rules(path))
    compiled = [compile_pattern(s) for s in sources]
    for text in texts:
        normalized = router.normalizer(text)
        want = next((i for i, c in enumerate(compiled) if c.fullmatch(normalized)), None)
        got = router.route(text)
        assert (int(got.rule.name[1:]) if got.rule else None) == want, (sources, normalized)
        if got.rule is not None:
            expected = compiled[want].fullmatch(normalized).groupdict()
            assert got.match.captures == {k: v for k, v in expected.items() if v is not None}


def test_check_prints_one_line_for_a_pattern_re2_refuses(write_rules) -> None:
    path = write_rules(pattern_rules(r"(\w+) \1"))
    done = check(path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{path}:7: pattern: a backreference (\\1) is not supported (patterns use RE2 syntax, "
        "which matches in linear time): match the text twice in a handler instead"]
