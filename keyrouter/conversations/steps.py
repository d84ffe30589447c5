"""One message applied to one respondent's conversation: pure, no I/O (docs/conversations.md).

A `Record` is a respondent's latest run of a conversation.  `message_id` is the last message
applied to it and `reply` the SMS that message calls for: applying a message is recorded with
its id, so applying it again (a retry after a crash) is recognized and changes nothing, and the
SMS sent afterwards is always the recorded one, identical on every attempt.
"""

from __future__ import annotations

from dataclasses import replace

from keyrouter.rules.conversations import MAX_MISSES, Conversation
from keyrouter.store.conversations import (
    COMPLETED,
    DUPLICATE_WINDOW,
    EXPIRED,
    INCOMPLETE,
    OPEN,
    OPTED_OUT,
    Record,
)

__all__ = ["COMPLETED", "DUPLICATE_WINDOW", "EXPIRED", "INCOMPLETE", "OPEN", "OPTED_OUT", "Record",
           "answer", "opt_out", "resend", "start"]

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
