"""The Surveys page's conversations: a bar chart per choice question and the completion funnel
(docs/conversations.md, "Results"), from the respondents' records."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from keyrouter.conversations.results import funnel, question_counts
from keyrouter.rules.conversations import Conversation
from keyrouter.store import ConversationStore
from keyrouter.web.charts import bar_chart


@dataclass(frozen=True)
class ConversationView:
    conversation: str
    charts: list[tuple[str, Markup]]  # (question id, its choices' bars)
    free_text: list[tuple[str, int]]  # (question id, answers)
    funnel: Markup
    counts: dict[str, int]


async def conversation_views(store: ConversationStore, conversations: tuple[Conversation, ...],
                             now: float) -> list[ConversationView]:
    views = []
    for conv in conversations:
        records = await store.conversation_records(conv.id)
        charts, free = [], []
        for q in question_counts(records, conv):
            if q["text"]:
                free.append((q["question"], q["answers"]))
            else:
                bars = [(choice, n, True) for choice, n in q["choices"].items()]
                charts.append((q["question"], bar_chart(f"{conv.id}: {q['question']}", bars)))
        counts = funnel(records, conv, now)
        steps = [(name.replace("_", " "), n, True) for name, n in counts.items()]
        views.append(ConversationView(conv.id, charts, free,
                                      bar_chart(f"{conv.id}: completion funnel", steps), counts))
    return views
