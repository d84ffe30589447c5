"""Conversations in the dispatcher: where a message goes, and the handler entries that apply it
(docs/conversations.md, "Exactly once").

When a message starts (its sender's earlier messages are finished, so the respondent's record
is current), `Conversations.route_for` picks its route: a message of a respondent with an open
conversation, or a start keyword, goes to the conversation's route, two entries run by the
dispatcher like any rule's: `conversation` applies the message to the record (one compare-and-set
in the store, tagged with the message id, so a repeat is a no-op) and `conversation_reply` sends
the SMS recorded with it.  The dispatcher's progress makes the send run once after the record; a
kill between the send and its progress write repeats the identical text to the same number, which
the provider refuses within ten minutes (451, counted as sent).  A `priority: high` rule keeps its
route; when it opts out (a `blacklist` entry) and a conversation is open, `conversation_end` is
appended to end it as opted out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from keyrouter.conversations import steps
from keyrouter.conversations.steps import OPEN, Record
from keyrouter.handlers.context import Context
from keyrouter.handlers.templating import require_client
from keyrouter.masking import mask_number
from keyrouter.message import Message
from keyrouter.providers.iletimerkezi import DUPLICATE_SMS, PermanentApiError
from keyrouter.retries import PermanentError
from keyrouter.rules.conversations import Conversation
from keyrouter.rules.emoji import has_emoji
from keyrouter.rules.model import HandlerEntry, Rule, RuleSet
from keyrouter.rules.router import Match, Route
from keyrouter.store.roles import ConversationStore

logger = logging.getLogger("keyrouter.conversations")
#: Tries of the compare-and-set before the entry fails (and is retried by the dispatcher).
SAVE_TRIES = 3
REFUSED_RECIPIENT = 452


def respondent_of(message: Message) -> str:
    """Who answers: the sender's E.164 number, or the sender as received."""
    return message.sender_e164 or message.sender.strip()


def is_opt_out(rule: Rule) -> bool:
    return any(entry.name == "blacklist" for entry in rule.handlers)


class Conversations:
    """The conversations of one rule set, for one dispatcher (its store and clock)."""

    def __init__(self, rules: RuleSet, store: ConversationStore | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.by_id: dict[str, Conversation] = {c.id: c for c in rules.conversations}
        self.start_rules: dict[str, Rule] = {r.name: r for r in rules.rules
                                             if r.name.startswith("conversation:")}
        self._store, self.clock = store, clock
        #: Told (message id, rule name) of each message sent to a conversation's route:
        #: `keyrouter replay` counts them under the conversation, not under their text's rule.
        self.on_route: Callable[[str, str], None] | None = None
        self._starts = [(conv, frozenset(conv.emoji(w) if has_emoji(w) else conv.normalizer(w)
                                         for w in conv.start)) for conv in self.by_id.values()]

    @property
    def store(self) -> ConversationStore:
        assert self._store is not None, "a conversation engine without a store (keyrouter check)"
        return self._store

    @classmethod
    def for_rules(cls, rules: RuleSet, store: ConversationStore,
                  clock: Callable[[], float] = time.time) -> Conversations | None:
        return cls(rules, store, clock) if rules.conversations else None

    def is_start(self, text: str) -> bool:
        """Whether `text` is a start keyword of any conversation."""
        emoji = has_emoji(text)
        return any((conv.emoji(text) if emoji else conv.normalizer(text)) in words
                   for conv, words in self._starts)

    def conversation_route(self, conv: Conversation, route: Route, message_id: str) -> Route:
        if self.on_route is not None:
            self.on_route(message_id, conv.rule_name)
        params: Mapping[str, Any] = {"id": conv.id, "engine": self}
        rule = self.start_rules[conv.rule_name]
        match = route.match if route.rule is rule else Match(conv.rule_name, None, how="exact")
        handlers = (HandlerEntry("conversation", params), HandlerEntry("conversation_reply", params))
        return Route(route.normalized, match, rule, handlers)

    async def route_for(self, message: Message, route: Route) -> Route:
        """`route` (the rules') or the conversation's, decided from the respondent's record."""
        respondent = respondent_of(message)
        record = await self.store.conversation_of(respondent) if respondent else None
        rule = route.rule
        if rule is not None and rule.priority == "high":
            ending = record is not None and is_opt_out(rule) and (
                record.message_id == message.id
                or record.is_open(self.by_id.get(record.conversation), self.clock()))
            if ending:
                entry = HandlerEntry("conversation_end", {"engine": self})
                return Route(route.normalized, route.match, rule, (*route.handlers, entry))
            return route
        if record is not None:
            conv = self.by_id.get(record.conversation)
            if conv is not None and (record.message_id == message.id
                                     or record.is_open(conv, self.clock())):
                return self.conversation_route(conv, route, message.id)
        if rule is not None and rule.name in self.start_rules:
            conv = self.by_id.get(rule.name.partition(":")[2])
            if conv is not None:
                return self.conversation_route(conv, route, message.id)
        return route

    def apply(self, conv: Conversation, record: Record | None, text: str, message_id: str,
              respondent: str, now: float) -> Record:
        """The record once the message is applied (`conv`: the conversation it was routed to)."""
        if record is not None:
            current = self.by_id.get(record.conversation)
            if current is not None and record.is_open(current, now):
                if self.is_start(text):
                    return steps.resend(current, record, message_id, now)
                return steps.answer(current, record, text, message_id, now)
        return steps.start(conv, respondent, message_id, now)


def _engine(context: Context) -> Conversations:
    engine = context.params.get("engine")
    if not isinstance(engine, Conversations):
        raise PermanentError("conversation: a step of a conversation, added by keyrouter itself; "
                             "declare conversations under `conversations:` in the rules file")
    return engine


def params_problem(params: Mapping[str, Any]) -> str | None:
    """These entries are never written in a rules file: the dispatcher adds them."""
    return ("the conversation entries are added by keyrouter itself: declare a conversation "
            "under `conversations:` (docs/conversations.md)")


async def step(message: Message, match: Match | None, context: Context) -> None:
    """Apply `message` to its respondent's record, once."""
    engine = _engine(context)
    conv = engine.by_id.get(str(context.params.get("id")))
    respondent = respondent_of(message)
    if conv is None or not respondent:
        raise PermanentError(f"conversation: message {message.id} has no sender or its "
                             "conversation is no longer in the rules")
    if message.sender_e164 is None:  # nothing recorded: no question could ever reach it
        raise PermanentError(f"conversation: message {message.id}: the sender "
                             f"{mask_number(message.sender)!r} is not a mobile number (a short "
                             "code or a name), so there is no one to ask")
    for _ in range(SAVE_TRIES):
        record = await engine.store.conversation_of(respondent)
        if record is not None and record.message_id == message.id:
            context.logger.info("conversation: message %s was already applied", message.id)
            return
        now = engine.clock()
        started = record is None or not record.is_open(engine.by_id.get(record.conversation), now)
        new = engine.apply(conv, record, message.text, message.id, respondent, now)
        if await engine.store.save_conversation(new, record.message_id if record else None):
            _log_step(context, None if started else record, new, message)
            return
    raise RuntimeError(f"conversation: the record of {mask_number(respondent)} kept changing")


def _log_step(context: Context, old: Record | None, new: Record, message: Message) -> None:
    who = mask_number(new.respondent)
    if old is None:
        what = "started"
    elif new.status != OPEN:
        what = f"ended {new.status}"
    elif new.step != old.step:
        what = f"answer to question {old.step + 1} recorded"
    elif new.misses != old.misses:
        what = f"answer fits no choice ({new.misses} in a row)"
    else:
        what = "current question sent again"
    # never the answer itself: free text may hold anything
    context.logger.info("conversation %s: %s for %s, message %s (%d characters, not logged)",
                        new.conversation, what, who, message.id, len(message.text))


async def send(message: Message, match: Match | None, context: Context) -> None:
    """Send the SMS recorded with `message`, if any."""
    engine = _engine(context)
    conv = engine.by_id.get(str(context.params.get("id")))
    record = await engine.store.conversation_of(respondent_of(message))
    if record is None or record.message_id != message.id or not record.reply:
        return
    number = message.sender_e164
    if number is None:
        raise PermanentError(f"conversation: message {message.id}: the sender "
                             f"{mask_number(message.sender)!r} is not a mobile number, so there "
                             "is no one to send the question to")
    current = engine.by_id.get(record.conversation) or conv
    sender = (current.sender if current else None) or (
        context.settings.sender if context.settings else None)
    if not sender:
        raise PermanentError("conversation: no sender name: set ILETIMERKEZI_SENDER or give the "
                             "conversation a `sender`")
    client = require_client(context, "conversation")
    masked = mask_number(number)
    try:
        order = await client.send_sms(sender=sender, text=record.reply, numbers=[number], iys="0")
    except PermanentApiError as exc:
        if exc.code == DUPLICATE_SMS:
            context.logger.info("conversation: this text already went to %s (451); counted as "
                                "sent, message %s", masked, message.id)
            return
        if exc.code == REFUSED_RECIPIENT:
            context.logger.warning("conversation: the provider refused the recipient %s (452); "
                                   "message %s", masked, message.id)
            return
        raise
    context.logger.info("conversation %s: SMS sent to %s, order %s, message %s",
                        record.conversation, masked, order, message.id)


async def end(message: Message, match: Match | None, context: Context) -> None:
    """An opt-out while a conversation is open: it ends as opted out, its answers kept."""
    engine = _engine(context)
    respondent = respondent_of(message)
    for _ in range(SAVE_TRIES):
        record = await engine.store.conversation_of(respondent)
        if record is None or record.message_id == message.id or record.status != OPEN:
            return
        if await engine.store.save_conversation(steps.opt_out(record, message.id),
                                                record.message_id):
            context.logger.info("conversation %s: ended opted out for %s, message %s",
                                record.conversation, mask_number(respondent), message.id)
            return
    raise RuntimeError(f"conversation: the record of {mask_number(respondent)} kept changing")
