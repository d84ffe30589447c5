"""One fetcher per namespace: a fetch lease decides which worker calls get-inbox; the rows it
fetched reach every worker through the store.

However many workers run, the provider sees about one get-inbox call per interval:
1. each worker asks for the namespace's fetch lease once per interval (`store.acquire_fetch`);
   the holder gets a fencing token that grows each time the lease changes hands, and one that
   dies is replaced when its lease runs out;
2. the holder polls get-inbox, asks the store which of the ids are unfinished (one round trip)
   and publishes the rows it has not published yet (`store.publish`, fenced by the token: a
   deposed holder's late publish is dropped);
3. every worker, the holder too, reads the published rows (`store.published`) and hands them to
   its dispatcher.  A finished message's row leaves the store with its done marker, so what is
   shared stays bounded, and a poll over a processed inbox costs a fixed number of round trips.

Rows travel as the provider's JSON (ASCII-escaped, so lone surrogates survive every backend) and
are parsed by `keyrouter.message.parse_row` on arrival, exactly as a direct poll would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from keyrouter.dispatch.duplicates import content_digest, note_duplicate
from keyrouter.events import NO_EVENTS, Events
from keyrouter.masking import mask_number
from keyrouter.message import Message, parse_row
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.store.base import Store
from keyrouter.store.codec import dumps_ascii, loads
from keyrouter.worker.sources import parse_rows

logger = logging.getLogger("keyrouter.intake")


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one get-inbox poll brought: the provider's counts and the rows worth sharing."""

    rows: int  # rows the provider returned
    total_rows: int | None  # the provider's own totalRows
    unfinished: int  # rows whose message is not finished
    published: int  # rows newly published by this poll (-1: fenced, another worker leads now)


class Intake:
    """The fetch lease and the shared rows of one worker.  `is_leader` is True while this worker
    holds the namespace's fetch lease (the one that calls get-inbox)."""

    def __init__(self, store: Store, client: IletiMerkezi | None, *, owner: str, lease: float,
                 beyond_horizon: Callable[[Message], bool] = lambda m: False,
                 events: Events = NO_EVENTS) -> None:
        self.store = store
        self.client = client
        self.owner = owner
        self.lease = lease
        self.beyond_horizon = beyond_horizon
        self.events = events
        self.token: int | None = None
        self.cursor = 0
        # ids this holder published under `token` and still unfinished at its last poll: they are
        # not sent again (the store would ignore them anyway; this keeps the round trip small)
        self._sent: set[str] = set()
        # the content digest of each row this holder published and still unfinished: a later poll
        # bringing that id with other content is logged and counted (keyrouter/duplicates.py)
        self._digests: dict[str, str] = {}
        self._noted: set[tuple[str, str]] = set()  # (id, digest) of duplicates already reported
        # parsed rows by id, so reading the shared rows again does not parse them again
        self._known: dict[str, Message] = {}

    @property
    def is_leader(self) -> bool:
        return self.token is not None

    async def acquire(self, now: float) -> bool:
        """Take or renew the fetch lease (one round trip); True while this worker holds it."""
        token = await self.store.acquire_fetch(self.owner, self.lease, now)
        if token != self.token:
            self._sent.clear()
            if token is not None:
                logger.info("this worker now fetches for namespace %r (token %d)",
                            self.store.namespace, token)
            elif self.token is not None:
                logger.warning("another worker took over fetching for namespace %r",
                               self.store.namespace)
        self.token = token
        return token is not None

    async def release(self) -> None:
        """Hand the fetch lease on at a clean stop, so another worker polls at its next turn."""
        if self.token is not None:
            self.token = None
            await self.store.release_fetch(self.owner)

    async def fetch(self) -> Fetched:
        """Poll get-inbox once and publish the unfinished rows not yet published.  Raises the
        client's errors and the store's.  Call only while `is_leader`."""
        assert self.client is not None and self.token is not None
        inbox = await self.client.get_inbox()
        by_id: dict[str, Message] = {}
        stale = 0
        for message in parse_rows(inbox.rows):
            if message.id in by_id:
                self._duplicate(by_id[message.id], message)
                continue
            if message.id in self._digests:
                self._duplicate(self._digests[message.id], message)
            if self.beyond_horizon(message):
                stale += 1
                continue
            by_id[message.id] = message
        pending = await self.store.unfinished(list(by_id)) if by_id else []
        new = [(i, _row_json(by_id[i])) for i in pending if i not in self._sent]
        added = 0
        if new:
            added = await self.store.publish(new, self.token)
            if added == -1:
                logger.warning("another worker took over fetching; this poll's rows were not "
                               "published")
                self.token = None
                self._sent.clear()
            else:
                self._sent.update(i for i, _ in new)
                self._digests.update((i, content_digest(by_id[i].row)) for i, _ in new)
        self._sent.intersection_update(pending)
        self._digests = {i: d for i, d in self._digests.items() if i in self._sent}
        if stale:
            logger.debug("get-inbox: %d rows older than the horizon ignored", stale)
        await self._record_poll(len(inbox.rows))
        return Fetched(len(inbox.rows), inbox.total_rows, len(pending), added)

    def _duplicate(self, first: Message | str, second: Message) -> None:
        """Log and count a row sharing `first`'s id with other content, once per content (the
        provider keeps returning it at every poll)."""
        seen = (second.id, content_digest(second.row))
        if seen not in self._noted and note_duplicate(first, second, self.events):
            self._noted.add(seen)
            if len(self._noted) > 10_000:  # bounded: forgetting only repeats a warning
                self._noted.clear()

    async def _record_poll(self, rows: int) -> None:
        """The dashboard's "last poll": a failure to write it is logged and dropped, never fails
        the poll."""
        try:
            await self.store.record_poll(time.time(), rows)
        except Exception as exc:
            logger.warning("could not record the poll for the dashboard (%s: %s)",
                           type(exc).__name__, exc)

    async def read(self, *, full: bool = False) -> list[Message]:
        """Published rows of unfinished messages, in publish order: those published since the last
        read, or all of them with `full` (one round trip).  Rows older than the horizon are
        unpublished; a row that cannot be parsed is logged and unpublished."""
        cursor, rows = await self.store.published(0 if full else self.cursor)
        if cursor < self.cursor and not full:  # the store lost its state: start over
            cursor, rows = await self.store.published(0)
        self.cursor = cursor
        messages: list[Message] = []
        drop: list[str] = []
        seen: set[str] = set()
        for msg_id, text in rows:
            message = self._known.get(msg_id)
            if message is None:
                message = _parse(msg_id, text)
                if message is None:
                    drop.append(msg_id)
                    continue
                self._known[msg_id] = message
            if self.beyond_horizon(message):
                drop.append(msg_id)
                continue
            seen.add(msg_id)
            messages.append(message)
        if full:  # forget what is no longer shared (finished, or dropped)
            self._known = {i: self._known[i] for i in seen if i in self._known}
            # and send again what is no longer shared but may be unfinished again (a dead letter
            # retried by hand before the next poll): the store ignores a row already shared
            self._sent.intersection_update(i for i, _ in rows)
        if drop:
            await self.store.unpublish(drop)
        return messages


def _row_json(message: Message) -> str:
    """The provider's row as JSON: ASCII only (a lone surrogate becomes \\udXXX), any value that
    JSON cannot hold becomes its text."""
    return dumps_ascii(dict(message.row))


def _parse(msg_id: str, text: str) -> Message | None:
    try:
        row = loads(text)
        message = parse_row(row)
    except Exception as exc:  # a shared row nobody can read must not stop the rest
        logger.warning("dropping a shared row that cannot be read (%s: %s)", type(exc).__name__,
                       str(exc)[:200])
        return None
    if message.id != msg_id:  # published under another id than its own: not ours to guess
        logger.warning("dropping a shared row published as %r holding id %r (sender %s)",
                       msg_id, message.id, mask_number(message.sender))
        return None
    return message

