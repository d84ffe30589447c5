"""The opt-out ledger and survey results as files: one column list, one masking rule and one
time format, whether `keyrouter optouts export` / `survey results` writes them or the dashboard
serves them.

- Ledger: `LEDGER_FIELDS`, one row per ledger line (`ledger_rows`), as CSV or JSON lines, or
  İYS consent records (`iys_records`).  Times are `timefmt.iso` (Turkey time with its offset).
  Numbers are in full for those entitled to them (the CLI, a signed-in dashboard) and masked
  with `keyrouter.masking.mask_number` otherwise.  `iys_outcome` / `iys_transaction_id` are the
  line's own (an İYS line, or a failed handler's error), else those of the same message's İYS
  line: lines of one message share their received time, so they are joined within a run of
  equal received times and a stream never holds more than that run.
- Surveys: `SURVEY_FIELDS`, one row per choice (the declared ones with zero votes too), most
  votes first; the CSV ends with the voters, rejected votes and last vote.
- CSV cells that start like a spreadsheet formula get a leading apostrophe (`cell`): keywords,
  choices and message ids come from SMS senders.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from keyrouter import timefmt
from keyrouter.compliance.channels import channel_of
from keyrouter.compliance.deadlines import deadline_epoch
from keyrouter.masking import mask_number
from keyrouter.store.base import LedgerCursor, OptOut, SurveyResults, ledger_cursor
from keyrouter.store.roles import LedgerStore

__all__ = [
    "LEDGER_FIELDS",
    "SURVEY_FIELDS",
    "cell",
    "iys_records",
    "ledger_csv",
    "ledger_csv_stream",
    "ledger_jsonl",
    "ledger_row",
    "ledger_rows",
    "survey_csv",
    "survey_dict",
    "survey_rows",
]

T = TypeVar("T")

#: The ledger columns.  `status`: handled (a ledger line) or pending (an effect still waiting,
#: the dashboard lists those first); `where`: ledger, retrying or dead letter.
LEDGER_FIELDS = ("number", "action", "message_id", "keyword", "received_at", "handled_at",
                 "deadline", "within_deadline", "iys_outcome", "iys_transaction_id", "date_given",
                 "channel", "status", "where")
SURVEY_FIELDS = ("survey", "choice", "votes", "percent", "declared")
#: Ledger actions with the three-business-day deadline (refusals), and İYS's own lines.
REFUSALS = ("blacklist", "iys_ret")
_IYS_ACTIONS = ("iys_ret", "iys_onay")
_E164 = re.compile(r"\+\d[\d*]{5,17}")  # a number, or one masked: no formula can hide in it


def cell(value: T) -> T | str:
    """A CSV cell a spreadsheet will not run: text that starts like a formula (=, +, -, @, tab,
    CR) gets a leading apostrophe, except an E.164 number (masked or not)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") \
            and not _E164.fullmatch(value):
        return "'" + value
    return value


# ---------------------------------------------------------------- ledger rows
def ledger_row(e: OptOut, *, full_numbers: bool, iys: OptOut | None = None, pending: bool = False,
               where: str = "ledger") -> dict[str, str]:
    """One ledger line as exported.  `iys`: the same message's İYS line, for a line without an
    outcome of its own; `pending`: an effect not in the ledger yet (no handled time)."""
    due = deadline_epoch(e.received_at) if e.action in REFUSALS else None
    if due is None:
        met = ""
    elif pending:
        met = "pending"
    else:
        met = "yes" if e.handled_at <= due else "no"
    own = e if (e.outcome or e.transaction_id or e.action in _IYS_ACTIONS) else iys
    return {"number": e.number if full_numbers else mask_number(e.number), "action": e.action,
            "message_id": e.message_id, "keyword": e.keyword or "",
            "received_at": timefmt.iso(e.received_at),
            "handled_at": "" if pending else timefmt.iso(e.handled_at),
            "deadline": timefmt.iso(due), "within_deadline": met,
            "iys_outcome": (own.outcome or "") if own else "",
            "iys_transaction_id": (own.transaction_id or "") if own else "",
            # "no": the provider gave no date; received_at is when keyrouter first saw it
            "date_given": "yes" if e.dated else "no",
            "channel": channel_of(e.message_id),
            "status": "pending" if pending else "handled", "where": where}


def _joined(run: list[OptOut], full_numbers: bool) -> Iterator[dict[str, str]]:
    iys = {e.message_id: e for e in run if e.action in _IYS_ACTIONS}
    for e in run:
        yield ledger_row(e, full_numbers=full_numbers, iys=iys.get(e.message_id))


class _Runs:
    """Ledger lines in, rows out, a run of equal received times at a time (see the module doc)."""

    def __init__(self, full_numbers: bool) -> None:
        self.full_numbers = full_numbers
        self.run: list[OptOut] = []

    def add(self, e: OptOut) -> Iterator[dict[str, str]]:
        if self.run and self.run[0].received_at != e.received_at:
            yield from self.flush()
        self.run.append(e)

    def flush(self) -> Iterator[dict[str, str]]:
        run, self.run = self.run, []
        return _joined(run, self.full_numbers)


def ledger_rows(entries: Iterable[OptOut], *, full_numbers: bool = True) -> Iterator[dict[str, str]]:
    """One row per ledger line, in the order given (the store's, oldest or newest first)."""
    runs = _Runs(full_numbers)
    for e in entries:
        yield from runs.add(e)
    yield from runs.flush()


# ---------------------------------------------------------------- ledger files
def _csv_text(rows: Iterable[dict[str, str]], header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(LEDGER_FIELDS)
    for row in rows:
        writer.writerow([cell(row[f]) for f in LEDGER_FIELDS])
    return out.getvalue()


def ledger_csv(entries: Iterable[OptOut], *, full_numbers: bool = True) -> str:
    return _csv_text(ledger_rows(entries, full_numbers=full_numbers), header=True)


def ledger_jsonl(entries: Iterable[OptOut], *, full_numbers: bool = True) -> Iterator[str]:
    """One JSON object a line, written as it goes."""
    for row in ledger_rows(entries, full_numbers=full_numbers):
        yield json.dumps(row, ensure_ascii=False) + "\n"


async def ledger_csv_stream(store: LedgerStore, *, full_numbers: bool, since: float | None = None,
                            until: float | None = None, action: str | None = None,
                            pending: Iterable[tuple[OptOut, str]] = (),
                            chunk: int = 1000) -> AsyncIterator[str]:
    """The header and the `pending` effects ((entry, where) pairs), then the ledger newest first
    with since <= received_at < until (and that action), read `chunk` lines at a time and
    yielded as each is written, never all at once."""
    head = _csv_text((ledger_row(e, full_numbers=full_numbers, pending=True, where=where)
                      for e, where in pending), header=True)
    runs = _Runs(full_numbers)
    before: LedgerCursor | None = None
    while True:
        got = await store.optouts_page(before=before, limit=chunk, since=since, until=until,
                                       action=action)
        last = len(got) < chunk
        rows = [row for e in got for row in runs.add(e)]
        yield head + _csv_text(rows + (list(runs.flush()) if last else []), header=False)
        if last:
            return
        head = ""
        before = ledger_cursor(got[-1])


def iys_records(entries: Iterable[OptOut], recipient_type: str = "BIREYSEL",
                provider_source: str = "HS_WEB") -> Iterator[str]:
    """İYS consent records, one JSON object a line, for bulk upload: one per message and
    decision (a message with both a blacklist and an İYS line gives one record).  Source
    HS_MESAJ, or `provider_source` for opt-outs found on the provider's blacklist alone
    (docs/reconciliation.md)."""

    seen: set[tuple[str, str]] = set()
    for e in entries:
        status = "RET" if e.action in REFUSALS else "ONAY"
        if (e.message_id, status) in seen:
            continue
        seen.add((e.message_id, status))
        source = provider_source if channel_of(e.message_id) == "provider" else "HS_MESAJ"
        yield json.dumps({"recipient": e.number, "type": "MESAJ", "source": source,
                          "status": status, "consentDate": timefmt.iys(e.received_at),
                          "recipientType": recipient_type}, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- surveys
def survey_rows(results: SurveyResults, declared: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per choice, the `declared` ones (the rules') with zero votes too; most votes
    first, then by choice."""
    total = sum(results.votes.values())
    votes = dict.fromkeys(declared, 0) | results.votes
    return [{"survey": results.survey, "choice": c, "votes": n,
             "percent": round(100 * n / total, 1) if total else 0.0,
             "declared": "yes" if c in declared else "no"}
            for c, n in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))]


def survey_dict(results: SurveyResults, declared: Sequence[str] = ()) -> dict[str, Any]:
    """The survey as one JSON object."""
    return {
        "survey": results.survey,
        "choices": [{k: v for k, v in row.items() if k != "survey"}
                    for row in survey_rows(results, declared)],
        "voters": results.voters,
        "rejected": results.rejected,
        "last_vote_at": timefmt.iso(results.last_vote_at) or None,
    }


def survey_csv(results: SurveyResults, declared: Sequence[str] = ()) -> str:
    """`SURVEY_FIELDS` rows, then a blank line and the voters, rejected votes and last vote."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(SURVEY_FIELDS)
    for row in survey_rows(results, declared):
        w.writerow([cell(row[f]) for f in SURVEY_FIELDS])
    w.writerow([])
    w.writerow(["voters", results.voters])
    w.writerow(["rejected", results.rejected])
    w.writerow(["last_vote", timefmt.iso(results.last_vote_at)])
    return out.getvalue()
