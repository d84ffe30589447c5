"""`keyrouter check` and `keyrouter explain`: the rules, without the store or the provider."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from keyrouter.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    command,
    load_router,
    rules_flag,
    store_flag,
    with_store,
)
from keyrouter.conversations.checks import check_all
from keyrouter.conversations.cli import describe_sender, explain_json
from keyrouter.message import to_e164
from keyrouter.rules.model import HandlerEntry
from keyrouter.rules.router import Route, Router
from keyrouter.settings import Settings


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    router = load_router(args, settings, runnable=True)
    failures, count = check_all(router)
    for problem in failures:
        print(problem, file=sys.stderr)
    if failures:
        return EXIT_BAD_INPUT
    conversations = len(router.rules.conversations)
    rules = len(router.rules.rules) - conversations  # each conversation adds its start rule
    also = f", {conversations} conversation(s)" if conversations else ""
    print(f"{settings.rules}: {rules} rules valid{also}, {count} examples hold")
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
    record = None
    if args.as_sender:  # the sender's open conversation, from the store
        respondent = to_e164(args.as_sender) or args.as_sender.strip()

        async def read(store: Any) -> int:
            nonlocal record
            record = await store.conversation_of(respondent)
            return EXIT_OK

        with_store(settings, read)
    convs = {c.id: c for c in router.rules.conversations}
    conv = convs.get(record.conversation) if record is not None else None
    now = time.time()
    for text in args.texts:
        route = router.route(text, args.receiver)
        answer = None
        if args.as_sender and not (route.rule is not None and route.rule.priority == "high"):
            start = route.rule is not None and route.rule.name.startswith("conversation:")
            answer = describe_sender(record, conv, args.as_sender, now, start)
        if args.json:
            found = route_json(text, route)
            if args.as_sender:
                found["as"] = explain_json(record, conv, now) if answer else {"conversation": None}
            print(json.dumps(found, ensure_ascii=False))
        else:
            print(describe(text, route, router) + ("\n" + answer if answer else ""))
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
    p.add_argument("--as", dest="as_sender", metavar="SENDER",
                   help="as sent by SENDER: shows when the text is the answer to SENDER's open "
                        "conversation (reads the store)")
    store_flag(p)
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.set_defaults(func=cmd_explain)
