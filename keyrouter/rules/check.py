"""Run every rule's `examples` through the router: the rules' own tests (keyrouter.conversations.checks
adds the conversations' examples for `keyrouter check`)."""

from __future__ import annotations

from keyrouter.rules.model import Problem, Rule
from keyrouter.rules.router import Router


def _receiver_for(rule: Rule) -> str | None:
    """Examples of a rule limited to some receivers are routed as if sent to the first of them."""
    return min(rule.receivers) if rule.receivers else None


def check_examples(router: Router) -> tuple[list[Problem], int]:
    """(failures, number of examples run)."""
    problems: list[Problem] = []
    count = 0
    for rule in router.rules.rules:
        receiver = _receiver_for(rule)
        for text, where in rule.examples_match:
            count += 1
            got = router.route(text, receiver)
            if got.rule is not rule:
                to = f"rule '{got.rule.name}'" if got.rule else "no rule (the default)"
                problems.append(Problem(where, f"example {text!r} should match rule "
                                               f"'{rule.name}' but routes to {to} "
                                               f"(normalized: {rule.normalizer(text)!r}, with the "
                                               f"settings of {rule.normalize_from})"))
        for text, where in rule.examples_no_match:
            count += 1
            got = router.route(text, receiver)
            if got.rule is rule:
                problems.append(Problem(where, f"example {text!r} should not match rule "
                                               f"'{rule.name}' but does "
                                               f"(normalized: {got.normalized!r}, with the "
                                               f"settings of {rule.normalize_from})"))
    return problems, count
