"""`keyrouter check` and `keyrouter explain`: the rules, without the store or the provider."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from keyrouter.check import check_examples
from keyrouter.cli_common import EXIT_BAD_INPUT, EXIT_OK, command, load_router, rules_flag
from keyrouter.router import Route, Router
from keyrouter.rules import HandlerEntry
from keyrouter.settings import Settings


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    router = load_router(args, settings, runnable=True)
    failures, count = check_examples(router)
    for problem in failures:
        print(problem, file=sys.stderr)
    if failures:
        return EXIT_BAD_INPUT
    print(f"{settings.rules}: {len(router.rules.rules)} rules valid, {count} examples hold")
    return EXIT_OK


def entry_json(entry: HandlerEntry) -> Any:
    if entry.timeout is not None:  # as written in a rules file: the name, then `timeout`
        return {entry.name: dict(entry.params) or None, "timeout": entry.timeout}
    return {entry.name: dict(entry.params)} if entry.params else entry.name


def route_json(text: str, route: Route) -> dict[str, Any]:
    m = route.match
    return {
        "text": text,
        "normalized": route.normalized,
        "rule": m.rule if m else None,
        "keyword": m.keyword if m else None,
        "captures": m.captures if m else {},
        "fuzzy": m.fuzzy if m else False,
        "priority": route.rule.priority if route.rule else "normal",
        "handlers": [entry_json(e) for e in route.handlers],
    }


def _entry_text(entry: HandlerEntry) -> str:
    return f"{entry.name} (timeout {entry.timeout:g}s)" if entry.timeout is not None else entry.name


def describe(text: str, route: Route, router: Router) -> str:
    normalizer = route.rule.normalizer if route.rule else router.normalizer
    lines = [repr(text)]
    previous = text
    for name, value in normalizer.steps(text):
        if value != previous:
            lines.append(f"  {name + ':':36} {value!r}")
        previous = value
    lines.append(f"  {'normalized:':36} {route.normalized!r}")
    if route.rule is not None and route.rule.normalize_from:
        lines.append(f"  {'normalize settings from:':36} {route.rule.normalize_from}")
    m, rule = route.match, route.rule
    if m is None or rule is None:
        handlers = ", ".join(map(_entry_text, route.handlers)) or "none (no default configured)"
        lines.append(f"  -> no rule matched; default handlers: {handlers}")
        return "\n".join(lines)
    why = {
        "exact": f"exact keyword {m.keyword!r}",
        "first_word": f"first word(s) are keyword {m.keyword!r}",
        "pattern": f"pattern {rule.pattern.pattern if rule.pattern else ''!r}",
        "fuzzy": f"fuzzy match of keyword {m.keyword!r} at distance {m.distance}",
    }[m.how]
    lines.append(f"  -> rule {m.rule!r} ({rule.where}): {why}")
    if m.captures:
        lines.append(f"     captures: {m.captures}")
    lines.append(f"     priority: {rule.priority}")
    lines.append(f"     handlers: {', '.join(map(_entry_text, route.handlers))}")
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    router = load_router(args, settings)
    for text in args.texts:
        route = router.route(text, args.receiver)
        if args.json:
            print(json.dumps(route_json(text, route), ensure_ascii=False))
        else:
            print(describe(text, route, router))
    return EXIT_OK


def add_parser(sub: Any) -> None:
    p = command(sub, "check", "validate the rules and run their examples",
                "keyrouter check --rules rules/")
    rules_flag(p)
    p.set_defaults(func=cmd_check)

    p = command(sub, "explain", "show how texts normalize and which rule each one routes to",
                'keyrouter explain "ILT AHKTEST İPTAL!!" "anket: b" "merhaba"\n'
                'keyrouter explain --json --receiver 7889 -- "-RET"')
    rules_flag(p)
    p.add_argument("--receiver", help="the receiving number or short code")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.set_defaults(func=cmd_explain)
