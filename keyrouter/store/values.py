"""The values the store contract (roles.py) takes and returns, and the constants it names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

#: Done markers outlive the horizon by this much, so a message just inside the horizon is never
#: forgotten while it is still in the inbox.
HORIZON_MARGIN = timedelta(days=2)
#: Hours of per-rule counts the store keeps (`count_routed`): the dashboard shows the last 24.
ROUTED_HOURS = 48


@dataclass(frozen=True, slots=True)
class Claimed:
    """A lease just taken, with what a retry needs to know."""

    id: str
    attempts: int = 0
    succeeded: frozenset[str] = frozenset()
    #: The id had another owner's expired lease: that worker died or stalled mid-message.
    taken_over: bool = False


@dataclass(frozen=True, slots=True)
class OptOut:
    """One consent effect: the opt-out ledger, for the CRM, İYS and the regulator.

    `action` is "blacklist" / "unblacklist" (the provider's blacklist) or "iys_ret" / "iys_onay"
    (a consent record in İYS).  `outcome` and `transaction_id` say what İYS answered: "recorded"
    (with İYS's transactionId), "already" (İYS already held that decision) or
    "nothing_to_withdraw" (a RET İYS refused with H175: it holds no consent for the recipient);
    None for blacklist lines.
    `dated` is False when the provider gave the message no date: `received_at` is then the time
    keyrouter first saw it (kept with the row), used for the deadline and İYS's consentDate, and
    the line's place in the order is its id (docs/ordering-and-masking.md).
    """

    number: str  # E.164
    action: str  # "blacklist" | "unblacklist" | "iys_ret" | "iys_onay"
    message_id: str
    keyword: str | None
    received_at: float  # epoch seconds
    handled_at: float  # epoch seconds
    outcome: str | None = None
    transaction_id: str | None = None
    dated: bool = True


@dataclass(frozen=True, slots=True)
class SurveyResults:
    """The store knows no survey's choices: a choice nobody (or nobody any more) votes for is
    absent from `votes`, so the caller fills in zeros."""

    survey: str
    votes: dict[str, int]  # choice -> voters whose counted vote is that choice
    voters: int
    last_vote_at: float | None  # epoch seconds: the greatest `now` of a valid, non-repeat vote
    rejected: int  # votes for a choice outside the survey's choices


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    error: str
    attempts: int
    failed_at: float  # epoch seconds
    rule: str | None = None
    row: Mapping[str, Any] = field(default_factory=dict)


#: Ledger actions that decide a number's state: only these become its `latest_optout`.  Other
#: lines (e.g. "reply_failed", an optional confirmation that failed: docs/opt-out-duty.md) are
#: kept in the ledger for people, and never make an older opt-out or opt-in look superseded.
DECISIONS = frozenset({"blacklist", "unblacklist", "iys_ret", "iys_onay"})

#: The DECISIONS that are an opt-out (the others are opt-ins).
OPT_OUT_ACTIONS = frozenset({"blacklist", "iys_ret"})

#: Seconds a number's decision claim (`claim_decision`) keeps others waiting after its holder last
#: claimed.  A live holder claims again at every attempt (retries are at most minutes apart), so
#: only a holder that stopped without finishing (its row gone) is outlived: then a waiter records
#: too, a duplicate rather than a lost opt-out.
DECISION_HOLD = 86400.0

#: The processing counters every backend's `stats` reports, 0 until first counted.
COUNTERS = ("done", "skipped", "dead", "failed")

#: The verdicts of `claim_decision`.
GRANTED, LATER, DECIDED, BUSY = "granted", "later", "decided", "busy"


@dataclass(frozen=True, slots=True)
class Decision:
    """What `claim_decision` answered: `verdict` is one of GRANTED, LATER, DECIDED, BUSY."""

    verdict: str
    #: LATER, DECIDED: the message of the number's latest ledger entry; BUSY: the holder.
    other: str | None = None
    #: GRANTED: the effect's pending mark is new.  False: the effect is being repeated (a retry, a
    #: worker killed mid-call), or is already in the ledger.
    first: bool = False

    @property
    def granted(self) -> bool:
        return self.verdict == GRANTED


#: Where a page of the ledger ended: (received_at, message_id, action) of its last entry.
LedgerCursor = tuple[float, str, str]


def ledger_cursor(entry: OptOut) -> LedgerCursor:
    """The cursor that continues `optouts_page` after `entry`."""
    return (entry.received_at, entry.message_id, entry.action)


def ledger_key(entry: OptOut) -> tuple[float, str]:
    """The ledger's order: received_at, then the member "message_id|action" (as Redis orders ties,
    byte order, which for UTF-8 is Python's str order)."""
    return entry.received_at, f"{entry.message_id}|{entry.action}"


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What one Redis server (each primary of a cluster) says about keeping data: `doctor` and the
    start-up durability warnings read it from `Store.health()`."""

    name: str = ""  # "" on a single server; host:port of a cluster's primary
    info_error: str = ""  # INFO refused ("Type: message"): version, aof and policy are unknown
    version: str = "unknown"
    aof: bool = False
    policy: str = "unknown"  # maxmemory-policy
    config_error: str = ""  # CONFIG GET refused (common on managed Redis): the exception's type
    save: str | None = None  # CONFIG GET save ("" when snapshots are off); None when refused


@dataclass(frozen=True, slots=True)
class Health:
    """One `Store.health()` check: whether the backend answered a read, and how fast."""

    ok: bool
    latency_ms: float = 0.0
    error: str = ""  # why not ok: the exception's type (TimeoutError past the timeout)
    #: A single-server URL reached a node of a Redis Cluster (it answered MOVED or ASK).
    cluster_node: bool = False
    servers: tuple[ServerFacts, ...] = ()  # Redis only: every server it checked


#: The backends `Store.describe()` names.
Kind = Literal["redis", "redis-cluster", "sqlite", "memory"]


@dataclass(frozen=True, slots=True)
class Description:
    """Where a store keeps its state, safe to print: the location never holds a password."""

    kind: Kind
    location: str  # a store URL, the password redacted
    namespace: str
    persistent: bool  # what it keeps survives a restart of the process
    file: str | None = None  # SQLite: the database file (":memory:" for an in-memory database)
