"""The `keyrouter` command.  Thin: parsing arguments and printing; the work is in the modules."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from keyrouter.check import check_examples
from keyrouter.router import Route, Router
from keyrouter.rules import HandlerEntry, RulesError, load_rules
from keyrouter.settings import Settings

EXIT_OK, EXIT_DEAD_LETTERS, EXIT_BAD_INPUT, EXIT_AUTH = 0, 1, 2, 3


def _load_router(rules_path: str) -> Router | None:
    try:
        rules = load_rules(rules_path)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    for warning in rules.warnings:
        print(warning, file=sys.stderr)
    return Router(rules)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    router = _load_router(settings.rules)
    if router is None:
        return EXIT_BAD_INPUT
    failures, count = check_examples(router)
    for problem in failures:
        print(problem, file=sys.stderr)
    if failures:
        return EXIT_BAD_INPUT
    print(f"{settings.rules}: {len(router.rules.rules)} rules valid, {count} examples hold")
    return EXIT_OK


def entry_json(entry: HandlerEntry) -> Any:
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
        "handlers": [entry_json(e) for e in route.handlers],
    }


def describe(text: str, route: Route, router: Router) -> str:
    normalizer = route.rule.normalizer if route.rule else router.normalizer
    lines = [repr(text)]
    previous = text
    for name, value in normalizer.steps(text):
        if value != previous:
            lines.append(f"  {name + ':':36} {value!r}")
        previous = value
    lines.append(f"  {'normalized:':36} {route.normalized!r}")
    m, rule = route.match, route.rule
    if m is None or rule is None:
        handlers = ", ".join(map(str, route.handlers)) or "none (no default configured)"
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
    lines.append(f"     handlers: {', '.join(map(str, route.handlers))}")
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    router = _load_router(settings.rules)
    if router is None:
        return EXIT_BAD_INPUT
    for text in args.texts:
        route = router.route(text, args.receiver)
        if args.json:
            print(json.dumps(route_json(text, route), ensure_ascii=False))
        else:
            print(describe(text, route, router))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyrouter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def rules_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rules", help="rules file or folder (env KEYROUTER_RULES, default ./rules)")

    p = sub.add_parser("check", help="validate the rules and run their examples")
    rules_flag(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("explain", help="show how texts normalize and route")
    rules_flag(p)
    p.add_argument("--receiver", help="the receiving number or short code")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.set_defaults(func=cmd_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings.from_env(rules=getattr(args, "rules", None))
    return int(args.func(args, settings))


if __name__ == "__main__":
    sys.exit(main())
