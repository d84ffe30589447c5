"""What the pages show, gathered from the store and the rules: plain data, no HTTP, no HTML.

Every read is a page (`optouts_page`, `dead_letters_page`) or a small fixed set of keys, so a page
costs the same with 100 or 100,000 ledger entries.  Phone numbers are masked here (KVKK); only the
CSV export with the token asks for them in full.  The CSV files are keyrouter.compliance.exports.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from keyrouter import timefmt
from keyrouter.compliance import deadlines, exports
from keyrouter.compliance.channels import channel_of
from keyrouter.handlers.survey import declared_surveys
from keyrouter.masking import mask_number, mask_text, mask_value
from keyrouter.message import TURKEY
from keyrouter.rules.conversations import Conversation
from keyrouter.rules.loader import load_rules, rule_files
from keyrouter.rules.router import Router
from keyrouter.store import (
    DeadLetter,
    LedgerCursor,
    LedgerStore,
    OptOut,
    Store,
    SurveyResults,
    ledger_cursor,
)
from keyrouter.web.pending import Pending, effects_of, pending
from keyrouter.worker.reload import rules_version

PAGE_SIZE = 50
#: The ledger actions the filter offers: the effects, and a confirmation that failed for good
#: (an optional `reply`, docs/opt-out-duty.md).
EFFECTS = ("blacklist", "unblacklist", "iys_ret", "iys_onay", "reply_failed")


# ---------------------------------------------------------------- rules: files, hash, surveys
@dataclass(frozen=True)
class RulesInfo:
    """The rules the dashboard loaded: files with their hashes, and each survey's choices."""

    path: str
    files: tuple[tuple[str, str], ...]  # (file, sha256 prefix)
    version: str  # sha256 prefix over every file's name and bytes
    rule_count: int
    surveys: dict[str, tuple[str, ...]] = field(default_factory=dict)  # id -> declared choices
    loaded_at: float = 0.0
    #: rule name -> its opt-out effects with a deadline (keyrouter.compliance.overdue.effects_of_rules)
    effects: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rule_names: tuple[str, ...] = ()
    router: Router | None = None  # routes the shared rows (pending opt-outs still waiting to start)
    conversations: tuple[Conversation, ...] = ()  # the rules' conversations (docs/conversations.md)

    @classmethod
    def load(cls, path: str, now: float) -> RulesInfo:
        """Raises RulesError, like every command that reads the rules."""

        rules = load_rules(path, handlers=False)  # the page needs names and choices, not code
        files, version = file_hashes(path)
        return cls(path, files, version, len(rules.rules), declared_surveys(rules), now,
                   effects_of(rules), tuple(r.name for r in rules.rules), Router(rules),
                   rules.conversations)


def file_hashes(path: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """Each file's sha256 prefix, and the version hash the worker's metrics report
    (`keyrouter_rules_info{version}`, keyrouter.worker.reload.rules_version), so the two can be compared."""

    files = []
    for f in rule_files(path):
        try:
            data = f.read_bytes()
        except OSError:
            data = b""
        files.append((str(f), hashlib.sha256(data).hexdigest()[:12]))
    return tuple(files), rules_version(path)


# ---------------------------------------------------------------- surveys
@dataclass(frozen=True)
class SurveyView:
    survey: str
    bars: list[tuple[str, int, bool]]  # (choice, votes, declared)
    voters: int
    rejected: int
    last_vote: str
    total: int


def survey_view(results: SurveyResults, declared: tuple[str, ...]) -> SurveyView:
    """One bar per declared choice (zero votes included), then any counted choice the rules do
    not declare (a survey without `choices`, or choices changed since)."""
    bars = [(c, results.votes.get(c, 0), True) for c in declared]
    bars += [(c, n, False) for c, n in sorted(results.votes.items()) if c not in declared]
    return SurveyView(results.survey, bars, results.voters, results.rejected,
                      timefmt.display(results.last_vote_at), sum(n for _, n, _ in bars))


# ---------------------------------------------------------------- opt-out ledger
#: Effects a refusal has: the law's three business days apply to them (an opt-in has no deadline).
REFUSALS = exports.REFUSALS
PENDING_SHOWN = 100
Deadline = Callable[[float], float]


def deadline_function() -> Deadline:
    """The opt-out deadline (three Turkish business days) the dashboard's rows use: always
    deadlines.deadline_epoch, computed once per day received."""
    return deadlines.deadline_epoch


@functools.lru_cache(maxsize=4096)
def _hours_left(due: float, minute: int) -> float:
    return float(deadlines.business_hours_left(due, minute * 60.0))


def business_hours_left(due: float, now: float) -> float:
    """Business hours from `now` (to the minute) to `due`: many lines share a deadline."""
    return _hours_left(due, int(now // 60))


@dataclass(frozen=True)
class LedgerFilter:
    day_from: date | None = None
    day_to: date | None = None  # inclusive
    effect: str | None = None

    @classmethod
    def parse(cls, q: Mapping[str, str]) -> tuple[LedgerFilter, list[str]]:
        """From query parameters; bad values are dropped and named in the returned problems."""
        problems: list[str] = []

        def day(name: str) -> date | None:
            text = (q.get(name) or "").strip()
            if not text:
                return None
            try:
                return date.fromisoformat(text)
            except ValueError:
                problems.append(f"{name}: not a date (YYYY-MM-DD)")
                return None

        effect = (q.get("effect") or "").strip() or None
        if effect is not None and effect not in EFFECTS:
            problems.append(f"effect: one of {', '.join(EFFECTS)}")
            effect = None
        return cls(day("from"), day("to"), effect), problems

    def since(self) -> float | None:
        if self.day_from is None:
            return None
        return datetime.combine(self.day_from, datetime.min.time(), TURKEY).timestamp()

    def until(self) -> float | None:
        if self.day_to is None:
            return None
        end = datetime.combine(self.day_to, datetime.min.time(), TURKEY) + timedelta(days=1)
        return end.timestamp()

    def query(self) -> dict[str, str]:
        q = {"from": self.day_from.isoformat() if self.day_from else "",
             "to": self.day_to.isoformat() if self.day_to else "", "effect": self.effect or ""}
        return {k: v for k, v in q.items() if v}


def encode_cursor(at: OptOut | LedgerCursor) -> str:
    cursor = ledger_cursor(at) if isinstance(at, OptOut) else at
    raw = json.dumps(list(cursor), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str | None) -> LedgerCursor | None:
    if not text:
        return None
    try:
        at, message_id, action = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return float(at), str(message_id), str(action)
    except (ValueError, TypeError, binascii.Error):
        return None


@dataclass(frozen=True)
class LedgerRow:
    received: str
    number: str
    effect: str
    keyword: str
    message_id: str
    handled: str  # "" while pending
    outcome: str  # İYS's answer, "" for the provider's blacklist
    deadline: str  # "" when there is none (an opt-in)
    met: bool | None  # None: no deadline
    pending: bool
    left: str = ""  # business hours left (pending refusals), or how late
    where: str = "ledger"  # ledger | retrying | dead letter
    channel: str = "inbox"  # inbox | provider | dashboard (keyrouter.reconcile_effects)


def ledger_row(e: OptOut, deadline: Deadline | None, now: float, pending: bool = False,
               where: str = "ledger") -> LedgerRow:
    due = deadline(e.received_at) if deadline and e.action in REFUSALS else None
    met = None if due is None else (not pending and e.handled_at <= due)
    left = ""
    if pending and due is not None:
        hours = business_hours_left(due, now)
        left = (f"{hours:.0f} business hours left" if hours >= 0
                else f"overdue by {-hours:.0f} business hours")
    return LedgerRow(received_text(e), mask_number(e.number), e.action, e.keyword or "",
                     e.message_id, "" if pending else timefmt.display(e.handled_at), e.outcome or "",
                     timefmt.display(due), met, pending, left, where,
                     channel_of(e.message_id))


def matches(e: OptOut, f: LedgerFilter) -> bool:
    since, until = f.since(), f.until()
    return ((since is None or e.received_at >= since) and (until is None or e.received_at < until)
            and (f.effect is None or e.action == f.effect))


async def pending_rows(store: Store, f: LedgerFilter, rules: RulesInfo) -> tuple[list[Pending], bool]:
    """Pending opt-outs (keyrouter.web.pending) that pass the filter, oldest first; and whether
    there may be more than the dead letters read."""
    found, more = await pending(store, rules.effects, rules.router)
    return [p for p in found if matches(p.entry, f)], more


#: Ledger lines an effect filter examines per page view: a filter that matches little stays cheap
#: and continues with "Older" from where it stopped.
LEDGER_SCAN = 20_000


@dataclass(frozen=True)
class LedgerPage:
    entries: list[OptOut]
    next: LedgerCursor | None  # where "Older" continues; None on the last page
    searched: bool = False  # the page is short because LEDGER_SCAN lines were examined


async def ledger_page(store: LedgerStore, f: LedgerFilter, before: LedgerCursor | None,
                      limit: int = PAGE_SIZE) -> LedgerPage:
    got, nxt = await store.optouts_scan(before=before, limit=limit + 1, since=f.since(),
                                        until=f.until(), action=f.effect,
                                        scan=LEDGER_SCAN if f.effect else None)
    if len(got) > limit:
        return LedgerPage(got[:limit], ledger_cursor(got[limit - 1]))
    return LedgerPage(got, nxt, nxt is not None)


def received_text(e: OptOut) -> str:
    """When the message was received; for a row the provider gave no date, the time keyrouter
    first saw it, said so (docs/ordering-and-masking.md)."""
    when = timefmt.display(e.received_at)
    return when if e.dated else f"{when} (first seen: no date from the provider)"


async def ledger_csv(store: Store, f: LedgerFilter, full_numbers: bool,
                     rules: RulesInfo | None = None, chunk: int = 1000) -> AsyncIterator[str]:
    """The CSV download (keyrouter.compliance.exports, as `keyrouter optouts export` writes it):
    pending effects first, then the filtered ledger newest first, a chunk at a time."""
    waiting = (await pending_rows(store, f, rules))[0] if rules is not None else []
    async for text in exports.ledger_csv_stream(
            store, full_numbers=full_numbers, since=f.since(), until=f.until(), action=f.effect,
            pending=[(p.entry, p.where) for p in waiting], chunk=chunk):
        yield text


# ---------------------------------------------------------------- dead letters
@dataclass(frozen=True)
class DeadRow:
    id: str
    failed: str
    rule: str
    attempts: int
    error: str


def dead_row(d: DeadLetter) -> DeadRow:
    return DeadRow(d.id, timefmt.display(d.failed_at), d.rule or "", d.attempts, mask_text(d.error))


def raw_row_text(d: DeadLetter) -> str:
    """The stored row, pretty-printed, phone numbers masked (the page escapes it)."""
    return json.dumps(mask_value(dict(d.row)), ensure_ascii=False, indent=2, default=str)
