"""Every Redis key the store uses, in one place, so scripts, tests and tools agree on names.

Layout for namespace `ns`: every key starts `keyrouter:{ns}:` with literal braces, a Redis Cluster
hash tag, so all keys of a namespace live in one hash slot and every script runs on a cluster (the
scripts build per-id names from prefixes; that is allowed within the slot of their declared keys).
Names below are relative to that prefix; `<id>` is an id through `codec.escape`.  Versions before
the hash tag used `keyrouter:ns:`; `legacy_prefix` names them for the one-time move (redis/store.py).

- `done`              SET of finished (done or skipped) ids, when there is no horizon; with a
                      horizon, the ids finished `forever` (their markers never expire);
- `done:<YYYYMMDD>`   the other finished ids, one SET per UTC day of marking, when a horizon is
                      set; each bucket expires `horizon + HORIZON_MARGIN + 1 day` after its last
                      write;
- `claim:<id>`        STRING owner token with a PX lease;
- `progress:<id>`     SET of handler entry keys that succeeded;
- `retry`             HASH id -> "attempts|retry_at";
- `dead`              HASH id -> JSON dead letter;
- `dead:at`           ZSET of the dead ids scored by failed_at, for the dashboard's pages; a page
                      read rebuilds it from `dead` when their sizes differ (self-healing);
- `stats`             HASH of counters done / skipped / dead / failed;
- `holders`           HASH id -> owner of its latest claim, until finished, failed or released, so
                      a claim over another owner's expired lease is seen (`Claimed.taken_over`);
- `fetch`             STRING owner of the namespace's fetch lease, with a PX lease;
- `fetch:token`       STRING counter: the fencing token, incremented each time the lease is taken;
- `published`         HASH id -> row JSON shared by the fetch leader, and `published:order`, a ZSET
                      of the same ids scored by their publish sequence number, drawn from
                      `published:seq` (STRING counter); an id leaves both when finished;
- `poll`              STRING "at|rows" of the fetch leader's last get-inbox poll (`record_poll`);
- `touch`             STRING, the time of the last write check (`touch`), kept a day;
- `routed:<hour>`     HASH rule -> messages finished (done, skipped, dead) in that hour (epoch
                      seconds // 3600), for the dashboard; each expires 48 hours after its last
                      write (`ROUTED_TTL`);
- `optouts`           HASH "message_id|action" -> JSON ledger entry, and `optouts:at`, a ZSET of
                      the same members scored by received_at, so `optouts(since)` is a range read;
- `optouts:latest`    HASH number -> the member of its `latest_optout` entry;
- `optouts:pending`   HASH "message_id|action" -> JSON entry of an effect started and not yet in
                      the ledger (`mark_optout_pending`); `record_optout` deletes the member;
- `optouts:holder`    HASH number -> JSON {id, at, members} of the message holding the number's
                      decision claim (`claim_decision`): its id, when it claimed (store clock) and
                      its pending-mark members; one field per number that ever had a decision;
- `reconcile`         STRING: the blacklist reconciliation's JSON document (last run, watermark);
- `reconcile:rows`    HASH id -> row JSON of a synthetic provider opt-out, until it is finished;
- `survey:<id>:votes` HASH voter -> counted choice;
- `survey:<id>:counts` HASH choice -> voters (a choice is deleted when it drops to zero);
- `survey:<id>:meta`  HASH `last` (epoch seconds of the latest valid vote) and `rejected`;
- `survey:<id>:seen`  SET of vote ids already applied; expires `vote_ids_ttl` after the last vote.

- `conv:last`         HASH respondent -> id of the last message applied to their latest
                      conversation record (the compare-and-set of `save_conversation`);
- `conv:current`      HASH respondent -> JSON of their latest conversation record;
- `conv:<id>:runs`    HASH respondent -> JSON of their latest run of conversation `<id>`, for
                      `keyrouter survey results`.

Survey keys end in distinct suffixes, so no survey id (whatever `:` it holds) can alias another's.

A done id costs one SET member (about 50 bytes for a 10-character id); everything else is per
message in flight or dead, so the long-lived footprint stays small.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from keyrouter.store.base import HORIZON_MARGIN

DAY = timedelta(days=1)
#: A survey's applied vote ids are remembered at least this long after its last vote: they only
#: guard the short window between a vote and the worker recording that handler entry's success.
VOTE_IDS_TTL = timedelta(days=30)
_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


def check_namespace(namespace: str) -> str:
    """Namespaces become part of key names; a `:` or `*` in one could alias another's keys."""
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"invalid namespace {namespace!r}: use 1-100 letters, digits, '_', '.' or '-'"
        )
    return namespace


#: Vote policies: "last" replaces a voter's earlier vote, "first" keeps it.
POLICIES = ("last", "first")


def check_policy(policy: str) -> str:
    """Shared by every backend, so a typo in a rule fails loudly instead of voting "last"."""
    if policy not in POLICIES:
        raise ValueError(f"invalid vote policy {policy!r}: use 'last' or 'first'")
    return policy


def day_stamp(epoch: float) -> str:
    """The UTC day of `epoch` as YYYYMMDD, the suffix of a done bucket."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d")


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one namespace."""

    namespace: str

    def __post_init__(self) -> None:
        check_namespace(self.namespace)

    @property
    def prefix(self) -> str:
        return f"keyrouter:{{{self.namespace}}}:"

    @property
    def legacy_prefix(self) -> str:
        """The prefix before the hash tag: keys under it are moved to `prefix` at open."""
        return f"keyrouter:{self.namespace}:"

    @property
    def done(self) -> str:
        return f"{self.prefix}done"

    def done_bucket(self, epoch: float) -> str:
        return f"{self.done}:{day_stamp(epoch)}"

    @property
    def claim_prefix(self) -> str:
        return f"{self.prefix}claim:"

    def claim(self, id: str) -> str:
        return self.claim_prefix + id

    @property
    def progress_prefix(self) -> str:
        return f"{self.prefix}progress:"

    def progress(self, id: str) -> str:
        return self.progress_prefix + id

    @property
    def retry(self) -> str:
        return f"{self.prefix}retry"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def dead_by_time(self) -> str:
        return f"{self.prefix}dead:at"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def holders(self) -> str:
        return f"{self.prefix}holders"

    @property
    def fetch(self) -> str:
        return f"{self.prefix}fetch"

    @property
    def fetch_token(self) -> str:
        return f"{self.prefix}fetch:token"

    @property
    def published(self) -> str:
        return f"{self.prefix}published"

    @property
    def published_order(self) -> str:
        return f"{self.prefix}published:order"

    @property
    def published_seq(self) -> str:
        return f"{self.prefix}published:seq"

    @property
    def poll(self) -> str:
        return f"{self.prefix}poll"

    @property
    def touch(self) -> str:
        return f"{self.prefix}touch"

    def routed(self, hour: int) -> str:
        return f"{self.prefix}routed:{hour}"

    @property
    def optouts(self) -> str:
        return f"{self.prefix}optouts"

    @property
    def optouts_by_time(self) -> str:
        return f"{self.prefix}optouts:at"

    @property
    def optouts_latest(self) -> str:
        return f"{self.prefix}optouts:latest"

    @property
    def optouts_pending(self) -> str:
        return f"{self.prefix}optouts:pending"

    @property
    def optouts_holder(self) -> str:
        return f"{self.prefix}optouts:holder"

    @property
    def reconcile(self) -> str:
        """The reconciliation state (last run, watermark): a JSON STRING."""
        return f"{self.prefix}reconcile"

    @property
    def reconcile_rows(self) -> str:
        """Synthetic rows of provider-only opt-outs until their message is finished: a HASH."""
        return f"{self.prefix}reconcile:rows"

    def survey(self, survey: str) -> list[str]:
        """The survey's keys, in the order the vote script takes them: votes, counts, meta, seen."""
        base = f"{self.prefix}survey:{survey}:"
        return [base + "votes", base + "counts", base + "meta", base + "seen"]

    @property
    def conversation_last(self) -> str:
        return f"{self.prefix}conv:last"

    @property
    def conversation_current(self) -> str:
        return f"{self.prefix}conv:current"

    def conversation_runs(self, conversation: str) -> str:
        """`conversation` is escaped by the caller (codec.escape), like survey ids."""
        return f"{self.prefix}conv:{conversation}:runs"

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every key of this namespace (namespaces hold no glob chars)."""
        return f"{self.prefix}*"

    def done_keys(self, horizon: timedelta | None, now: float) -> list[str]:
        """The done keys to consult at `now`: the plain set first, plus with a horizon every
        bucket that can hold an id marked within horizon + margin (today first)."""
        if horizon is None:
            return [self.done]
        days = math.ceil((horizon + HORIZON_MARGIN) / DAY)
        day = DAY.total_seconds()
        return [self.done] + [self.done_bucket(now - i * day) for i in range(days + 1)]

    def done_target(self, horizon: timedelta | None, now: float) -> str:
        """Where an id finished at `now` is marked."""
        return self.done if horizon is None else self.done_bucket(now)


def bucket_ttl(horizon: timedelta) -> int:
    """Seconds a done bucket lives after its last write: every id in it is remembered at least
    horizon + margin, however early in its day it was marked."""
    return math.ceil((horizon + HORIZON_MARGIN + DAY).total_seconds())


def vote_ids_ttl(horizon: timedelta | None) -> int:
    """Seconds a survey's seen vote ids live after its last vote: VOTE_IDS_TTL, or longer when a
    horizon lets older messages still be retried."""
    floor = VOTE_IDS_TTL if horizon is None else max(VOTE_IDS_TTL, horizon + HORIZON_MARGIN + DAY)
    return math.ceil(floor.total_seconds())
