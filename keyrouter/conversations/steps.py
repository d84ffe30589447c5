"""One message applied to one respondent's conversation: pure, no I/O (docs/conversations.md).

A `Record` is a respondent's latest run of a conversation.  `message_id` is the last message
applied to it and `reply` the SMS that message calls for: applying a message is recorded with
its id, so applying it again (a retry after a crash) is recognized and changes nothing, and the
SMS sent afterwards is always the recorded one, identical on every attempt.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from keyrouter.conversations.model import MAX_MISSES, Conversation

OPEN, COMPLETED, INCOMPLETE, OPTED_OUT, EXPIRED = (
    "open", "completed", "incomplete", "opted_out", "expired")
#: The provider refuses the same text to the same number within this many seconds (451).
DUPLICATE_WINDOW = 600.0


@dataclass(frozen=True)
class Record:
    conversation: str
    respondent: str  # the sender's E.164 number, or the sender as received
    status: str  # open, completed, incomplete or opted_out (expired is read from last_at)
    step: int  # the question asked now (index)
    message_id: str  # the last message applied
    started_at: float
    last_at: float  # epoch seconds of the last SMS (the worker's clock): expiry counts from it
    answers: dict[str, str] = field(default_factory=dict)
    misses: int = 0  # answers in a row that fit no choice
    reply: str | None = None  # the SMS `message_id` calls for, None: none
    repeats: int = 0  # times `base` was sent within the provider's duplicate window
    base: str | None = None  # the last SMS before any variation

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def is_open(self, conv: Conversation | None, now: float) -> bool:
        """Open and not expired (by the worker's clock); a conversation no longer in the rules
        is never open."""
        return (conv is not None and self.status == OPEN
                and now - self.last_at < conv.expires.total_seconds())

    def final_status(self, conv: Conversation | None, now: float) -> str:
        if self.status == OPEN and not self.is_open(conv, now):
            return EXPIRED
        return self.status


def _say(record: Record, text: str | None, now: float) -> Record:
    """`record` sending `text`: an SMS identical to one sent to this number within the provider's
    duplicate window is varied with a counter (`text (2)`), so a re-sent question gets through."""
    if text is None:
        return replace(record, reply=None)
    repeats = 0
    if text == record.base and now - record.last_at < DUPLICATE_WINDOW:
        repeats = record.repeats + 1
    sent = f"{text} ({repeats + 1})" if repeats else text
    return replace(record, reply=sent, base=text, repeats=repeats, last_at=now)


def start(conv: Conversation, respondent: str, message_id: str, now: float) -> Record:
    first = Record(conv.id, respondent, OPEN, 0, message_id, now, now)
    return _say(first, conv.questions[0].ask, now)


def resend(conv: Conversation, record: Record, message_id: str, now: float) -> Record:
    """A start keyword while open: the current question again, never an answer."""
    question = conv.question(record.step)
    return _say(replace(record, message_id=message_id), question.ask if question else None, now)


def answer(conv: Conversation, record: Record, text: str, message_id: str,
           now: float) -> Record:
    question = conv.question(record.step)
    record = replace(record, message_id=message_id)
    if question is None:  # the rules lost questions since: it cannot go on
        return replace(record, status=INCOMPLETE, reply=None)
    if question.text:
        got: str | None = text if text.strip() else None
    else:
        got = question.choose(text, conv.normalizer, conv.emoji)
    if got is None:
        misses = record.misses + 1
        if misses >= MAX_MISSES:
            return replace(record, status=INCOMPLETE, misses=misses, reply=None)
        return _say(replace(record, misses=misses), question.retry or question.ask, now)
    answers = {**record.answers, question.id: got}
    step = record.step + 1
    record = replace(record, answers=answers, step=step, misses=0)
    if step >= len(conv.questions):
        return _say(replace(record, status=COMPLETED), conv.done, now)
    return _say(record, conv.questions[step].ask, now)


def opt_out(record: Record, message_id: str) -> Record:
    """An opt-out mid-way: ended, the answers so far kept, no SMS."""
    return replace(record, status=OPTED_OUT, message_id=message_id, reply=None)
