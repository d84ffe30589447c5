"""The opt-out ledger and survey results as people read them in a terminal: counts, delay
figures, a table with bars.  Pure functions over what the store returns; the files (CSV, JSON
lines, İYS records) are keyrouter.compliance.exports."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from keyrouter.compliance import exports
from keyrouter.compliance.channels import CHANNELS, channel_of
from keyrouter.store.base import OptOut, SurveyResults

#: Ledger actions with the three-business-day deadline (opt-outs).
_DEADLINED = exports.REFUSALS


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


def survey_table(results: SurveyResults, width: int = 30, choices: Sequence[str] = ()) -> str:
    data = exports.survey_dict(results, choices)
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
