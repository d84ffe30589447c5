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

import inspect
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from keyrouter.dispatch.duty import (
    LEGAL_MAX_DELAY,
    failure_where,
    give_up_at,
    is_legal,
    legal_delay,
    legal_exhausted,
    optional_failed,
)
from keyrouter.dispatch.ends import Ends
from keyrouter.dispatch.entry_context import EntryContext, Shared
from keyrouter.dispatch.limits import NOT_STARTED, Limits, first_step
from keyrouter.dispatch.outcomes import (
    ADMITTED,
    DEFAULT_RULE,
    describe_error,
    entry_key,
    is_permanent,
    legacy_entry_key,
)
from keyrouter.dispatch.routing import Routing
from keyrouter.dispatch.scheduling import FINISHING, Item
from keyrouter.dispatch.writes import Writer
from keyrouter.handlers.fencing import StaleClaim
from keyrouter.message import Message
from keyrouter.retries import RetryPolicy
from keyrouter.rules.model import HandlerEntry
from keyrouter.rules.router import Route
from keyrouter.store.base import Claimed, Store

logger = logging.getLogger("keyrouter.dispatch")
# after a failed entry: the message ends here; an optional one is retried later; it gave up
_ENDS, _LATER, _GAVE_UP = object(), object(), object()


class Runner:
    """Runs claimed messages: given the rules (`routing`), the handlers' limits, the writer of
    progress and done markers, the endings' bookkeeping, and the store for failures."""

    def __init__(self, *, routing: Routing, limits: Limits, writer: Writer, ends: Ends,
                 store: Store, owner: str, policy: RetryPolicy,
                 clock: Callable[[], float], handler_timeout: float, shared: Shared,
                 stopped: Callable[[], bool]) -> None:
        self.routing, self.limits, self.writer, self.ends = routing, limits, writer, ends
        self.store, self.owner, self.policy = store, owner, policy
        self.clock, self.handler_timeout, self.shared = clock, handler_timeout, shared
        self.stopped = stopped

    async def run_message(self, item: Item) -> None:
        claim = item.claim
        assert claim is not None
        routing = self.routing
        route = routing.rules_route(item) if routing.conversations is None \
            else await routing.route_now(item)
        rule = route.rule
        rule_name = rule.name if rule else DEFAULT_RULE
        message = item.message
        if rule is not None and rule.max_age is not None and self._too_old(item, claim, rule):
            self.finish_later(item, rule_name, skipped=True)
            return
        if rule is None and not route.handlers:
            logger.info("message %s matched no rule and there is no default: done, nothing run",
                        message.id, extra={"message_id": message.id, "rule": "none"})
        remaining = _remaining(route, rule_name, claim.succeeded)
        message = _with_normalized(message, route.normalized)
        # optional entries that failed with attempts left: retried once the rest of the rule ran
        again: list[tuple[int, HandlerEntry, BaseException]] = []
        last = len(remaining) - 1
        for n, (index, entry) in enumerate(remaining):
            if item.lost or self.stopped():
                self.ends.give_back(item)
                return
            item.started = True
            error = await self.run_entry(item, message, route, rule_name, index, entry)
            if error is not None:
                after = await self._entry_failed(item, message, route, rule_name, index, entry,
                                                 error, again)
                if after is _ENDS:
                    return
                if after is _LATER:
                    continue
            if (n < last or again) and not await self.writer.progress(
                    item.id, entry_key(rule_name, index, entry)):
                logger.warning("lease lost for message %s; stopping its handlers here", item.id)
                self.ends.lost(item)
                return
        if again:  # a retry runs only the optional entries that have not succeeded
            index, entry, error = again[0]
            await self.failed(item, rule_name, index, entry, error)
            return
        self.finish_later(item, rule_name)  # nothing (left) to run is a crash after the last entry

    async def _entry_failed(self, item: Item, message: Message, route: Route, rule_name: str,
                            index: int, entry: HandlerEntry, error: Any,
                            again: list[tuple[int, HandlerEntry, BaseException]]) -> object:
        """An entry did not succeed: _ENDS when the message ends here; for an optional entry the
        rule goes on: _LATER when it has attempts left (appended to `again`), else _GAVE_UP."""
        if error is NOT_STARTED:
            self.ends.give_back(item)
            return _ENDS
        if isinstance(error, StaleClaim):
            logger.warning("message %s: %s; leaving it to the worker that holds it", item.id, error)
            self.ends.lost(item)
            return _ENDS
        if not entry.optional:
            await self.failed(item, rule_name, index, entry, error)
            return _ENDS
        claim = item.claim
        assert claim is not None
        failures = claim.attempts + 1
        gave_up = is_permanent(error) or self.policy.exhausted(failures)
        await optional_failed(self.store, self.shared.events, self.policy, self.clock, message, route,
                              rule_name, index, entry, describe_error(error), failures, gave_up)
        if gave_up:
            return _GAVE_UP
        again.append((index, entry, error))
        return _LATER

    def finish_later(self, item: Item, rule: str, *, skipped: bool = False) -> None:
        """All entries returned: the slot is free now, the done marker goes in the next batch."""
        item.state, item.rule, item.skipped = FINISHING, rule, skipped
        self.writer.finish(item, skipped=skipped, forever=not item.message.date_known)

    def _too_old(self, item: Item, claim: Claimed, rule: Any) -> bool:
        """Skipped by its rule's max_age.  max_age decides once, at the first attempt: a retry (or
        a dead letter retried by hand) of a message that was young enough is never skipped
        half-done.  A claim taken over from a worker that died (or stalled) is not a first
        attempt: its first entry may have had its effect; nor is one this worker started before
        its own lease ran out (the progress write was refused)."""
        first_time = (claim.attempts == 0 and not claim.succeeded and not claim.taken_over
                      and not item.started)
        return (first_time and datetime.fromtimestamp(self.clock(), UTC)
                - item.message.received_at > rule.max_age)

    async def run_entry(self, item: Item, message: Message, route: Route, rule_name: str,
                        index: int, entry: HandlerEntry) -> Any:
        """None on success, NOT_STARTED when a stop kept a queued thread call from starting,
        else the exception."""
        func, is_async = self.routing.handlers.resolve(entry.name)
        claim = item.claim
        assert claim is not None
        context = EntryContext.lazy(self.shared, message.id, rule_name, index, entry,
                                    claim.attempts + 1)
        limit = entry.timeout or self.handler_timeout
        limits = self.limits
        started = time.perf_counter()
        try:
            if is_async:
                coro = func(message, route.match, context)
                since = time.monotonic()
                finished, pending = first_step(coro)
                if not finished:  # it waits for something: the rest runs under its time limit
                    await limits.resume(coro, pending, since, limit)
            else:
                result = await limits.run_in_thread(limit, entry.name, self._unless_stopped,
                                                    func, message, route.match, context)
                if result is NOT_STARTED:
                    return NOT_STARTED
                if inspect.isawaitable(result):
                    await limits.run_async(result, limit)
        except Exception as exc:
            self.shared.events.handler_finished(entry.name, time.perf_counter() - started, False)
            return exc
        self.shared.events.handler_finished(entry.name, time.perf_counter() - started, True)
        return None

    def _unless_stopped(self, func: Callable[..., Any], *args: Any) -> Any:
        """Runs in a handler thread: a call still queued when a stop arrives never starts."""
        return NOT_STARTED if self.stopped() else func(*args)

    async def failed(self, item: Item, rule_name: str, index: int, entry: HandlerEntry,
                     exc: BaseException) -> None:
        claim = item.claim
        assert claim is not None
        message, policy, store = item.message, self.policy, self.store
        failures = claim.attempts + 1
        error = describe_error(exc)
        where, fields = failure_where(message, rule_name, index, entry, failures)
        legal = is_legal(entry)
        received = message.received_at.timestamp()
        if is_permanent(exc) or (legal_exhausted(policy, failures, received, self.clock()) if legal
                                 else policy.exhausted(failures)):
            why = "permanent error" if is_permanent(exc) else \
                f"attempt {failures} of {policy.max_attempts}"
            if legal and not is_permanent(exc):
                why = f"attempt {failures}, past its give-up point one business day before its deadline"
            # a retry by hand must not meet max_age again: mark the message admitted.  Written
            # only while this worker still holds the lease: when it ran out, another worker may
            # have taken the message over and finished it, and a stale dead letter would undo
            # that (a retry by hand would then run every entry again); the message is checked
            # and claimed afresh.
            if await store.record_success([(message.id, ADMITTED)], self.owner):
                logger.warning("%s: the lease ran out before this failure was written; leaving "
                               "the message to whoever holds it (or to a fresh claim)", where)
                self.ends.lost(item)
                return
            if await store.dead_letter(message.id, self.owner, error, rule=rule_name,
                                       row=dict(message.row), now=self.clock()) is False:
                logger.warning("%s: another worker holds it now; leaving it to them", where)
                self.ends.lost(item)
                return
            logger.error("dead letter: %s (%s): %s", where, why, error, extra=fields)
            self.ends.dead(item, rule_name)
            return
        asked = float(getattr(exc, "retry_after", None) or 0)  # RetryLater, e.g. a Retry-After
        if legal:
            delay = max(legal_delay(policy, failures), min(asked, LEGAL_MAX_DELAY))
            logger.warning("retry in %.0fs: %s (attempt %d, a legal effect: retried until %s): %s",
                           delay, where, failures,
                           datetime.fromtimestamp(give_up_at(received), UTC).isoformat(), error,
                           extra=fields)
        else:
            delay = max(policy.delay(failures), min(asked, policy.max_delay))
            logger.warning("retry in %.0fs: %s (attempt %d of %d): %s", delay, where, failures,
                           policy.max_attempts, error, extra=fields)
        if await store.fail(message.id, self.owner, error, self.clock() + delay) == -1:
            logger.warning("%s: another worker holds it now; leaving it to them", where)
            self.ends.lost(item)
            return
        self.ends.retrying(item, rule_name, delay)


def _remaining(route: Route, rule_name: str,
               succeeded: Collection[str]) -> list[tuple[int, HandlerEntry]]:
    """The entries of the route that have not succeeded yet (by their key, or by the position
    key progress written before entry keys named what an entry is)."""
    if not succeeded:
        return list(enumerate(route.handlers))
    return [(i, e) for i, e in enumerate(route.handlers)
            if entry_key(rule_name, i, e) not in succeeded
            and legacy_entry_key(rule_name, i, e) not in succeeded]


# Message's fields but `normalized`, read at once, and their slot descriptors' setters: a copy is
# set directly, past the frozen class's __setattr__
_MESSAGE_FIELDS = tuple(f.name for f in fields(Message) if f.name != "normalized")
_READ_FIELDS = attrgetter(*_MESSAGE_FIELDS)
_SETTERS: tuple[Callable[[Message, Any], None], ...] = tuple(
    getattr(Message, name).__set__ for name in _MESSAGE_FIELDS)
_SET_NORMALIZED: Callable[[Message, str], None] = vars(Message)["normalized"].__set__


def _with_normalized(message: Message, normalized: str) -> Message:
    """`dataclasses.replace(message, normalized=...)` without its per-call introspection and
    `__init__` (this runs for every message); the message itself when it already says so."""
    if message.normalized == normalized:
        return message
    copy = object.__new__(Message)
    for set_field, value in zip(_SETTERS, _READ_FIELDS(message), strict=True):
        set_field(copy, value)
    _SET_NORMALIZED(copy, normalized)
    return copy
