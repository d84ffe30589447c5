""""Did you mean" for keys, handler names and built-in params; "neither ... nor"."""

from __future__ import annotations

import pytest

from keyrouter.cli import main
from keyrouter.suggest import did_you_mean


def check_lines(write_rules, capsys, text: str) -> tuple[str, list[str]]:
    path = write_rules(text)
    assert main(["check", "--rules", str(path)]) == 2
    return str(path), capsys.readouterr().err.splitlines()


def test_unknown_keys_suggest_the_key_at_that_place(write_rules, capsys) -> None:
    path, lines = check_lines(write_rules, capsys, """
        version: 1
        normalise: {}
        rules:
          - name: a
            keyword: [RET]
            handler: [log]
            examples: {matches: [ret]}
        default: {handlrs: [log]}
    """)
    assert [line for line in lines if "unknown key" in line] == [
        f"{path}:2: unknown key 'normalise' (did you mean 'normalize'?)",
        f"{path}:5: unknown key 'keyword' in a rule (did you mean 'keywords'?)",
        f"{path}:6: unknown key 'handler' in a rule (did you mean 'handlers'?)",
        f"{path}:7: unknown key 'matches' in examples (did you mean 'match'?)",
        f"{path}:8: unknown key 'handlrs' in default (did you mean 'handlers'?)",
    ]


def test_unknown_handler_names_suggest_a_built_in(write_rules, capsys) -> None:
    path, (line,) = check_lines(write_rules, capsys, """
        version: 1
        rules:
          - {name: a, keywords: [RET], handlers: [blacklst]}
    """)
    assert line.startswith(f"{path}:3: unknown handler 'blacklst' (did you mean 'blacklist'?): "
                           "not a built-in")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{reply: {txt: ok}}", "reply: unknown param(s) txt (did you mean 'text'?); known: "),
        ("{webhook: {url: 'https://x.invalid', secret_evn: S}}",
         "webhook: unknown param(s) secret_evn (did you mean 'secret_env'?); known: "),
        ("{survey: {id: s, choises: [a]}}",
         "survey: unknown param(s) choises (did you mean 'choices'?); known: "),
        ("{log: {include_txt: true}}",
         "log: unknown param(s) include_txt (did you mean 'include_text'?); known: "),
        ("{log: {colour: red}}", "log: unknown param(s) colour; known: "),  # nothing close
    ],
)
def test_unknown_built_in_params_suggest_the_known_one(write_rules, capsys, entry, expected) -> None:
    path, (line,) = check_lines(write_rules, capsys, f"""
        version: 1
        rules:
          - {{name: a, keywords: [RET], handlers: [{entry}]}}
    """)
    assert line.startswith(f"{path}:3: {expected}")


def test_neither_keywords_nor_pattern(write_rules, capsys) -> None:
    path, lines = check_lines(write_rules, capsys, """
        version: 1
        rules:
          - {name: a, handlers: [log]}
    """)
    assert lines == [f"{path}:3: rule 'a' has neither `keywords` nor `pattern`: give exactly one"]


def test_far_names_get_no_suggestion() -> None:
    assert did_you_mean("lowercase", ["locale", "fold_accents"]) == ""
    assert did_you_mean("rulez", ["version", "rules"]) == " (did you mean 'rules'?)"
