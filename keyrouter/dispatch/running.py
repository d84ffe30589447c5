"""One claimed message: its handler entries one after another, on its own.

The entries that already succeeded (the claim's progress) are skipped; each success with entries
left is written before the next entry starts; the last one hands the message to the writer's done
batch.  A failed entry schedules a retry with backoff (the entries that succeeded are not run
again) or, after the last attempt or on a permanent error, dead-letters the message; a legal
effect's last attempt comes one business day before its deadline (keyrouter.duty).  An optional
entry's failure is recorded and the rule goes on; one with attempts left is retried once the rest
has run.  A stop or a lost lease ends the message between entries, and a lost claim (fencing)
stops it before a provider call (docs/opt-out-duty.md).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Collection
from dataclasses import fields
from datetime import UTC, datetime
from types import MemberDescriptorType
from typing import TYPE_CHECKING, Any

from keyrouter.dispatch.duty import (
    LEGAL_MAX_DELAY,
    give_up_at,
    is_legal,
    legal_delay,
    legal_exhausted,
    optional_failed,
)
from keyrouter.dispatch.limits import NOT_STARTED, await_with_limit, call_in_thread
from keyrouter.dispatch.outcomes import (
    ADMITTED,
    DEAD,
    DEFAULT_RULE,
    DEFERRED,
    DONE,
    RETRYING,
    SKIPPED,
    describe_error,
    entry_key,
    is_permanent,
    legacy_entry_key,
)
from keyrouter.dispatch.scheduling import FINISHING, Item, Queue
from keyrouter.dispatch.tally import Tally
from keyrouter.dispatch.writes import Writer
from keyrouter.events import Events
from keyrouter.handlers.context import Context, idempotency_key
from keyrouter.handlers.fencing import StaleClaim
from keyrouter.masking import mask_number
from keyrouter.message import Message
from keyrouter.rules.model import HandlerEntry, Rule
from keyrouter.rules.router import Route
from keyrouter.store.base import Claimed

if TYPE_CHECKING:
    from keyrouter.dispatch.core import Dispatcher

logger = logging.getLogger("keyrouter.dispatch")


async def run_message(d: Dispatcher, item: Item) -> None:
    claim = item.claim
    assert claim is not None
    route = await _route_now(d, item)
    rule = route.rule
    rule_name = rule.name if rule else DEFAULT_RULE
    message = item.message
    if _too_old(d, item, claim, rule):
        d.finish_later(item, rule_name, skipped=True)
        return
    if rule is None and not route.handlers:
        logger.info("message %s matched no rule and there is no default: done, nothing run",
                    message.id, extra={"message_id": message.id, "rule": "none"})
    remaining = _remaining(route, rule_name, claim.succeeded)
    message = _with_normalized(message, route.normalized)
    # optional entries that failed with attempts left: retried once the rest of the rule ran
    again: list[tuple[int, HandlerEntry, BaseException]] = []
    for n, (index, entry) in enumerate(remaining):
        if d.stopped() or item.lost:
            await d.give_back(item)
            return
        item.started = True
        error = await run_entry(d, item, message, route, rule_name, index, entry)
        if error is NOT_STARTED:
            await d.give_back(item)
            return
        if isinstance(error, StaleClaim):
            logger.warning("message %s: %s; leaving it to the worker that holds it", item.id, error)
            d.lost(item)
            return
        if error is not None:
            if not entry.optional:
                await failed(d, item, rule_name, index, entry, error)
                return
            failures = claim.attempts + 1
            gave_up = is_permanent(error) or d.policy.exhausted(failures)
            await optional_failed(d, message, route, rule_name, index, entry,
                                  describe_error(error), failures, gave_up)
            if not gave_up:
                again.append((index, entry, error))
                continue
        if (n < len(remaining) - 1 or again) and not await d.writer.progress(
                item.id, entry_key(rule_name, index, entry)):
            logger.warning("lease lost for message %s; stopping its handlers here", item.id)
            d.lost(item)
            return
    if again:  # a retry runs only the optional entries that have not succeeded
        index, entry, error = again[0]
        await failed(d, item, rule_name, index, entry, error)
        return
    d.finish_later(item, rule_name)  # nothing (left) to run is a crash after the last entry


async def _route_now(d: Dispatcher, item: Item) -> Route:
    """The message's route: the one found when it was offered, unless the rules were reloaded
    since; a conversation may take it over, decided now that the sender's earlier messages are
    finished."""
    route = item.route if item.route is not None and item.router is d.router else d.route(item.message)
    item.route = route
    if d.conversations is not None:
        route = await d.conversations.route_for(item.message, route)
    return route


def _too_old(d: Dispatcher, item: Item, claim: Claimed, rule: Rule | None) -> bool:
    """Skipped by its rule's max_age.  max_age decides once, at the first attempt: a retry (or a
    dead letter retried by hand) of a message that was young enough is never skipped half-done.
    A claim taken over from a worker that died (or stalled) is not a first attempt: its first
    entry may have had its effect; nor is one this worker started before its own lease ran out
    (the progress write was refused)."""
    first_time = (claim.attempts == 0 and not claim.succeeded and not claim.taken_over
                  and not item.started)
    return (first_time and rule is not None and rule.max_age is not None
            and datetime.fromtimestamp(d.clock(), UTC) - item.message.received_at > rule.max_age)


def _remaining(route: Route, rule_name: str,
               succeeded: Collection[str]) -> list[tuple[int, HandlerEntry]]:
    """The entries of the route that have not succeeded yet (by their key, or by the position
    key progress written before entry keys named what an entry is)."""
    return [(i, e) for i, e in enumerate(route.handlers)
            if not succeeded or (entry_key(rule_name, i, e) not in succeeded
                                 and legacy_entry_key(rule_name, i, e) not in succeeded)]


# the slot descriptors of Message's fields: set directly, past the frozen class's __setattr__
_MESSAGE_SLOTS: tuple[MemberDescriptorType, ...] = tuple(
    getattr(Message, f.name) for f in fields(Message) if f.name != "normalized")
_NORMALIZED_SLOT: MemberDescriptorType = vars(Message)["normalized"]


def _with_normalized(message: Message, normalized: str) -> Message:
    """`dataclasses.replace(message, normalized=...)` without its per-call introspection and
    `__init__` (this runs for every message); the message itself when it already says so."""
    if message.normalized == normalized:
        return message
    copy = object.__new__(Message)
    for slot in _MESSAGE_SLOTS:
        slot.__set__(copy, slot.__get__(message))
    _NORMALIZED_SLOT.__set__(copy, normalized)
    return copy


async def run_entry(d: Dispatcher, item: Item, message: Message, route: Route, rule_name: str,
                    index: int, entry: HandlerEntry) -> Any:
    """None on success, NOT_STARTED when a stop kept a queued thread call from starting, else
    the exception."""
    func, is_async = d.resolve(entry.name)
    claim = item.claim
    assert claim is not None
    attempt = claim.attempts + 1
    fields = {"message_id": message.id, "rule": rule_name, "handler": entry.name, "attempt": attempt}
    context = Context(
        params=entry.params,
        idempotency_key=idempotency_key(d.namespace, message.id, rule_name,
                                        entry.identity or index, entry.name),
        logger=logging.LoggerAdapter(d.handler_logger(entry.name), fields),
        rule=rule_name,
        attempt=attempt,
        client=d.client,
        store=d.store,
        settings=d.settings,
        events=d.events,
        holds_claim=lambda: _holds(d, item.id),
    )
    limit = entry.timeout or d.handler_timeout
    started = time.perf_counter()
    try:
        if is_async:
            await await_with_limit(func(message, route.match, context), d.watchdog, limit)
        else:
            result = await call_in_thread(d.threads_pool, d.watchdog, limit,
                                          lambda: d.abandoned(entry.name), d.call_unless_stopped,
                                          func, message, route.match, context)
            if result is NOT_STARTED:
                return NOT_STARTED
            if inspect.isawaitable(result):
                await await_with_limit(result, d.watchdog, limit)
    except Exception as exc:
        d.events.handler_finished(entry.name, time.perf_counter() - started, False)
        return exc
    d.events.handler_finished(entry.name, time.perf_counter() - started, True)
    return None


async def _holds(d: Dispatcher, id: str) -> bool:
    """Fencing (keyrouter.fencing): this worker still holds the claim; renews it."""
    return bool(await d.store.renew([id], d.owner, d.lease))


async def failed(d: Dispatcher, item: Item, rule_name: str, index: int, entry: HandlerEntry,
                 exc: BaseException) -> None:
    claim = item.claim
    assert claim is not None
    message = item.message
    failures = claim.attempts + 1
    error = describe_error(exc)
    where = f"message {message.id} from {mask_number(message.sender)}, rule {rule_name}, " \
            f"handler #{index} {entry.name}"
    # structured log fields (JSON logs): never the number or the text
    fields = {"message_id": message.id, "rule": rule_name, "handler": entry.name, "attempt": failures}
    legal = is_legal(entry)
    received = message.received_at.timestamp()
    if is_permanent(exc) or (legal_exhausted(d.policy, failures, received, d.clock()) if legal
                             else d.policy.exhausted(failures)):
        why = "permanent error" if is_permanent(exc) else f"attempt {failures} of {d.policy.max_attempts}"
        if legal and not is_permanent(exc):
            why = f"attempt {failures}, past its give-up point one business day before its deadline"
        # a retry by hand must not meet max_age again: mark the message admitted.  Written only
        # while this worker still holds the lease: when it ran out, another worker may have taken
        # the message over and finished it, and a stale dead letter would undo that (a retry by
        # hand would then run every entry again); the message is checked and claimed afresh.
        if await d.store.record_success([(message.id, ADMITTED)], d.owner):
            logger.warning("%s: the lease ran out before this failure was written; leaving the "
                           "message to whoever holds it (or to a fresh claim)", where)
            d.lost(item)
            return
        if await d.store.dead_letter(message.id, d.owner, error, rule=rule_name,
                                     row=dict(message.row), now=d.clock()) is False:
            logger.warning("%s: another worker holds it now; leaving it to them", where)
            d.lost(item)
            return
        logger.error("dead letter: %s (%s): %s", where, why, error, extra=fields)
        d.dead(item, rule_name)
        return
    asked = float(getattr(exc, "retry_after", None) or 0)  # RetryLater, e.g. a webhook's Retry-After
    if legal:
        delay = max(legal_delay(d.policy, failures), min(asked, LEGAL_MAX_DELAY))
        logger.warning("retry in %.0fs: %s (attempt %d, a legal effect: retried until %s): %s",
                       delay, where, failures,
                       datetime.fromtimestamp(give_up_at(received), UTC).isoformat(), error,
                       extra=fields)
    else:
        delay = max(d.policy.delay(failures), min(asked, d.policy.max_delay))
        logger.warning("retry in %.0fs: %s (attempt %d of %d): %s", delay, where, failures,
                       d.policy.max_attempts, error, extra=fields)
    if await d.store.fail(message.id, d.owner, error, d.clock() + delay) == -1:
        logger.warning("%s: another worker holds it now; leaving it to them", where)
        d.lost(item)
        return
    d.retrying(item, rule_name, delay)


class MessageEnds:
    """How a message leaves a slot: the Dispatcher's bookkeeping for each ending (done or skipped
    once written, given back at a stop, lost to another worker, dead, retrying)."""

    _queue: Queue
    _to_release: list[str]
    _wake: asyncio.Event
    events: Events
    tally: Tally

    @property
    def writer(self) -> Writer:
        raise NotImplementedError

    def _defer_line(self, item: Item, outcome: str | None) -> None:
        raise NotImplementedError

    def finish_later(self, item: Item, rule: str, *, skipped: bool = False) -> None:
        item.state, item.rule, item.skipped = FINISHING, rule, skipped
        self.writer.finish(item, skipped=skipped, forever=not item.message.date_known)

    def _finished(self, items: list[Item], taken: list[str]) -> None:
        """Done markers written (writer callback): the senders' next messages may start."""
        lost = set(taken)
        now = time.monotonic()
        for item in items:
            if item.id in lost:
                logger.warning("message %s was taken over by another worker before it was marked "
                               "done; its last handler entry may run again", item.id)
                self._queue.defer(item, now)
                self._defer_line(item, None)
                continue
            self._queue.drop(item)
            outcome = SKIPPED if item.skipped else DONE
            item.settle(outcome)
            self.tally.add(item.rule)
            self.events.message_finished(item.rule, outcome)
        self._wake.set()

    async def give_back(self, item: Item) -> None:
        """A stop between entries: the lease is given back (in one round trip with the others
        when the loop winds down) so another worker can take the message at once."""
        self._to_release.append(item.id)
        self._queue.defer(item, time.monotonic())
        self._defer_line(item, DEFERRED)

    def lost(self, item: Item) -> None:
        """Another worker holds the message now (or a write failed): leave it to them."""
        self._queue.defer(item, time.monotonic())
        self._defer_line(item, None)

    def dead(self, item: Item, rule: str) -> None:
        self._queue.drop(item)
        item.settle(DEAD)
        self.tally.add(rule)
        self.events.message_finished(rule, DEAD)

    def retrying(self, item: Item, rule: str, delay: float) -> None:
        self._queue.defer(item, time.monotonic(), delay)
        self._defer_line(item, RETRYING)
        self.events.message_finished(rule, RETRYING)
