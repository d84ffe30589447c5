from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

from keyrouter.durations import parse_duration
from keyrouter.rules import registry
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError


def problems(path: Path) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules(path)
    return [str(p) for p in info.value.problems]


def test_a_valid_file_compiles(write_rules) -> None:
    path = write_rules("""
        version: 1
        normalize: {strip_prefixes: [ILT]}
        rules:
          - name: optout
            keywords: [RET, İPTAL, "STOP ALL"]
            receivers: ["7889"]
            max_age: 3d
            handlers:
              - log
              - reply: {text: hi}
        default:
          handlers: [log]
    """)
    rules = load_rules(path)
    (rule,) = rules.rules
    assert [k.normalized for k in rule.keywords] == ["ret", "iptal", "stop all"]
    assert [k.written for k in rule.keywords] == ["RET", "İPTAL", "STOP ALL"]
    assert rule.max_age == timedelta(days=3)
    assert rule.receivers == frozenset({"7889"})
    assert [(h.name, dict(h.params)) for h in rule.handlers] == [("log", {}), ("reply", {"text": "hi"})]
    assert [h.name for h in rules.default] == ["log"]
    assert rule.where.line == 4


def test_yaml_booleans_and_numbers_stay_text_in_keywords_and_receivers(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: r
            keywords: [NO, yes, 0850]
            receivers: [7889, 08501234567]
            handlers: [log]
    """)
    (rule,) = load_rules(path).rules
    assert [k.normalized for k in rule.keywords] == ["no", "yes", "0850"]
    assert rule.receivers == frozenset({"7889", "+908501234567"})


def test_yaml_syntax_error_names_file_and_line(write_rules) -> None:
    path = write_rules("version: 1\nrules:\n  - name: [a\n    handlers: [log]\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:")
    assert "YAML syntax" in problem


def test_unknown_keys_are_errors_with_their_line(write_rules) -> None:
    path = write_rules("""
        version: 1
        rulez: []
        normalize:
          lowercase: true
        rules:
          - name: a
            keywords: [A]
            handler: [log]
            handlers: [log]
    """)
    assert problems(path) == [
        f"{path}:2: unknown key 'rulez' (did you mean 'rules'?)",
        # nothing close among normalize's keys: they are listed
        f"{path}:4: unknown key 'lowercase' in normalize (allowed: locale, fold_accents, "
        "strip_punctuation, strip_prefixes)",
        f"{path}:8: unknown key 'handler' in a rule (did you mean 'handlers'?)",
    ]


def test_missing_version_and_handlers(write_rules) -> None:
    path = write_rules("""
        rules:
          - name: a
            keywords: [A]
    """)
    found = problems(path)
    assert f"{path}:1: missing required key 'version'" in found
    assert f"{path}:2: missing required key 'handlers'" in found


def test_wrong_version_and_bad_match_mode(write_rules) -> None:
    path = write_rules("""
        version: 2
        rules:
          - name: a
            keywords: [A]
            match: fuzzy
            handlers: [log]
    """)
    found = problems(path)
    assert any(p.startswith(f"{path}:1: version") for p in found)
    assert any(p.startswith(f"{path}:5: match") and "'fuzzy'" in p for p in found)


def test_duplicate_rule_names_within_and_across_files(write_rules, tmp_path) -> None:
    write_rules("""
        version: 1
        rules:
          - {name: a, keywords: [A], handlers: [log]}
          - {name: a, keywords: [B], handlers: [log]}
    """, "10-first.yaml")
    write_rules("""
        version: 1
        rules:
          - {name: a, keywords: [C], handlers: [log]}
    """, "20-second.yml")
    found = problems(tmp_path)
    first = tmp_path / "10-first.yaml"
    assert f"{first}:4: rule name 'a' is already used at {first}:3" in found
    assert f"{tmp_path / '20-second.yml'}:3: rule name 'a' is already used at {first}:3" in found


def test_both_or_neither_keywords_and_pattern(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: both, keywords: [A], pattern: 'a', handlers: [log]}
          - {name: neither, handlers: [log]}
    """)
    found = problems(path)
    assert f"{path}:3: rule 'both' has both `keywords` and `pattern`: give exactly one" in found
    assert f"{path}:4: rule 'neither' has neither `keywords` nor `pattern`: give exactly one" in found


def test_bad_regex(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: p
            pattern: '(?P<x>[a-'
            handlers: [log]
    """)
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:4: pattern does not compile:")


def test_keyword_that_normalizes_to_nothing(write_rules) -> None:
    path = write_rules("""
        version: 1
        normalize: {strip_prefixes: [ILT]}
        rules:
          - name: k
            keywords: [RET, "!!!", ILT]
            handlers: [log]
    """)
    found = problems(path)
    assert len(found) == 2
    assert all(p.startswith(f"{path}:5: keyword ") and "normalizes to nothing" in p for p in found)


def test_fuzzy_limits(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: loose, keywords: [IPTAL], fuzzy: 3, handlers: [log]}
    """)
    assert problems(path) == [f"{path}:3: fuzzy: 3 is too loose; at most 2"]
    path = write_rules("""
        version: 1
        rules:
          - name: short
            keywords: [RET, IPTAL]
            fuzzy: 1
            handlers: [log]
    """)
    rules = load_rules(path)
    assert [str(w) for w in rules.warnings] == [
        f"{path}:4: warning: fuzzy ignored for 'RET': keywords shorter than 4 characters "
        "match exactly only"
    ]
    assert [k.fuzzy for k in rules.rules[0].keywords] == [0, 1]


def test_pattern_rules_reject_match_and_fuzzy(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: p, pattern: 'a', match: first_word, handlers: [log]}
    """)
    (problem,) = problems(path)
    assert "`match` applies to keywords" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("15m", timedelta(minutes=15)), ("12h", timedelta(hours=12)),
     ("3d", timedelta(days=3))],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_bad_duration(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: a
            keywords: [A]
            max_age: 3 days
            handlers: [log]
    """)
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:5: max_age: '3 days' is not a duration")


def test_handler_entries_must_resolve(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: a
            keywords: [A]
            handlers:
              - log
              - nosuchhandler
              - json:dumps
              - nosuchmodule_xyz:f
              - json:nosuchfunction
              - {log: {}, reply: {}}
    """)
    found = problems(path)
    assert len(found) == 4
    assert found[0].startswith(f"{path}:7: unknown handler 'nosuchhandler'")
    assert found[1].startswith(f"{path}:9: cannot import module 'nosuchmodule_xyz'")
    assert found[2] == f"{path}:10: module 'json' has no attribute 'nosuchfunction'"
    assert found[3].startswith(f"{path}:11: a handler entry is a name, or a map with ONE name")


def test_entry_point_handlers_resolve(write_rules, tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    (site / "acme_plugin").mkdir(parents=True)
    (site / "acme_plugin" / "__init__.py").write_text("def record(message, match, context):\n    pass\n")
    dist = site / "acme_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[keyrouter.handlers]\nacme_record = acme_plugin:record\n")
    monkeypatch.syspath_prepend(str(site))
    registry._entry_points.cache_clear()
    try:
        path = write_rules("""
            version: 1
            rules:
              - {name: a, keywords: [A], handlers: [acme_record]}
        """)
        (rule,) = load_rules(path).rules
        assert rule.handlers[0].name == "acme_record"
        assert registry.resolve("acme_record").__name__ == "record"
    finally:
        registry._entry_points.cache_clear()
        sys.modules.pop("acme_plugin", None)


def test_shadowed_keyword_names_both_places(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: first, keywords: [RET], handlers: [log]}
          - {name: second, keywords: [ret.], handlers: [log]}
    """)
    assert problems(path) == [
        f"{path}:4: keyword 'ret.' of rule 'second' can never match: rule 'first' claims it first at {path}:3"
    ]


@pytest.mark.parametrize(
    ("first", "second", "shadowed"),
    [
        ("receivers: ['7889']", "receivers: ['7889']", True),
        ("receivers: ['7889', '7890']", "receivers: ['7889']", True),
        ("receivers: ['7889']", "receivers: ['7890']", False),
        ("receivers: ['7889']", "", False),  # the later rule still serves other receivers
        ("", "match: first_word", False),  # another match mode
        ("", "fuzzy: 1", False),  # a looser fuzzy can still win on typos
    ],
)
def test_shadowing_depends_on_receivers_mode_and_fuzzy(write_rules, first, second, shadowed) -> None:
    path = write_rules(f"""
        version: 1
        rules:
          - {{name: first, keywords: [IPTAL], handlers: [log], {first or 'match: exact'}}}
          - {{name: second, keywords: [IPTAL], handlers: [log], {second or 'match: exact'}}}
    """)
    if shadowed:
        assert "can never match" in problems(path)[0]
    else:
        assert len(load_rules(path).rules) == 2


def test_folder_reads_yaml_and_yml_in_name_order(write_rules, tmp_path) -> None:
    write_rules("version: 1\nrules:\n  - {name: b, keywords: [B], handlers: [log]}\n", "b.yml")
    write_rules("version: 1\nrules:\n  - {name: a, keywords: [A], handlers: [log]}\n", "a.yaml")
    write_rules("not: rules", "notes.txt")
    rules = load_rules(tmp_path)
    assert [r.name for r in rules.rules] == ["a", "b"]
    assert [r.index for r in rules.rules] == [0, 1]


def test_two_defaults_across_files(write_rules, tmp_path) -> None:
    write_rules("version: 1\ndefault: {handlers: [log]}\n", "a.yaml")
    write_rules("version: 1\ndefault: {handlers: [log]}\n", "b.yaml")
    (problem,) = problems(tmp_path)
    assert problem == f"{tmp_path / 'b.yaml'}:2: a second `default:`; the first is at {tmp_path / 'a.yaml'}:2"


def test_empty_folder_and_non_mapping_file(write_rules, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no *.yaml or *.yml files" in problems(empty)[0]
    path = write_rules("- just\n- a list\n")
    assert "a rules file is a mapping" in problems(path)[0]


def test_duplicate_yaml_key(write_rules) -> None:
    path = write_rules("version: 1\nrules: []\nrules: []\n")
    assert problems(path) == [f"{path}:3: key 'rules' appears twice in one mapping"]


def test_reply_after_blacklist_warns(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: a, keywords: [RET], handlers: [blacklist, {reply: {text: ok}}]}
    """)
    (warning,) = load_rules(path).warnings
    assert "`reply` after `blacklist`" in str(warning)


def test_shipped_rules_load_cleanly() -> None:
    rules = load_rules(Path(__file__).parent.parent / "rules")
    assert {"optout", "survey", "reservation"} <= {r.name for r in rules.rules}
    assert rules.warnings == ()


def test_built_in_params_are_checked_against_what_the_rule_can_capture(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: rez
            pattern: 'rez (?P<code>\\d{6})'
            handlers:
              - reply: {text: "Kod {code} alindi"}
          - name: bad_capture
            keywords: [RET]
            handlers:
              - reply: {text: "Kod {code}"}
          - name: typo
            keywords: [HOOK]
            handlers:
              - webhook: {url: "https://example.invalid/h", secret: x}
          - name: params_not_a_map
            keywords: [LOG]
            handlers:
              - log: [include_text]
    """)
    found = problems(path)
    assert len(found) == 3, found
    assert found[0].startswith(f"{path}:10: ") and "code" in found[0]
    assert found[1].startswith(f"{path}:14: ") and "secret" in found[1]
    assert found[2] == f"{path}:18: log: params must be a map of names to values"


def test_priority_and_timeouts_on_rules_and_entries(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: optout
            keywords: [RET]
            priority: high
            timeout: 20s
            handlers:
              - log
              - webhook: {url: "https://example.com/hook", timeout: 5}
                timeout: 1.5
              - blacklist:
                timeout: 2m
          - name: survey
            keywords: [ANKET]
            handlers: [log]
        default:
          timeout: 3
          handlers: [log]
    """)
    rules = load_rules(path)
    optout, survey = rules.rules
    assert optout.priority == "high" and survey.priority == "normal"
    assert optout.timeout == 20.0 and survey.timeout is None
    # the entry's own `timeout` sits beside its name; the webhook's `timeout` param stays a param
    assert [(h.name, h.timeout) for h in optout.handlers] == [("log", 20.0), ("webhook", 1.5),
                                                              ("blacklist", 120.0)]
    assert optout.handlers[1].params["timeout"] == 5
    assert [(h.name, h.timeout) for h in survey.handlers] == [("log", None)]
    assert [(h.name, h.timeout) for h in rules.default] == [("log", 3.0)]


def test_bad_priority_and_timeouts_name_their_lines(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - name: b
            keywords: [B]
            timeout: soon
            handlers:
              - log:
                timeout: 0
              - log:
                timeout: true
              - {log: null, timeout: 1s, extra: 2}
    """)
    found = problems(path)
    assert f"{path}:5: timeout: 'soon' is not a duration: write a number and a unit, e.g. 30s, 15m, " \
           "12h, 3d" in found
    assert f"{path}:8: timeout: '0' must be more than 0 seconds" in found
    assert any(p.startswith(f"{path}:10: timeout: True is not a duration") for p in found), found
    assert any(p.startswith(f"{path}:11: a handler entry is a name, or a map with ONE name") for p in found)
    path = write_rules("""
        version: 1
        rules:
          - {name: a, keywords: [A], handlers: [log]}
          - name: b
            keywords: [B]
            priority: urgent
            handlers: [log]
    """)
    assert problems(path) == [f"{path}:6: priority: input should be 'high' or 'normal' (got 'urgent')"]
