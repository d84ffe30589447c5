"""The store contract, cut by role: each consumer asks for the narrowest role it uses, and `Store`
(base.py), which every backend (Redis, SQLite, memory) implements and tests/store/ proves, is their
union.

Every method that takes a list of ids costs one round trip to the backend, whatever the length of
the list: that is what keeps a poll over a large, fully processed inbox cheap.

Vocabulary:
- *finished*: done (handlers all succeeded), skipped (e.g. older than a rule's max_age) or dead
  (dead-lettered).  A finished id is never claimed again, unless a dead letter is retried.
- *claim*: a lease held by one worker (`owner`, a random token) for `lease` seconds; renewed while
  handlers run, released on finish or failure.  Two owners never hold one id at once.
- *progress*: the handler entry keys of a message that already succeeded, so a retry skips them.
- *retry state*: failed attempts so far and the epoch time before which the id may not be claimed.
- *fencing*: `finish`, `fail` and `dead_letter` act on an id only when no OTHER owner holds a live
  lease on it.  The caller's own lease, an expired lease or none at all are fine (work that was
  done is still recorded when nobody took over); an id another owner holds is left completely
  alone (no marker, no attempt, no dead letter, its lease and progress untouched), so a stale
  worker whose lease expired and was taken over cannot finish or fail the new owner's message.
- *fetch lease*: one per namespace; its holder (the fetch leader) polls the provider and
  *publishes* the new rows, which every worker reads with `published`.  Its fencing token grows
  each time the lease is taken (not when renewed), so a publish by a leader that lost the lease is
  refused.  A published row lives until its id is finished (done, skipped or dead: dropped in the
  same atomic step) or unpublished, so what is shared stays bounded by the unfinished work.

Strings: ids, entry keys, errors, voters, choices and rows are arbitrary Python strings, NUL and
lone surrogates (half an emoji split across SMS segments) included; every backend stores and reads
them back exactly (see each backend's module doc for how).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from keyrouter.store.conversations import Record
from keyrouter.store.values import (
    Claimed,
    DeadLetter,
    Decision,
    Description,
    Health,
    LedgerCursor,
    OptOut,
    SurveyResults,
)


class ClaimStore(Protocol):
    """Claims, leases and progress of the messages a worker runs, and the all-time counters."""

    @abstractmethod
    async def unfinished(self, ids: Sequence[str]) -> list[str]:
        """The ids, in input order, that are not finished.  One round trip."""

    @abstractmethod
    async def claim(
        self, ids: Sequence[str], owner: str, lease: float, now: float, *, limit: int | None = None
    ) -> list[Claimed]:
        """Atomically lease every id that is unfinished, not leased by another owner (an expired
        lease counts as free) and whose retry time is <= `now` (epoch seconds).  Re-claiming an
        id this owner already holds renews it.  Returns the claimed ones in input order, at most
        `limit` of them (the first ones, as the caller orders by priority); None: no limit."""

    @abstractmethod
    async def renew(self, ids: Sequence[str], owner: str, lease: float) -> list[str]:
        """Extend the leases `owner` still holds; returns those ids (a lost lease is left out)."""

    @abstractmethod
    async def record_success(self, entries: Sequence[tuple[str, str]], owner: str) -> list[str]:
        """Add each (id, entry_key) to that id's progress, only where `owner` holds the lease.
        Returns the ids whose lease was lost (their entries were not recorded)."""

    @abstractmethod
    async def finish(
        self,
        ids: Sequence[str],
        owner: str,
        *,
        skipped: Sequence[str] = (),
        forever: Sequence[str] = (),
    ) -> list[str]:
        """Mark `ids` done and `skipped` skipped (both finished); drop their progress, retry state,
        lease and published row.  Idempotent.  Fenced (see the module doc): returns, in input order (`ids`
        then `skipped`) and once each, the ids left alone because another owner holds them.

        `forever` names ids of `ids` or `skipped` whose markers never expire, even with a
        horizon (a message without a provider date: the horizon cannot tell its age), including
        an id already marked with an expiring marker; other ids in it are ignored."""

    @abstractmethod
    async def fail(self, id: str, owner: str, error: str, retry_at: float) -> int:
        """Count a failed attempt, keep progress, forbid claims before `retry_at`, release the
        lease.  Returns the number of failed attempts so far, or -1 when fenced (another owner
        holds `id`: nothing changed).  `error` is informational: backends need not keep it (the
        dead letter keeps the last one)."""

    @abstractmethod
    async def dead_letter(
        self, id: str, owner: str, error: str, *, rule: str | None, row: Mapping[str, Any], now: float
    ) -> bool:
        """Finish `id` as dead with its error and row; keep progress (a retry skips entries that
        succeeded); release the lease; drop its published row.  Counts the attempt.  False when
        fenced (another owner holds `id`: nothing changed), else True."""

    @abstractmethod
    async def release(self, ids: Sequence[str], owner: str) -> None:
        """Give back leases `owner` holds without counting an attempt (a clean shutdown between
        handler entries); progress is kept.  One round trip."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Counters since the namespace began: done, skipped, dead, failed (attempts)."""


class DeadLetterStore(Protocol):
    """The dead letters: read, retried or dropped by hand (the CLI, the dashboard, metrics)."""

    @abstractmethod
    async def dead_letters(self) -> list[DeadLetter]:
        """All dead letters, oldest first."""

    @abstractmethod
    async def retry_dead(self, id: str) -> bool:
        """Make a dead letter unfinished again with zero attempts and publish its stored row
        among the shared rows (with store.retried.RETRIED_KEY added), in one atomic step, so the
        workers run it again whatever get-inbox holds; progress is kept.  False when `id` is not
        a dead letter."""

    @abstractmethod
    async def drop_dead(self, id: str) -> bool:
        """Discard a dead letter and mark the id done.  False when `id` is not a dead letter."""

    @abstractmethod
    async def dead_letters_page(self, offset: int = 0, limit: int = 50,
                                rules: Sequence[str] | None = None,
                                oldest_first: bool = False) -> list[DeadLetter]:
        """Up to `limit` dead letters, NEWEST failed first (ties: the greater id first; with
        `oldest_first` the exact reverse), skipping `offset` (counted among the matching ones).
        With `rules`, only dead letters of those rules (then it reads past the others: on Redis,
        server-side).  Reads only the page otherwise.  One round trip."""

    @abstractmethod
    async def get_dead_letter(self, id: str) -> DeadLetter | None:
        """One dead letter, or None when `id` is not one."""

    @abstractmethod
    async def dead_letter_count(self) -> int:
        """How many dead letters are held now (not the all-time `counts()["dead"]`)."""


class FeedStore(Protocol):
    """The namespace's fetch lease and the rows its holder shares with every worker."""

    @abstractmethod
    async def acquire_fetch(self, owner: str, lease: float, now: float) -> int | None:
        """Take the namespace's fetch lease when it is free (or expired), or renew it when `owner`
        holds it, for `lease` seconds.  Returns the fencing token while `owner` holds the lease,
        else None.  The token grows each time the lease is taken, never when renewed; leases run
        on the store's clock like claim leases (`now` is the caller's, for symmetry with claim).
        One round trip."""

    @abstractmethod
    async def release_fetch(self, owner: str) -> None:
        """Give the fetch lease up now (a clean stop), when `owner` holds it."""

    @abstractmethod
    async def publish(self, rows: Sequence[tuple[str, str]], token: int) -> int:
        """Share (id, row JSON text) pairs with every worker: adds the rows whose id is unfinished
        and not already published (the first of duplicate ids wins), in order, only while `token`
        is the current fetch token.  Returns the number added, or -1 when fenced (nothing added).
        One round trip, whatever the number of rows."""

    @abstractmethod
    async def published(self, after: int) -> tuple[int, list[tuple[str, str]]]:
        """(cursor, rows published after cursor `after`, in publish order); start with 0 and pass
        the cursor back.  Rows of finished or unpublished ids are gone.  A cursor greater than any
        this store handed out (the store lost its data) reads from the start again.  One round
        trip."""

    @abstractmethod
    async def unpublish(self, ids: Sequence[str]) -> None:
        """Drop the published rows of `ids` (e.g. messages beyond the horizon).  One round trip."""


class ActivityStore(Protocol):
    """The dashboard's activity figures: the last poll and messages finished per rule and hour."""

    @abstractmethod
    async def record_poll(self, at: float, rows: int) -> None:
        """Remember the fetch leader's latest get-inbox poll: its time and row count (the
        dashboard shows it; only the latest is kept).  One round trip."""

    @abstractmethod
    async def touch(self, at: float) -> None:
        """Write the namespace's write-check mark (its time, kept a day): a write every backend
        must accept, so `run --once` can tell a store that refuses writes (a full disk, a
        read-only file, Redis out of memory) from one with nothing to do: it raises then.  One
        round trip."""

    @abstractmethod
    async def last_poll(self) -> tuple[float, int] | None:
        """(at, rows) of the latest `record_poll`, None before the first.  One round trip."""

    @abstractmethod
    async def count_routed(self, counts: Mapping[tuple[str, int], int]) -> None:
        """Add finished messages per (rule, hour as epoch seconds // 3600).  Bounded: an hour's
        counters go ROUTED_HOURS hours after their last write.  One round trip per call (the
        dispatcher sums in memory and calls this about once a second, never once per message)."""

    @abstractmethod
    async def routed_since(self, hour: int) -> dict[int, dict[str, int]]:
        """{hour: {rule: count}} for the kept hours >= `hour` (at most ROUTED_HOURS of them,
        up to the store clock's hour and one beyond).  One round trip."""


class LedgerStore(Protocol):
    """The opt-out ledger, its pending marks and its pages."""

    @abstractmethod
    async def record_optout(self, entry: OptOut) -> None:
        """Append to the ledger; idempotent per (message_id, action): a repeated handler entry
        (crash and retry) does not add a second line, nor change `latest_optout`.  Only
        DECISIONS actions can become a number's `latest_optout`."""

    @abstractmethod
    async def latest_optout(self, number: str) -> OptOut | None:
        """The ledger entry for `number` that comes last in the total order of keyrouter/ordering.py
        (provider date, then numeric id, then id text; undated lines placed by id), judged as each
        line is recorded against the latest so far; among lines at the same place, the one
        recorded last.  None when the number has none.  One round trip,
        without scanning the ledger: a blacklist or unblacklist handler asks it before acting, so
        an old message retried by hand cannot undo a newer opposite one."""

    @abstractmethod
    async def optouts(self, since: float | None = None) -> list[OptOut]:
        """Ledger entries with received_at >= since (all when None), oldest received first."""

    @abstractmethod
    async def mark_optout_pending(self, entry: OptOut) -> bool:
        """Note that the effect (message_id, action) has started and is not in the ledger yet, so
        `optouts stats/overdue` count it as pending while it waits for a retry or sits in the dead
        letters.  True the first time; False when it was already marked (the effect is being
        repeated: a retry, or a worker killed mid-call) or is already in the ledger (then nothing
        is marked).  `record_optout` of the same (message_id, action) removes the mark."""

    @abstractmethod
    async def claim_decision(self, entry: OptOut, *, defer: bool = False) -> Decision:
        """Atomically decide whether message `entry.message_id` may apply the effect `entry` (a
        DECISIONS action) to `entry.number`, so two workers never both apply one decision:
        - LATER: the number's `latest_optout` belongs to another message that comes after this one
          in keyrouter/ordering.py's order (the latest request wins);
        - DECIDED, only with `defer` and an opt-out action: the latest entry is another message's
          opt-out (a provider opt-out yields to any recorded one);
        - BUSY: another message holds the number's claim: it claimed it less than DECISION_HOLD
          seconds ago (store clock), has a pending mark not yet in the ledger and is unfinished.
          Ask again later: once the holder recorded, LATER or DECIDED follow; once it is dead
          (finished), the claim is free, so a permanent failure loses no opt-out;
        - GRANTED: this message holds the number's claim now, and the effect is marked pending as
          by `mark_optout_pending` (`first` is its answer).
        Nothing changes unless GRANTED.  One round trip."""

    @abstractmethod
    async def pending_optouts(self) -> list[OptOut]:
        """The marks of `mark_optout_pending` not yet replaced by a ledger line, oldest received
        first (ties by message_id, action)."""

    async def optouts_page(
        self,
        *,
        before: LedgerCursor | None = None,
        limit: int = 50,
        since: float | None = None,
        until: float | None = None,
        action: str | None = None,
    ) -> list[OptOut]:
        """Up to `limit` ledger entries, NEWEST received first (ties: the greater
        "message_id|action" first, the reverse of `optouts`), strictly after the cursor `before`
        (see `ledger_cursor`) in that order, with since <= received_at < until and, when given,
        that action.  Reads only what it returns (plus, with an action filter, the entries it
        skips): never the whole ledger.  One round trip."""
        found, _ = await self.optouts_scan(before=before, limit=limit, since=since, until=until,
                                           action=action)
        return found

    @abstractmethod
    async def optouts_scan(
        self,
        *,
        before: LedgerCursor | None = None,
        limit: int = 50,
        scan: int | None = None,
        since: float | None = None,
        until: float | None = None,
        action: str | None = None,
    ) -> tuple[list[OptOut], LedgerCursor | None]:
        """`optouts_page` that examines at most `scan` entries after the cursor (None: no bound),
        so a filter that matches little costs a bounded read.  Returns (entries, next): `next`
        is the cursor of the last entry examined when it stopped early (the page full, or `scan`
        entries examined: then the page may be short, even empty, with older matches to come), or
        None when the ledger (within since/until) ended first.  One round trip."""

    @abstractmethod
    async def optouts_recorded(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (message_id, action) pairs have a ledger line.  One round trip."""


class ReconcileStore(Protocol):
    """The blacklist reconciliation's document and the synthetic rows it keeps."""

    @abstractmethod
    async def reconcile_state(self) -> dict[str, Any] | None:
        """The last `save_reconcile_state` document (docs/reconciliation.md), None before the
        first.  One round trip."""

    @abstractmethod
    async def save_reconcile_state(self, state: Mapping[str, Any]) -> None:
        """Replace the reconciliation document (JSON-serializable).  One round trip."""

    @abstractmethod
    async def save_reconciled_rows(self, rows: Sequence[tuple[str, str]]) -> int:
        """Keep (id, row JSON text) pairs of synthetic opt-out messages; an id already kept keeps
        its first row.  Returns how many were added.  One round trip."""

    @abstractmethod
    async def reconciled_rows(self) -> list[tuple[str, str]]:
        """Every kept (id, row) pair, by id.  One round trip."""

    @abstractmethod
    async def drop_reconciled_rows(self, ids: Sequence[str]) -> None:
        """Forget the kept rows of `ids` (their messages are finished).  One round trip."""


class VoteStore(Protocol):
    """Survey votes, one per voter per survey."""

    @abstractmethod
    async def vote(self, survey: str, voter: str, choice: str, *, policy: str, now: float,
                   valid: bool = True, vote_id: str = "") -> bool:
        """Record `voter`'s vote atomically across workers.  One vote per voter per survey:
        policy "last" replaces an earlier vote, "first" keeps it.  `valid=False` counts a rejected
        vote and changes nothing else.  Idempotent per `vote_id` (the handler's idempotency key):
        a repeat is a no-op.  Returns True when the counted vote changed.  Another policy raises
        ValueError."""

    @abstractmethod
    async def survey_results(self, survey: str) -> SurveyResults:
        """Votes per choice, voters, last vote time, rejected count (zeros for an unknown id)."""


class ConversationStore(Protocol):
    """Multi-question conversations: each respondent's latest record and runs."""

    @abstractmethod
    async def conversation_of(self, respondent: str) -> Record | None:
        """The respondent's latest conversation record (any status), None when there is none.
        One round trip."""

    @abstractmethod
    async def save_conversation(self, record: Record, expect: str | None) -> bool:
        """Atomically: when the respondent's latest record was applied by message `expect`
        (None: the respondent has no record), make `record` the latest and the respondent's run of
        `record.conversation`; True.  Otherwise change nothing; False (a message already applied,
        or a concurrent one).  One round trip."""

    @abstractmethod
    async def conversation_records(self, conversation: str) -> list[Record]:
        """Every respondent's latest run of `conversation`, ordered by respondent."""


class StoreInfo(Protocol):
    """What a store is and whether it answers: tools ask it instead of guessing the backend."""

    namespace: str

    @abstractmethod
    async def health(self, timeout: float = 10.0) -> Health:
        """Read something from the backend within `timeout` seconds; never raises (a failure is
        `Health.ok` False with the exception's type).  On Redis, also what each server says about
        persistence and eviction (`Health.servers`)."""

    @abstractmethod
    def describe(self) -> Description:
        """The backend's kind and location (no password), without a round trip."""

    async def close(self) -> None:
        """Release connections and files (nothing to release by default)."""
        return None
