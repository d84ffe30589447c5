"""`survey`: count the sender's vote in the store (`Store.vote`), one vote per voter per survey.

Params:
- `id` (required): the survey's id, e.g. `spring-2026`.
- `choice` (default `"{choice}"`): a template (see keyrouter.handlers.templating) giving the
  choice, usually a capture of the rule's pattern: `(?:anket|survey) (?P<choice>[ab])`.
- `choices` (optional): the valid choices.  A vote for anything else is recorded as rejected
  (`valid=False`: counted in `rejected`, changes no one's vote) and logged; it is not an error.
- `policy`: `last` (default, a later vote replaces an earlier one) or `first` (the first stands).

Choices (the voted one and the listed ones) are compared normalized like rule keywords: Turkish
lowercase, accents folded, whitespace collapsed, so `EVET`, `Evet ` and `evet` are one choice;
punctuation is kept.  The voter is the sender's E.164 number, or the sender as received when it
is not a mobile number.  The vote is idempotent per `context.idempotency_key`, so a retry after a
crash does not count twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from keyrouter.handlers.context import Context
from keyrouter.handlers.templating import message_values, render, template_problem, unknown_params
from keyrouter.masking import mask_number
from keyrouter.message import Message
from keyrouter.retries import PermanentError
from keyrouter.rules.model import RuleSet
from keyrouter.rules.normalize import Normalizer, NormalizeSettings
from keyrouter.rules.router import Match

__all__ = [
    "DEFAULT_CHOICE", "PARAMS", "POLICIES", "declared_surveys", "handle", "normalize_choice",
    "params_problem",
]

PARAMS = ("id", "choice", "choices", "policy")
POLICIES = ("last", "first")
DEFAULT_CHOICE = "{choice}"
_CHOICE = Normalizer(NormalizeSettings(strip_punctuation=False))


def normalize_choice(choice: object) -> str:
    return _CHOICE(str(choice)).strip()


def declared_surveys(rules: RuleSet) -> dict[str, tuple[str, ...]]:
    """survey id -> its declared choices (normalized as votes are, in the rules' order), from
    every `survey` entry, so the dashboard and `survey results` show the same choices."""
    out: dict[str, dict[str, None]] = {}
    for entry in rules.entries():
        if entry.name != "survey" or "id" not in entry.params:
            continue
        choices = out.setdefault(str(entry.params["id"]).strip(), {})
        for c in entry.params.get("choices") or ():
            choices.setdefault(normalize_choice(c), None)
    return {k: tuple(v) for k, v in out.items()}


def params_problem(params: Mapping[str, Any], captures: list[str] | None = None) -> str | None:
    """Why these params cannot work for `survey`, or None.  `captures`: the rule's capture names,
    when known (then a `choice` template no message could fill is a problem)."""
    problem = unknown_params(params, PARAMS, "survey")
    if problem:
        return problem
    survey = params.get("id")
    if not isinstance(survey, str | int) or isinstance(survey, bool) or not str(survey).strip():
        return "survey: the id param is required, e.g. survey: {id: spring-2026}"
    problem = template_problem(params.get("choice", DEFAULT_CHOICE), captures)
    if problem:
        return f"survey: choice: {problem}"
    choices = params.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not choices:
            return "survey: choices must be a non-empty list, e.g. choices: [a, b, c]"
        if any(isinstance(c, bool | dict | list) or c is None for c in choices):
            return "survey: each of choices must be a word or a number"
        if any(not normalize_choice(c) for c in choices):
            return "survey: choices has an empty choice"
    if params.get("policy", "last") not in POLICIES:
        return f"survey: policy must be one of {', '.join(POLICIES)}"
    return None


async def handle(message: Message, match: Match | None, context: Context) -> None:
    params = context.params
    problem = params_problem(params)
    if problem:
        raise PermanentError(problem)
    store = context.store
    if store is None:
        raise PermanentError("survey: no store to count votes in (this handler needs one)")
    voter = message.sender_e164 or message.sender.strip()
    if not voter:
        raise PermanentError(f"survey: message {message.id} has no sender to count a vote for")
    survey = str(params["id"]).strip()
    policy = params.get("policy", "last")
    template = params.get("choice", DEFAULT_CHOICE)
    choice = normalize_choice(render(template, message_values(message, match, context.rule)))
    choices = params.get("choices")
    valid = bool(choice) and (choices is None or choice in {normalize_choice(c) for c in choices})
    changed = await store.vote(
        survey,
        voter,
        choice,
        policy=policy,
        now=time.time(),
        valid=valid,
        vote_id=context.idempotency_key,
    )
    if not valid:
        context.logger.info(
            "survey %s: rejected a vote from %s: its choice (%d characters, not logged) is not "
            "one of the choices; message %s",
            survey,
            mask_number(voter),
            len(choice),
            message.id,
        )
        return
    context.logger.info(
        "survey %s: vote %r from %s %s, message %s",
        survey,
        choice,
        mask_number(voter),
        "counted" if changed else f"left the count unchanged (policy {policy})",
        message.id,
    )
