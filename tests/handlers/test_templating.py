"""Safe `{name}` templates: only the template is parsed, values go in literally."""

from __future__ import annotations

import pytest

from keyrouter.handlers.templating import (
    MESSAGE_FIELDS,
    TemplateError,
    message_values,
    placeholders,
    render,
    template_problem,
)
from keyrouter.retries import PermanentError

from .support import match

HOSTILE = ["{__class__}", "%s%s%s", "{0}", "{choice}", "{}", "{{", "}", "%(x)s", "{sender.__class__}"]


def test_placeholders_are_filled_and_escapes_unfold() -> None:
    assert render("Hi {name}, {{literal}} {n2_x}", {"name": "Ayşe", "n2_x": "7"}) == ("Hi Ayşe, {literal} 7")
    assert placeholders("{a} {b} {a} {{c}}") == ["a", "b"]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_are_inserted_literally(value: str) -> None:
    assert render("<{v}>", {"v": value, "choice": "X", "0": "Y"}) == f"<{value}>"


def test_a_value_is_never_reparsed_even_if_it_names_another_value() -> None:
    assert render("{a}{b}", {"a": "{b}", "b": "{a}"}) == "{b}{a}"


@pytest.mark.parametrize(
    "template", ["{0}", "{ choice }", "{a.b}", "{a[0]}", "{a!r}", "{a:>5}", "open {", "close }", "{}"]
)
def test_anything_but_a_bare_name_is_a_problem(template: str) -> None:
    problem = template_problem(template)
    assert problem is not None and "stray" in problem
    with pytest.raises(TemplateError):
        render(template, {"a": "x", "choice": "x", "0": "x"})


def test_unknown_name_is_a_permanent_error_at_render_time() -> None:
    with pytest.raises(PermanentError, match=r"\{code\}.*known names: id"):
        render("Your code: {code}", {"id": "1"})


def test_template_problem_knows_the_message_fields_and_given_captures() -> None:
    assert template_problem("plain text") is None
    assert template_problem("{anything}") is None  # no names given: syntax only
    assert template_problem("{id} {sender} {receiver} {keyword} {rule}", names=[]) is None
    assert template_problem("{choice}", names=["choice"]) is None
    problem = template_problem("{choice} {code}", names=["choice"])
    assert problem is not None and "{code}" in problem and "{choice}" not in problem
    assert template_problem(42) == "template must be a string, not int"


def test_message_values(make_message) -> None:
    message = make_message("ANKET A", id="77", receiver="7889")
    values = message_values(message, match("survey", None, choice="a"), "survey")
    assert set(MESSAGE_FIELDS) <= set(values)
    assert values["id"] == "77" and values["keyword"] == "" and values["rule"] == "survey"
    assert values["choice"] == "a"
    # a capture named like a field wins; no match: the context's rule name
    assert message_values(message, match(id="cap"), "r")["id"] == "cap"
    assert message_values(message, None, "default")["rule"] == "default"
