"""The Context the dispatcher hands a handler is built lazily but reads like any Context."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from keyrouter.dispatch.entry_context import EntryContext, Shared
from keyrouter.handlers.context import Context, idempotency_key
from keyrouter.rules.model import HandlerEntry

CHECKED: list[str] = []


async def _holds(message_id: str) -> bool:
    CHECKED.append(message_id)
    return True


def _context(entry: HandlerEntry) -> EntryContext:
    shared = Shared("ns", None, None, None, None,  # type: ignore[arg-type]
                    lambda name: logging.getLogger(f"keyrouter.handler.{name}"), _holds)
    return EntryContext.lazy(shared, "m1", "optout", 2, entry, 3)


def test_its_fields_are_those_of_a_context_built_by_hand() -> None:
    entry = HandlerEntry("log", {"level": "info"})
    context = _context(entry)
    assert context.idempotency_key == idempotency_key("ns", "m1", "optout", 2, "log")
    assert context.params == {"level": "info"} and (context.rule, context.attempt) == ("optout", 3)
    assert isinstance(context.logger, logging.LoggerAdapter)
    assert context.logger.logger.name == "keyrouter.handler.log"
    assert context.logger.extra == {"message_id": "m1", "rule": "optout", "handler": "log",
                                    "attempt": 3}
    identified = _context(HandlerEntry("log", identity="confirm"))
    assert identified.idempotency_key == idempotency_key("ns", "m1", "optout", "confirm", "log")


def test_the_claim_check_asks_for_its_own_message() -> None:
    context = _context(HandlerEntry("log"))
    assert context.holds_claim is not None
    assert asyncio.run(context.holds_claim()) is True and CHECKED[-1] == "m1"


def test_replace_gives_a_plain_context_with_the_same_values() -> None:
    context = _context(HandlerEntry("log", {"a": 1}))
    copy = dataclasses.replace(context, params={"b": 2})
    assert type(copy) is Context
    assert copy.params == {"b": 2} and copy.idempotency_key == context.idempotency_key
    assert copy.rule == "optout" and copy.attempt == 3
