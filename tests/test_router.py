from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import MAX_PATTERN_TEXT, Router


@pytest.fixture
def router(write_rules):
    def build(text: str) -> Router:
        return Router(load_rules(write_rules(text)))

    return build


def test_first_rule_in_file_order_wins(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: pattern_first, pattern: 'ret', handlers: [log]}
          - {name: keyword_second, keywords: [RET], handlers: [log]}
          - {name: words, keywords: [RET], match: first_word, handlers: [log]}
    """)
    assert r.route("RET").match.rule == "pattern_first"
    assert r.route("ret lütfen").match.rule == "words"


def test_exact_or_pattern_beats_an_earlier_fuzzy_rule(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: fuzzy_first, keywords: [IPTAL], fuzzy: 1, handlers: [log]}
          - {name: exact_later, keywords: [IPTL], handlers: [log]}
          - {name: pattern_later, pattern: 'ipt[x]l', handlers: [log]}
    """)
    assert r.route("iptl").match.rule == "exact_later"
    assert r.route("iptxl").match.rule == "pattern_later"
    m = r.route("iptak").match
    assert (m.rule, m.fuzzy, m.keyword, m.distance) == ("fuzzy_first", True, "IPTAL", 1)
    assert r.route("iptal").match.fuzzy is False


def test_among_fuzzy_matches_file_order_wins(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: a, keywords: [ABCDEF], fuzzy: 2, handlers: [log]}
          - {name: b, keywords: [ABCDEX], fuzzy: 1, handlers: [log]}
    """)
    assert r.route("abcdex!").match.rule == "b"  # exact beats fuzzy
    assert r.route("abcdxx").match.rule == "a"  # both fuzzy: the earlier rule


@pytest.mark.parametrize(
    ("text", "distance"),
    [("iptal", 0), ("iptl", 1), ("ipttal", 1), ("iptak", 1), ("ipatl", 1),
     ("pital", 1), ("ipa", None), ("iptalxx", None), ("ıpatl", 1)],
)
def test_fuzzy_counts_insert_delete_substitute_and_swap(router, text, distance) -> None:
    r = router("""
        version: 1
        rules:
          - {name: optout, keywords: [IPTAL], fuzzy: 1, handlers: [log]}
    """)
    m = r.route(text).match
    if distance is None:
        assert m is None
    else:
        assert m is not None and m.distance == distance and m.fuzzy is (distance > 0)


def test_fuzzy_two_and_short_keywords_never_fuzzy(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: long, keywords: [REZERVASYON], fuzzy: 2, handlers: [log]}
          - {name: short, keywords: [RET], fuzzy: 2, handlers: [log]}
    """)
    assert r.route("rezrvasyonn").match.distance == 2
    assert r.route("rezrvsyonnn").match is None
    assert r.route("rat").match is None
    assert r.route("ret").match.rule == "short"


def test_first_word_multi_word_keywords_and_rest(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: all, keywords: [STOP, "STOP ALL"], match: first_word, handlers: [log]}
          - {name: survey, keywords: [ANKET], match: first_word, fuzzy: 1, handlers: [log]}
    """)
    m = r.route("Stop all, please!").match
    assert (m.keyword, m.captures) == ("STOP ALL", {"rest": "please"})
    assert r.route("stop").match.captures == {"rest": ""}
    assert r.route("stopall").match is None
    fuzzy = r.route("ankte b").match
    assert (fuzzy.rule, fuzzy.fuzzy, fuzzy.captures) == ("survey", True, {"rest": "b"})


def test_multi_word_exact_keyword(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: all, keywords: ["STOP ALL"], handlers: [log]}
    """)
    assert r.route("STOP  ALL!").match.keyword == "STOP ALL"
    assert r.route("stop all now").match is None


def test_patterns_match_the_whole_text_and_named_groups_capture(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: survey, pattern: '(?:survey|anket) (?P<choice>[ab])', handlers: [log]}
          - {name: rez, pattern: 'rez (?P<code>\\d{6})', handlers: [log]}
          - {name: same_names, pattern: 'x (?P<choice>\\w+) (\\w+)', handlers: [log]}
          - {name: re2_syntax, pattern: '(?<first>[[:alpha:]]+) y \\pN+', handlers: [log]}
          - {name: scoped_flag, pattern: '(?:(?i)İ)z', handlers: [log]}
    """)
    assert r.route("ANKET: B").match.captures == {"choice": "b"}
    assert r.route("anket b c").match is None  # not the whole text
    assert r.route("REZ 123456").match.captures == {"code": "123456"}
    assert r.route("rez 1234567").match is None
    assert r.route("x foo bar").match.captures == {"choice": "foo"}  # unnamed groups: not captures
    assert r.route("x foo").match is None
    m = r.route("abc y ٣4").match  # POSIX classes, \\pN and (?<name>...): RE2 syntax
    assert (m.rule, m.captures) == ("re2_syntax", {"first": "abc"})
    assert r.route("İz").match is None  # normalized to 'iz': the flag is scoped to its group


def test_receivers_filter(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: shortcode, keywords: [RET], receivers: ['7889'], handlers: [log]}
          - {name: line, keywords: [RET], receivers: ['0850 123 45 67'], handlers: [log]}
          - {name: pattern, pattern: 'anket (?P<c>a)', receivers: ['7889'], handlers: [log]}
          - {name: anywhere, pattern: 'anket (?P<c>.)', handlers: [log]}
    """)
    assert r.route("RET", "7889").match.rule == "shortcode"
    assert r.route("RET", "+908501234567").match.rule == "line"
    assert r.route("RET", "+905551112233").match is None
    assert r.route("RET").match is None
    assert r.route("anket a", "7889").match.rule == "pattern"
    assert r.route("anket a", "1234").match.rule == "anywhere"


def test_default_handlers_when_nothing_matches(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: a, keywords: [A], handlers: [log]}
        default:
          handlers: [{log: {include_text: true}}]
    """)
    route = r.route("merhaba")
    assert route.match is None and route.rule is None
    assert [(h.name, dict(h.params)) for h in route.handlers] == [("log", {"include_text": True})]
    assert route.normalized == "merhaba"
    assert [h.name for h in r.route("a").handlers] == ["log"]


def test_each_file_normalizes_with_its_own_settings(write_rules, tmp_path) -> None:
    write_rules("""
        version: 1
        normalize: {strip_prefixes: [ILT]}
        rules:
          - {name: prefixed, keywords: [RET], handlers: [log]}
    """, "a.yaml")
    write_rules("""
        version: 1
        normalize: {fold_accents: false}
        rules:
          - {name: accents, keywords: [ŞİKAYET], handlers: [log]}
          - {name: ilt, keywords: [ILT RET], handlers: [log]}
    """, "b.yaml")
    r = Router(load_rules(tmp_path))
    assert r.route("ILT RET").match.rule == "prefixed"  # a.yaml strips, and comes first
    assert r.route("şikayet").match.rule == "accents"
    assert r.route("şikayet").normalized == "şikayet"
    assert r.route("sikayet").match is None


def test_patterns_skip_texts_over_the_bound(router) -> None:
    r = router("""
        version: 1
        rules:
          - {name: any, pattern: '.*', handlers: [log]}
    """)
    assert r.route("a" * MAX_PATTERN_TEXT).match.rule == "any"
    assert r.route("a" * (MAX_PATTERN_TEXT + 1)).match is None


# ------------------------------------------------------------------ differential test
def reference_route(rules, text: str, receiver: str | None):
    """The documented semantics (docs/rules.md, Matching), written the slow and obvious way."""
    from keyrouter.message import canonical_receiver
    from keyrouter.rules.fuzzy import distance

    canonical = canonical_receiver(receiver) if receiver else ""
    for rule in rules.rules:  # exact, first word, pattern: first rule wins
        if not rule.accepts(canonical):
            continue
        norm = rule.normalizer(text)
        if rule.pattern is not None:
            if len(norm) <= MAX_PATTERN_TEXT and rule.pattern.fullmatch(norm):
                return rule.name, False
            continue
        for kw in sorted(rule.keywords, key=lambda k: -len(k.normalized.split())):
            words = norm.split(" ")
            n = len(kw.normalized.split(" "))
            first = rule.match == "first_word" and words[:n] == kw.normalized.split(" ")
            if norm == kw.normalized or first:
                return rule.name, False
    for rule in rules.rules:  # then fuzzy: first rule wins
        if not rule.accepts(canonical):
            continue
        norm = rule.normalizer(text)
        for kw in rule.keywords:
            if not kw.fuzzy:
                continue
            n = len(kw.normalized.split(" "))
            target = norm if rule.match == "exact" else " ".join(norm.split(" ")[:n])
            if distance(target, kw.normalized, kw.fuzzy) <= kw.fuzzy and (
                rule.match == "exact" or len(norm.split(" ")) >= n
            ):
                return rule.name, True
    return None, False


WORDS = ["ret", "iptal", "stop", "stop all", "anket", "rezerv", "abcd", "abce", "kampanya"]
PATTERNS = [r"anket (?P<c>[ab])", r"rez(?:erv)? (?P<code>\d{2})", r"(?:stop|dur) .*", r"a+b", r"\d+"]


@st.composite
def rule_files(draw):
    lines = ["version: 1", "rules:"]
    for i in range(draw(st.integers(1, 12))):
        receivers = draw(st.sampled_from(["", "receivers: ['7889']"]))
        if draw(st.booleans()):
            pattern = draw(st.sampled_from(PATTERNS)).replace("\\", "\\\\")
            extra = receivers or "max_age: 1d"
            lines.append(f"  - {{name: r{i}, pattern: \"{pattern}\", handlers: [log], {extra}}}")
        else:
            kws = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3, unique=True))
            mode = draw(st.sampled_from(["exact", "first_word"]))
            fuzzy = draw(st.sampled_from([0, 0, 1, 2]))
            lines.append(f"  - {{name: r{i}, keywords: {kws}, match: {mode}, fuzzy: {fuzzy}, "
                         f"handlers: [log], {receivers or 'max_age: 1d'}}}")
    return "\n".join(lines) + "\n"


TEXTS = st.one_of(
    st.sampled_from(["RET", "iptal!", "İPTL", "stop all now", "STOP", "anket a", "ANKET B", "rez 12",
                     "rezerv 34", "aab", "123", "abcf", "kampnya", "kampanya 5", "dur x", "", "merhaba"]),
    st.text(alphabet="abcdeiklmnoprstuvy 12", max_size=14),
)


@settings(max_examples=300, deadline=None)
@given(rule_files(), st.lists(st.tuples(TEXTS, st.sampled_from([None, "7889", "1234"])), max_size=10))
def test_router_agrees_with_the_reference(tmp_path_factory, text_rules, cases) -> None:
    path = tmp_path_factory.mktemp("rules") / "r.yaml"
    path.write_text(text_rules)
    try:
        rules = load_rules(path)
    except Exception:  # shadowed keywords are rejected: nothing to compare
        return
    r = Router(rules)
    for text, receiver in cases:
        route = r.route(text, receiver)
        got = (route.match.rule, route.match.fuzzy) if route.match else (None, False)
        assert got == reference_route(rules, text, receiver), (text, receiver)


def test_many_keyword_rules_route_by_index(write_rules) -> None:
    rng = random.Random(1)
    words = sorted({"".join(rng.choice("abcdefgh") for _ in range(8)) for _ in range(3000)})
    body = "\n".join(f"  - {{name: k{i}, keywords: [{w}], handlers: [log]}}" for i, w in enumerate(words))
    r = Router(load_rules(write_rules("version: 1\nrules:\n" + body + "\n")))
    for i in rng.sample(range(len(words)), 200):
        assert r.route(words[i].upper() + "!").match.rule == f"k{i}"
    assert re.fullmatch(r"k\d+", r.route(words[-1]).match.rule)
