"""`keyrouter check` for conversations: every start keyword reaches its conversation (no rule
takes it first), and every example conversation ends with the answers it declares
(docs/conversations.md, "Checking")."""

from __future__ import annotations

from keyrouter.conversations.engine import Conversations, is_opt_out
from keyrouter.conversations.steps import Record, opt_out
from keyrouter.rules.check import check_examples
from keyrouter.rules.conversations import Conversation, Example
from keyrouter.rules.model import Problem
from keyrouter.rules.router import Router

RESPONDENT = "+905000000000"


def check_conversations(router: Router) -> tuple[list[Problem], int]:
    """(problems, number of examples run)."""
    problems: list[Problem] = []
    engine = Conversations(router.rules, None)
    count = 0
    for conv in router.rules.conversations:
        start_rule = engine.start_rules[conv.rule_name]
        for word, where in zip(conv.start, conv.start_where, strict=True):
            got = router.route(word)
            if got.rule is not start_rule and got.rule is not None:
                kind = "the priority: high rule" if got.rule.priority == "high" else "rule"
                problems.append(Problem(where, f"conversation '{conv.id}': start keyword "
                                               f"'{word}' is taken by {kind} '{got.rule.name}' "
                                               f"({got.rule.where}), so it never starts it"))
        for example in conv.examples:
            count += 1
            problem = _run_example(router, engine, conv, example)
            if problem:
                problems.append(Problem(example.where, f"conversation '{conv.id}': {problem}"))
    return problems, count


def _run_example(router: Router, engine: Conversations, conv: Conversation,
                 example: Example) -> str | None:
    """Say the example's texts one after another as the dispatcher would take them."""
    record: Record | None = None
    now = 0.0
    for i, text in enumerate(example.say):
        message_id = f"example-{i}"
        route = router.route(text)
        current = engine.by_id.get(record.conversation) if record else None
        is_open = record is not None and record.is_open(current, now)
        if route.rule is not None and route.rule.priority == "high":
            if is_open and record is not None and is_opt_out(route.rule):
                record = opt_out(record, message_id)
            continue
        if is_open or (route.rule is not None and route.rule.name == conv.rule_name):
            record = engine.apply(conv, record, text, message_id, RESPONDENT, now)
        elif record is None:
            return (f"example {list(example.say)}: {text!r} does not start the conversation "
                    f"(it routes to {route.rule.name if route.rule else 'the default'!r})")
        now += 1.0
    answers = record.answers if record else {}
    if answers != example.answers:
        return (f"example {list(example.say)} ends with answers {answers}, but the example "
                f"declares {example.answers}")
    status = record.final_status(conv, now) if record else None
    if example.status is not None and status != example.status:
        return f"example {list(example.say)} ends {status}, but the example declares {example.status}"
    return None


def check_all(router: Router) -> tuple[list[Problem], int]:
    """Every example of the rules files: the rules' (keyrouter.rules.check) and the conversations'
    (start keywords and example conversations); (failures, number of examples run)."""
    problems, count = check_examples(router)
    found, ran = check_conversations(router)
    return problems + found, count + ran
