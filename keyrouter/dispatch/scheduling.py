"""The local queue: which offered message may start next.

Every message waits in its sender's line, in the one order of keyrouter/ordering.py (provider
date, then numeric id, then id text; an undated row placed by its id); only the head of a line
may be claimed, and the next one only once the head is finished (done, skipped or dead), so one
person's RET and a later BASLA are never applied out of order, by this worker or any other (the
head may be held by another worker: the line then waits until the store says it is finished).
Heads that may start sit in a heap ordered by priority (high first), then received time.
A head that could not be claimed (held elsewhere, retry not due) waits for a recheck time.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime

from keyrouter.dispatch.outcomes import Report
from keyrouter.message import Message
from keyrouter.ordering import Position, entry_position, insertion_index
from keyrouter.rules.router import Route, Router
from keyrouter.store.base import Claimed

HIGH, NORMAL = 0, 1
PRIORITY_NAMES = ("high", "normal")
# where a message is in this worker
WAITING, CLAIMED, RUNNING, FINISHING = "waiting", "claimed", "running", "finishing"
RECHECK_FIRST, RECHECK_MAX = 0.5, 5.0  # seconds before a head that could not be claimed is tried again


class Waiter:
    """One `process()` call waiting for its messages to settle (run once, or not this time)."""

    def __init__(self, report: Report, pending: int,
                 progress: Callable[[int], None] | None = None) -> None:
        self.report = report
        self.pending = self.total = pending
        self.progress = progress  # called with the number settled so far
        self.settled = asyncio.Event()
        self.error: BaseException | None = None
        if pending == 0:
            self.settled.set()

    def settle(self, outcome: str | None) -> None:
        if outcome is not None:
            setattr(self.report, outcome, getattr(self.report, outcome) + 1)
        self.pending -= 1
        if self.progress is not None:
            self.progress(self.total - self.pending)
        if self.pending <= 0:
            self.settled.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.settled.set()


class Item:
    """One offered message in this worker (a plain slotted class: one is built per message)."""

    __slots__ = ("_order", "checked", "claim", "id", "in_ready", "lost", "message", "not_before",
                 "offered_at", "priority", "queued", "received", "recheck", "route",
                 "router", "rule", "sender", "seq", "skipped", "started", "state", "waiters")

    def __init__(self, message: Message, sender: str, seq: int, offered_at: float) -> None:
        self.message, self.sender, self.seq, self.offered_at = message, sender, seq, offered_at
        self.id = message.id
        self.received = _epoch(message.received_at)
        self._order: Position | None = None  # see `order`
        # routed once the store says it is unfinished (an inbox of done messages costs no
        # routing); `router` is the rules it was routed with: re-routed at start after a reload
        self.route: Route | None = None
        self.router: Router | None = None
        self.priority = NORMAL
        self.state = WAITING
        self.queued = True  # in the queue (False once dropped)
        self.checked = False  # the store said unfinished since it was offered or last deferred
        self.in_ready = False
        self.not_before = 0.0  # monotonic: do not claim before (retry or recheck)
        self.recheck = 0.0  # the current recheck delay (grows while the head stays unclaimable)
        self.claim: Claimed | None = None
        self.lost = False  # the lease went to another worker: stop between entries
        self.started = False  # an entry was started here: never a first attempt again (max_age)
        self.waiters: list[Waiter] | None = None
        self.rule = ""  # the rule it ran under (for events), set when it finishes
        self.skipped = False

    @property
    def order(self) -> Position:
        """ordering.position(message), worked out when first needed: only a sender with more
        than one message queued is ordered, and most senders of a burst have one."""
        if self._order is None:
            self._order = entry_position(self.received, self.message.date_known, self.id)
        return self._order

    def settle(self, outcome: str | None) -> None:
        """Tell every waiting `process()` call how this message ended this time."""
        waiters, self.waiters = self.waiters, None
        for waiter in waiters or ():
            waiter.settle(outcome)


def _order(item: Item) -> Position:
    return item.order


#: Epoch seconds of a date, remembered: a burst's messages share their seconds (and their datetime
#: objects, message.py), and `timestamp()` would be a tenth of offering a message.
_epoch = functools.lru_cache(maxsize=4096)(datetime.timestamp)


def sender_key(message: Message) -> str:
    return message.sender_e164 or message.sender or f"\x00{message.id}"


class Queue:
    """Offered, unfinished messages of this worker, by sender; not thread-safe (one event loop)."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.lines: dict[str, list[Item]] = {}  # sender -> items in ordering.py's order
        self._ready: list[tuple[int, float, int, Item]] = []  # heads that may be claimed
        self._timers: list[tuple[float, int, Item]] = []
        self._unchecked: list[Item] = []
        # sender -> its routed high-priority messages: the line's head is scheduled as high while
        # one waits behind it (a RET behind the sender's own survey answer is not left behind
        # the whole campaign)
        self._highs: dict[str, set[Item]] = {}
        self.claimed: tuple[deque[Item], deque[Item]] = (deque(), deque())  # by priority
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.items)

    # ------------------------------------------------------------------ adding and removing
    def add(self, message: Message, now: float) -> Item:
        item = Item(message, sender_key(message), next(self._seq), now)
        self.items[item.id] = item
        line = self.lines.setdefault(item.sender, [])
        at = insertion_index(line, item.order, _order) if line else 0
        if at == 0 and line and (line[0].state != WAITING or line[0].not_before > 0):
            # an earlier message that arrives late never overtakes one already started here, nor
            # one this worker tried to claim (it may be running on another worker, which puts the
            # late one behind it too); the ledger's latest-wins check orders their effects
            at = 1
        line.insert(at, item)
        self._unchecked.append(item)
        return item

    def drop(self, item: Item) -> None:
        """The message is finished (or not ours to track any more): its line moves on."""
        if not item.queued:
            return
        item.queued = False
        del self.items[item.id]
        line = self.lines[item.sender]
        was_head = line[0] is item
        if was_head:
            del line[0]
        else:
            line.remove(item)
        highs = self._highs.get(item.sender)
        if highs is not None:
            highs.discard(item)
            if not highs:
                del self._highs[item.sender]
        if not line:
            del self.lines[item.sender]
        elif was_head:
            self.make_ready(line[0])

    def clear(self) -> None:
        for item in self.items.values():
            item.queued = False
        self.__init__()  # type: ignore[misc]

    # ------------------------------------------------------------------ state of a line
    def head(self, item: Item) -> Item:
        return self.lines[item.sender][0]

    def is_head(self, item: Item) -> bool:
        line = self.lines.get(item.sender)
        return bool(line) and line[0] is item  # type: ignore[index]

    def behind(self, item: Item) -> list[Item]:
        """The later messages of the item's sender."""
        return [i for i in self.lines.get(item.sender, ()) if i is not item]

    def make_ready(self, item: Item) -> None:
        """Consider the item for a claim once it is checked, the head of its line and due."""
        if item.in_ready or item.state != WAITING or not item.checked:
            return
        if not self.is_head(item):
            return
        item.in_ready = True
        heapq.heappush(self._ready, (self.rank(item), item.received, item.seq, item))

    def rank(self, item: Item) -> int:
        """The priority the item is scheduled with: high when it or a later message of its
        sender is high."""
        return HIGH if item.priority == HIGH or item.sender in self._highs else item.priority

    def checked(self, item: Item) -> None:
        item.checked = True
        if item.priority == HIGH and item.sender in self.lines:
            self._highs.setdefault(item.sender, set()).add(item)
            head = self.lines[item.sender][0]
            if head is not item and head.in_ready and head.priority != HIGH:
                # queued as normal: queue it again as high (the stale entry is skipped by pick)
                heapq.heappush(self._ready, (HIGH, head.received, head.seq, head))
        self.make_ready(item)

    def defer(self, item: Item, now: float, delay: float | None = None) -> None:
        """Not claimable now: try again after `delay` (a retry's backoff) or a growing recheck time,
        asking the store first whether it is still unfinished."""
        item.state, item.claim, item.lost = WAITING, None, False
        if delay is None:
            item.recheck = min(RECHECK_MAX, max(RECHECK_FIRST, item.recheck * 2))
            delay = item.recheck
        else:
            item.recheck = 0.0
        item.not_before = now + delay
        item.checked = False
        heapq.heappush(self._timers, (item.not_before, item.seq, item))

    # ------------------------------------------------------------------ what the loop asks
    def take_unchecked(self, now: float) -> list[Item]:
        """Items to ask the store about: new ones and deferred heads whose recheck time came."""
        while self._timers and self._timers[0][0] <= now:
            _, _, item = heapq.heappop(self._timers)
            if item.queued and item.state == WAITING and not item.checked \
                    and item.not_before <= now:
                self._unchecked.append(item)
        found, self._unchecked = self._unchecked, []
        return [i for i in dict.fromkeys(found) if i.queued and not i.checked]

    def recheck(self, items: list[Item]) -> None:
        """Ask the store about these at the next tick."""
        self._unchecked.extend(items)

    def recheck_all(self) -> None:
        """A new `run()` loop: every waiting message is asked about (and claimed) afresh."""
        for item in self.items.values():
            if item.state == WAITING:
                item.checked, item.not_before = False, 0.0
                self._unchecked.append(item)

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def has_unchecked(self) -> bool:
        return bool(self._unchecked)

    def has_ready(self) -> bool:
        return bool(self._ready)

    def pick(self, n: int, now: float, *, waited_only: bool) -> list[Item]:
        """Up to `n` heads to claim, high priority first, then oldest.  With `waited_only` (no
        `run()` loop: `process()` calls only) messages nobody waits for any more are left."""
        out: list[Item] = []
        while self._ready and len(out) < n:
            _, _, _, item = heapq.heappop(self._ready)
            if not item.in_ready:  # an entry already taken (a head queued again as high)
                continue
            item.in_ready = False
            line = self.lines.get(item.sender)
            if (not item.queued or item.state != WAITING or not item.checked
                    or item.not_before > now or not line or line[0] is not item):  # not its head
                continue
            if waited_only and not item.waiters:
                continue
            out.append(item)
        return out

    def waiting(self) -> Iterator[Item]:
        return (i for i in self.items.values() if i.state in (WAITING, CLAIMED))

    def claimed_count(self) -> int:
        return len(self.claimed[0]) + len(self.claimed[1])

    def next_claimed(self) -> Item | None:
        for lane in self.claimed:
            while lane:
                item = lane.popleft()
                if item.queued and item.state == CLAIMED:
                    return item
        return None
