"""`survey` with MemoryStore: policies, invalid choices, idempotency, normalization."""

from __future__ import annotations

import logging

import pytest

from keyrouter.handlers.survey import handle, normalize_choice, params_problem
from keyrouter.retries import PermanentError

from .support import NUMBER, match

pytestmark = pytest.mark.anyio

OTHER = "+905559876543"


async def vote(store, make_message, make_context, choice, *, sender=NUMBER, key=None, **params):
    params.setdefault("id", "spring")
    message = make_message(f"ANKET {choice}", sender=sender)
    context = make_context(params, store=store, rule="survey", key=key or f"k-{sender}-{choice}")
    await handle(message, match("survey", None, choice=choice), context)


async def test_policy_last_replaces_the_earlier_vote(store, make_message, make_context) -> None:
    await vote(store, make_message, make_context, "a")
    await vote(store, make_message, make_context, "b")
    await vote(store, make_message, make_context, "a", sender=OTHER)
    results = await store.survey_results("spring")
    assert (results.votes, results.voters, results.rejected) == ({"a": 1, "b": 1}, 2, 0)
    assert results.last_vote_at is not None


async def test_policy_first_keeps_the_first_vote(store, make_message, make_context) -> None:
    await vote(store, make_message, make_context, "a", policy="first")
    await vote(store, make_message, make_context, "b", policy="first")
    assert (await store.survey_results("spring")).votes == {"a": 1}


async def test_a_choice_outside_choices_is_recorded_not_counted(
    store, make_message, make_context, caplog
) -> None:
    with caplog.at_level(logging.INFO, "test"):
        await vote(store, make_message, make_context, "a", choices=["a", "b"])
        await vote(store, make_message, make_context, "z", choices=["a", "b"])
    results = await store.survey_results("spring")
    assert (results.votes, results.voters, results.rejected) == ({"a": 1}, 1, 1)
    [line] = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "+90535***4818" in line and NUMBER not in line


async def test_a_retry_with_the_same_key_counts_once(store, make_message, make_context) -> None:
    await vote(store, make_message, make_context, "a", key="kr-same")
    await vote(store, make_message, make_context, "b", key="kr-same")  # a repeat of that entry
    assert (await store.survey_results("spring")).votes == {"a": 1}


async def test_choices_are_normalized_on_both_sides(store, make_message, make_context) -> None:
    await vote(store, make_message, make_context, "  EVET ", choices=["Evet", "Hayır"])
    await vote(store, make_message, make_context, "hayir", sender=OTHER, choices=["Evet", "HAYIR"])
    results = await store.survey_results("spring")
    assert (results.votes, results.rejected) == ({"evet": 1, "hayir": 1}, 0)
    assert normalize_choice("İYİ") == "iyi" == normalize_choice(" ıyı ")


async def test_the_voter_is_the_sender_as_received_when_not_a_mobile(
    store, make_message, make_context
) -> None:
    await vote(store, make_message, make_context, "a", sender="ACMEBANK")
    await vote(store, make_message, make_context, "b", sender="ACMEBANK")
    await vote(store, make_message, make_context, "b", sender="05354104818")
    await vote(store, make_message, make_context, "b", sender="+90 535 410 48 18")  # the same voter
    results = await store.survey_results("spring")
    assert (results.votes, results.voters) == ({"b": 2}, 2)


async def test_the_choice_template_is_safe(store, make_message, make_context) -> None:
    hostile = "{__class__} %s{0}{choice}"
    context = make_context({"id": "s", "choice": "{answer}"}, store=store, rule="survey")
    await handle(make_message("x"), match("survey", None, answer=hostile), context)
    context = make_context({"id": "s", "choice": "opt-{answer}"}, store=store, rule="survey", key="k2")
    await handle(make_message("x", sender=OTHER), match("survey", None, answer="B"), context)
    assert (await store.survey_results("s")).votes == {hostile.lower(): 1, "opt-b": 1}


async def test_an_empty_choice_is_rejected(store, make_message, make_context) -> None:
    await vote(store, make_message, make_context, "   ")
    results = await store.survey_results("spring")
    assert (results.votes, results.rejected) == ({}, 1)


async def test_a_missing_capture_is_permanent(store, make_message, make_context) -> None:
    context = make_context({"id": "s"}, store=store, rule="survey")
    with pytest.raises(PermanentError, match=r"\{choice\}"):
        await handle(make_message("ANKET"), match("survey", "ANKET"), context)
    with pytest.raises(PermanentError, match=r"\{choice\}"):
        await handle(make_message("ANKET"), None, context)
    assert (await store.survey_results("s")).rejected == 0


async def test_no_store_is_permanent(make_message, make_context) -> None:
    with pytest.raises(PermanentError, match="store"):
        await handle(make_message(), match(choice="a"), make_context({"id": "s"}))


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({}, "id param is required"),
        ({"id": "s", "policy": "middle"}, "policy must be one of last, first"),
        ({"id": "s", "choices": "a,b"}, "choices must be a non-empty list"),
        ({"id": "s", "choices": ["a", None]}, "each of choices"),
        ({"id": "s", "choice": "{0}"}, "stray"),
        ({"id": "s", "survey": "x"}, "unknown param(s) survey"),
    ],
)
async def test_bad_params_are_permanent(params, needle, store, make_message, make_context) -> None:
    assert needle in (params_problem(params) or "")
    with pytest.raises(PermanentError, match="survey"):
        await handle(make_message(), match(choice="a"), make_context(params, store=store))


def test_params_problem_with_known_captures() -> None:
    assert params_problem({"id": "s"}, captures=["choice"]) is None
    assert "{choice}" in (params_problem({"id": "s"}, captures=["answer"]) or "")
