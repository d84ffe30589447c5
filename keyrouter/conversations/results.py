"""A conversation's results, from its respondents' records: choice counts per question, free-text
answers, and the funnel (`keyrouter survey results`, the dashboard; docs/conversations.md)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import NotRequired, TypedDict

from keyrouter.compliance.exports import cell
from keyrouter.conversations.steps import COMPLETED, EXPIRED, INCOMPLETE, OPEN, OPTED_OUT, Record
from keyrouter.masking import mask_number
from keyrouter.rules.conversations import Conversation

FUNNEL = ("started", "completed", "expired", "incomplete", "opted_out")
COLUMNS = ("respondent", "question", "answer", "status")


def funnel(records: list[Record], conv: Conversation | None, now: float) -> dict[str, int]:
    """started (every run), then how each ended; `open` runs count only as started."""
    out = dict.fromkeys(FUNNEL, 0)
    out["started"] = len(records)
    for record in records:
        status = record.final_status(conv, now) if conv is not None else (
            EXPIRED if record.status == OPEN else record.status)
        if status in (COMPLETED, EXPIRED, INCOMPLETE, OPTED_OUT):
            out[status] += 1
    return out


class QuestionCounts(TypedDict):
    """One question's results: `choices` (each choice's count) only when `text` is False."""

    question: str
    text: bool
    answers: int
    choices: NotRequired[dict[str, int]]


def question_counts(records: list[Record], conv: Conversation) -> list[QuestionCounts]:
    """Per question: its choices with their counts (zeros included), or the free-text count."""
    out: list[QuestionCounts] = []
    for q in conv.questions:
        answers = [r.answers[q.id] for r in records if q.id in r.answers]
        if q.text:
            out.append({"question": q.id, "text": True, "answers": len(answers)})
        else:
            counts = {c: 0 for c in q.choices}
            for a in answers:
                counts[a] = counts.get(a, 0) + 1
            out.append({"question": q.id, "text": False, "choices": counts,
                        "answers": len(answers)})
    return out


def rows(records: list[Record], conv: Conversation | None, now: float) -> Iterator[dict[str, str]]:
    """One row per answered question: respondent masked, the run's status."""
    order = [q.id for q in conv.questions] if conv is not None else []
    for record in records:
        status = record.final_status(conv, now) if conv is not None else record.status
        ids = [q for q in order if q in record.answers] + sorted(set(record.answers) - set(order))
        for qid in ids:
            yield {"respondent": mask_number(record.respondent), "question": qid,
                   "answer": record.answers[qid], "status": status}


def as_json_lines(records: list[Record], conv: Conversation | None, now: float) -> str:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows(records, conv, now)]
    lines.append(json.dumps(funnel(records, conv, now)))
    return "\n".join(lines) + "\n"


def as_csv(records: list[Record], conv: Conversation | None, now: float) -> str:
    """The rows as CSV, each cell guarded against spreadsheet formulas (`exports.cell`: an
    answer is the respondent's own text)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: cell(v) for k, v in row.items()} for row in rows(records, conv, now))
    return out.getvalue()


def as_table(records: list[Record], conv: Conversation, now: float) -> str:
    lines = [f"conversation {conv.id}"]
    for q in question_counts(records, conv):
        if q["text"]:
            lines.append(f"  {q['question']}: {q['answers']} free-text answer(s)")
        else:
            counts = ", ".join(f"{c} {n}" for c, n in q["choices"].items())
            lines.append(f"  {q['question']}: {counts} ({q['answers']} answered)")
    statuses = funnel(records, conv, now)
    lines.append("  " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in statuses.items()))
    return "\n".join(lines)


def summary(records: list[Record], conv: Conversation, now: float) -> str:
    """One line for `keyrouter replay`: the funnel, then each choice question's counts."""
    counts = funnel(records, conv, now)
    line = f"conversation {conv.id}: " + ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
    answered = [f"{q['question']} " + " ".join(f"{c}:{n}" for c, n in q["choices"].items() if n)
                for q in question_counts(records, conv) if not q["text"] and q["answers"]]
    return line + (f" ({'; '.join(answered)})" if answered else "")
