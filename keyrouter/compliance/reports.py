"""The opt-out ledger and survey results, as people read them: CSV/JSON lines, delay figures,
a table with bars.  Pure functions over what the store returns."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from keyrouter import timefmt
from keyrouter.compliance.channels import CHANNELS, channel_of
from keyrouter.compliance.deadlines import deadline
from keyrouter.store.base import OptOut, SurveyResults

LEDGER_FIELDS = ("number", "action", "message_id", "keyword", "received_at", "handled_at",
                 "deadline", "within_deadline", "iys_outcome", "iys_transaction_id", "date_given",
                 "channel")
#: Ledger actions with the three-business-day deadline (opt-outs), and İYS's own lines.
_DEADLINED = ("blacklist", "iys_ret")
_IYS_ACTIONS = ("iys_ret", "iys_onay")




def ledger_rows(entries: Iterable[OptOut]) -> list[dict[str, Any]]:
    """One row per ledger line.  `deadline` (three Turkish business days, keyrouter.compliance.deadlines) and
    `within_deadline` for opt-outs; `iys_outcome` / `iys_transaction_id` from the İYS line of the
    same message (a blacklist row shows what İYS answered for that message, too)."""

    entries = list(entries)
    iys = {e.message_id: e for e in entries if e.action in _IYS_ACTIONS}
    rows = []
    for e in entries:
        due = deadline(e.received_at).timestamp() if e.action in _DEADLINED else None
        own = e if e.action in _IYS_ACTIONS else iys.get(e.message_id)
        rows.append({"number": e.number, "action": e.action, "message_id": e.message_id,
                     "keyword": e.keyword or "", "received_at": timefmt.iso(e.received_at),
                     "handled_at": timefmt.iso(e.handled_at), "deadline": timefmt.iso(due),
                     "within_deadline": "" if due is None else ("yes" if e.handled_at <= due else "no"),
                     "iys_outcome": (own.outcome or "") if own else "",
                     "iys_transaction_id": (own.transaction_id or "") if own else "",
                     # "no": the provider gave no date; received_at is when keyrouter first saw it
                     "date_given": "yes" if e.dated else "no",
                     "channel": channel_of(e.message_id)})
    return rows


def iys_records(entries: Iterable[OptOut], recipient_type: str = "BIREYSEL",
                provider_source: str = "HS_WEB") -> str:
    """İYS consent records, one JSON object a line, for bulk upload: one per message and
    decision (a message with both a blacklist and an İYS line gives one record).  Source
    HS_MESAJ, or `provider_source` for opt-outs found on the provider's blacklist alone
    (docs/reconciliation.md)."""

    out, seen = [], set()
    for e in entries:
        status = "RET" if e.action in ("blacklist", "iys_ret") else "ONAY"
        if (e.message_id, status) in seen:
            continue
        seen.add((e.message_id, status))
        source = provider_source if channel_of(e.message_id) == "provider" else "HS_MESAJ"
        out.append(json.dumps({"recipient": e.number, "type": "MESAJ", "source": source,
                               "status": status, "consentDate": timefmt.iys(e.received_at),
                               "recipientType": recipient_type}, ensure_ascii=False) + "\n")
    return "".join(out)


def ledger_csv(entries: Iterable[OptOut]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LEDGER_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(ledger_rows(entries))
    return out.getvalue()


def ledger_jsonl(entries: Iterable[OptOut]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ledger_rows(entries))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def ledger_stats(entries: list[OptOut]) -> dict[str, Any]:
    """Counts per action and the received-to-handled delay (the law allows three business days)."""
    delays = sorted(max(0.0, e.handled_at - e.received_at) for e in entries)
    stats: dict[str, Any] = {
        "entries": len(entries),
        "blacklist": sum(e.action == "blacklist" for e in entries),
        "unblacklist": sum(e.action == "unblacklist" for e in entries),
        "numbers": len({e.number for e in entries}),
        # opt-outs (messages with an opt-out line) per channel: inbox, provider, dashboard
        "channels": {c: len({e.message_id for e in entries if e.action in _DEADLINED
                             and channel_of(e.message_id) == c}) for c in CHANNELS},
    }
    if delays:
        p99 = delays[min(len(delays) - 1, max(0, round(0.99 * len(delays)) - 1))]
        stats.update(delay_median=statistics.median(delays), delay_p99=p99, delay_max=delays[-1])
    return stats


def ledger_stats_text(stats: dict[str, Any]) -> str:
    lines = [f"{stats['entries']} ledger entries: {stats['blacklist']} blacklist, "
             f"{stats['unblacklist']} unblacklist, {stats['numbers']} numbers"]
    if "channels" in stats:
        lines.append("opt-outs by channel: " + ", ".join(f"{c} {n}" for c, n in stats["channels"].items()))
    if "delay_median" in stats:
        lines.append(f"received -> handled: median {_duration(stats['delay_median'])}, "
                     f"p99 {_duration(stats['delay_p99'])}, max {_duration(stats['delay_max'])}")
    return "\n".join(lines)


def survey_dict(results: SurveyResults, choices: Sequence[str] = ()) -> dict[str, Any]:
    """`choices`: the ones the rules declare, shown with zero votes too."""
    total = sum(results.votes.values())
    votes = {c: 0 for c in choices} | results.votes
    return {
        "survey": results.survey,
        "choices": [{"choice": c, "votes": n, "percent": round(100 * n / total, 1) if total else 0.0}
                    for c, n in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))],
        "voters": results.voters,
        "rejected": results.rejected,
        "last_vote_at": timefmt.iso(results.last_vote_at) or None,
    }


def survey_table(results: SurveyResults, width: int = 30, choices: Sequence[str] = ()) -> str:
    data = survey_dict(results, choices)
    rows = data["choices"]
    top = max((r["votes"] for r in rows), default=0)
    label = max((len(r["choice"]) for r in rows), default=6)
    lines = [f"survey {results.survey}"]
    for r in rows:
        bar = "█" * (round(width * r["votes"] / top) if top else 0)
        lines.append(f"  {r['choice']:<{label}}  {r['votes']:>6}  {r['percent']:5.1f}%  {bar}")
    lines.append(f"  voters: {data['voters']}, rejected votes: {data['rejected']}, "
                 f"last vote: {data['last_vote_at'] or 'none'}")
    return "\n".join(lines)


def survey_csv(results: SurveyResults, choices: Sequence[str] = ()) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["choice", "votes", "percent"])
    for r in survey_dict(results, choices)["choices"]:
        writer.writerow([r["choice"], r["votes"], r["percent"]])
    return out.getvalue()
