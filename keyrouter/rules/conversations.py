"""The `conversations:` section of a rules file -> validated `Conversation`s, with `file:line`
problems (docs/conversations.md lists every key)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keyrouter.rules.emoji import EmojiNormalizer, has_emoji
from keyrouter.rules.fuzzy import DeletionIndex
from keyrouter.rules.normalize import Normalizer
from keyrouter.suggest import did_you_mean

#: The third answer in a row that fits no choice ends the conversation as incomplete.
MAX_MISSES = 3
DEFAULT_EXPIRES = "24h"
MIN_FUZZY_LENGTH = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuestionModel(_Strict):
    id: str = Field(min_length=1)
    ask: str = Field(min_length=1)
    choices: list[str | int] | None = None
    aliases: dict[str | int, list[str | int]] = {}
    retry: str | None = None
    text: bool = False


class ExampleModel(_Strict):
    say: list[str | int] = Field(min_length=1)
    answers: dict[str, str | int] = {}
    status: Literal["open", "completed", "incomplete", "opted_out"] | None = None


class ConversationModel(_Strict):
    start: list[str | int] = Field(min_length=1)
    expires: str = DEFAULT_EXPIRES
    fuzzy: int = Field(0, ge=0, le=2)
    sender: str | None = None
    questions: list[QuestionModel] = Field(min_length=1)
    done: str | None = None
    examples: list[ExampleModel] = []


@dataclass(frozen=True)
class Question:
    id: str
    ask: str
    choices: tuple[str, ...] = ()
    text: bool = False
    retry: str | None = None
    #: normalized choice or alias -> the choice as written; emoji ones in `emoji_lookup`
    lookup: dict[str, str] = field(default_factory=dict)
    emoji_lookup: dict[str, str] = field(default_factory=dict)
    near: DeletionIndex[str] = field(default_factory=DeletionIndex)

    def choose(self, text: str, normalizer: Normalizer, emoji: EmojiNormalizer) -> str | None:
        """The choice `text` names (normalized like keywords, aliases, emoji, typos within the
        conversation's `fuzzy`), or None."""
        normalized = normalizer(text)
        found = self.lookup.get(normalized)
        if found is None and self.emoji_lookup and has_emoji(text):
            found = self.emoji_lookup.get(emoji(text))
        if found is None and self.near and normalized:
            best = min(self.near.near(normalized), key=lambda hit: hit[1], default=None)
            found = best[0] if best is not None else None
        return found


@dataclass(frozen=True)
class Example:
    say: tuple[str, ...]
    answers: dict[str, str]
    status: str | None
    where: Any  # rules.Location


@dataclass(frozen=True)
class Conversation:
    id: str
    start: tuple[str, ...]  # as written
    expires: timedelta
    questions: tuple[Question, ...]
    normalizer: Normalizer
    emoji: EmojiNormalizer
    where: Any  # rules.Location
    start_where: tuple[Any, ...] = ()  # the Location of each start keyword
    done: str | None = None
    sender: str | None = None
    fuzzy: int = 0
    examples: tuple[Example, ...] = ()

    @property
    def rule_name(self) -> str:
        """The name its messages are routed, counted and logged under."""
        return f"conversation:{self.id}"

    def question(self, step: int) -> Question | None:
        return self.questions[step] if 0 <= step < len(self.questions) else None


def _error_text(err: Any) -> str:
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    loc = [p for p in loc if not p.startswith(("str", "dict[", "int"))]
    name = loc[-1] if loc else "conversation"
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] = ConversationModel
        if "questions" in loc[:-1]:
            model = QuestionModel
        elif "examples" in loc[:-1]:
            model = ExampleModel
        return f"unknown key '{name}'{did_you_mean(name, list(model.model_fields))}"
    if err["type"] == "missing":
        return f"missing required key '{name}'"
    if err["type"] == "too_short":
        return f"{name}: must not be empty"
    return f"{name}: {err['msg']} (got {err['input']!r})"


def build(data: Any, at: Callable[[tuple[Any, ...]], Any], normalizer: Normalizer,
          error: Callable[[Any, str], None],
          parse_duration: Callable[[str], timedelta]) -> list[Conversation]:
    """The file's `conversations:` map -> Conversations; every problem goes to `error(where, ...)`
    with the line of the offending node (`at(path)` gives a Location)."""
    if not isinstance(data, dict):
        error(at(("conversations",)), "conversations: a map of conversation ids to conversations")
        return []
    out = []
    for cid, raw in data.items():
        path: tuple[Any, ...] = ("conversations", cid)
        if not isinstance(raw, dict):
            error(at(path), f"conversation '{cid}': a map with start, questions and done")
            continue
        try:
            model = ConversationModel.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                error(at((*path, *err["loc"])), f"conversation '{cid}': {_error_text(err)}")
            continue
        conv = _conversation(str(cid), model, path, at, normalizer, error, parse_duration)
        if conv is not None:
            out.append(conv)
    return out


def _conversation(cid: str, model: ConversationModel, path: tuple[Any, ...],
                  at: Callable[[tuple[Any, ...]], Any], normalizer: Normalizer,
                  error: Callable[[Any, str], None],
                  parse_duration: Callable[[str], timedelta]) -> Conversation | None:
    ok = True
    emoji = EmojiNormalizer(normalizer)
    try:
        expires = parse_duration(model.expires)
    except ValueError as exc:
        error(at((*path, "expires")), f"conversation '{cid}': expires: {exc}")
        ok, expires = False, timedelta(hours=24)
    for i, word in enumerate(model.start):
        if not (emoji(str(word)) if has_emoji(str(word)) else normalizer(str(word))):
            error(at((*path, "start", i)), f"conversation '{cid}': start keyword '{word}' "
                                           "normalizes to nothing")
            ok = False
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for i, q in enumerate(model.questions):
        qpath = (*path, "questions", i)
        if q.id in seen:
            error(at((*qpath, "id")), f"conversation '{cid}': duplicate question id '{q.id}' "
                                      f"(question {seen[q.id] + 1} has it too)")
            ok = False
        seen.setdefault(q.id, i)
        question = _question(cid, q, qpath, at, normalizer, emoji, model.fuzzy, error)
        if question is None:
            ok = False
        else:
            questions.append(question)
    for i, example in enumerate(model.examples):
        for qid in example.answers:
            if qid not in seen:
                error(at((*path, "examples", i, "answers", qid)),
                      f"conversation '{cid}': example answers unknown question '{qid}'"
                      f"{did_you_mean(qid, list(seen))}")
                ok = False
    if not ok:
        return None
    return Conversation(
        id=cid, start=tuple(str(w) for w in model.start), expires=expires,
        questions=tuple(questions), normalizer=normalizer, emoji=emoji, where=at(path),
        start_where=tuple(at((*path, "start", i)) for i in range(len(model.start))),
        done=model.done or None, sender=model.sender, fuzzy=model.fuzzy,
        examples=tuple(Example(tuple(str(s) for s in e.say),
                               {k: str(v) for k, v in e.answers.items()}, e.status,
                               at((*path, "examples", i)))
                       for i, e in enumerate(model.examples)),
    )


def _question(cid: str, q: QuestionModel, qpath: tuple[Any, ...],
              at: Callable[[tuple[Any, ...]], Any], normalizer: Normalizer,
              emoji: EmojiNormalizer, fuzzy: int,
              error: Callable[[Any, str], None]) -> Question | None:
    where = f"conversation '{cid}', question '{q.id}'"
    if q.text == bool(q.choices):
        error(at(qpath), f"{where}: give either `choices` or `text: true`")
        return None
    if q.text and (q.aliases or q.retry):
        key = "aliases" if q.aliases else "retry"
        error(at((*qpath, key)), f"{where}: `{key}` applies to choices; a free-text question "
                                 "accepts any answer")
        return None
    choices = tuple(str(c) for c in q.choices or ())
    lookup: dict[str, str] = {}
    emoji_lookup: dict[str, str] = {}
    near: DeletionIndex[str] = DeletionIndex()
    ok = True

    def add(word: str, choice: str, path: tuple[Any, ...]) -> None:
        nonlocal ok
        table, key = ((emoji_lookup, emoji(word)) if has_emoji(word) else (lookup, normalizer(word)))
        if not key:
            error(at(path), f"{where}: '{word}' normalizes to nothing")
            ok = False
        elif table.get(key, choice) != choice:
            error(at(path), f"{where}: '{word}' names both '{table[key]}' and '{choice}'")
            ok = False
        else:
            table[key] = choice
            if fuzzy and table is lookup and len(key) >= MIN_FUZZY_LENGTH:
                near.add(key, fuzzy, choice)

    for i, choice in enumerate(choices):
        add(choice, choice, (*qpath, "choices", i))
    for named, words in q.aliases.items():
        if str(named) not in choices:
            error(at((*qpath, "aliases", named)), f"{where}: aliases name '{named}', which is "
                                                   f"not one of the choices {list(choices)}")
            ok = False
            continue
        for i, word in enumerate(words):
            add(str(word), str(named), (*qpath, "aliases", named, i))
    if not ok:
        return None
    return Question(id=q.id, ask=q.ask, choices=choices, text=q.text, retry=q.retry or None,
                    lookup=lookup, emoji_lookup=emoji_lookup, near=near)
