"""`keyrouter survey results ID` for a conversation, and `keyrouter explain --as SENDER`
(docs/conversations.md)."""

from __future__ import annotations

import sys
from typing import Any

from keyrouter.conversations import results
from keyrouter.conversations.steps import Record
from keyrouter.masking import mask_number
from keyrouter.rules.conversations import Conversation
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError
from keyrouter.settings import Settings


def declared_conversation(settings: Settings, conversation: str) -> Conversation | None:
    """The rules' conversation of that id; None when there is none or the rules cannot be read
    (then `survey results` shows what the store holds)."""
    try:
        rules = load_rules(settings.rules, settings.rules_max_bytes)
    except (RulesError, OSError):
        return None
    return next((c for c in rules.conversations if c.id == conversation), None)


def print_results(records: list[Record], conv: Conversation | None, fmt: str, now: float) -> None:
    if fmt == "json":
        sys.stdout.write(results.as_json_lines(records, conv, now))
    elif fmt == "csv":
        sys.stdout.write(results.as_csv(records, conv, now))
    elif conv is not None:
        print(results.as_table(records, conv, now))
    else:
        counts = results.funnel(records, None, now)
        print(f"conversation {records[0].conversation if records else '?'} (not in the rules: "
              "no choices known)")
        print("  " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))


def describe_sender(record: Record | None, conv: Conversation | None, sender: str,
                    now: float, start: bool = False) -> str | None:
    """What `explain --as SENDER` adds: the text is an answer when a conversation is open (a
    start keyword sends the current question again)."""
    if record is None or conv is None or not record.is_open(conv, now):
        return None
    question = conv.question(record.step)
    asked = f"question {record.step + 1} '{question.id}'" if question else "no question"
    what = ("a start keyword: the current question is sent again, not an answer" if start
            else "this text is its answer")
    return (f"  -> {mask_number(sender)} has conversation {conv.id!r} open at {asked}: {what} "
            f"(rule {conv.rule_name!r})")


def explain_json(record: Record | None, conv: Conversation | None, now: float) -> dict[str, Any]:
    if record is None or conv is None or not record.is_open(conv, now):
        return {"conversation": None}
    question = conv.question(record.step)
    return {"conversation": conv.id, "question": question.id if question else None}
