"""Commands that read the store: `dead-letters`, `survey` (`optouts`: keyrouter.cli.optouts).
Every time shown is Turkey time with its offset, as the provider's message dates
(keyrouter.timefmt.iso)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from keyrouter import timefmt
from keyrouter.cli.common import (
    DEFAULT_STORE,
    EXIT_BAD_INPUT,
    EXIT_OK,
    CliError,
    command,
    read_store,
    with_store,
)
from keyrouter.compliance import exports, reports
from keyrouter.conversations.cli import declared_conversation, print_results
from keyrouter.handlers.survey import declared_surveys
from keyrouter.masking import mask_text
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError
from keyrouter.settings import Settings
from keyrouter.store.choice import read_flags


# ---------------------------------------------------------------------------- dead-letters
def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    settings = read_store(args, settings, must_exist=args.action == "list")

    async def body(store: Any) -> int:
        letters = await store.dead_letters()
        if args.action == "list":
            if not letters and not args.json:
                print("no dead letters")
            for d in letters:
                when = timefmt.iso(d.failed_at)
                if args.json:
                    print(json.dumps({"id": d.id, "rule": d.rule, "attempts": d.attempts,
                                      "failed_at": when, "error": mask_text(d.error)},
                                     ensure_ascii=False))
                else:
                    print(f"{d.id}\t{when}\trule={d.rule}\tattempts={d.attempts}\t"
                          f"{mask_text(d.error)}")
            return EXIT_OK
        if args.all and args.ids:
            raise CliError("give dead letter ids or --all, not both")
        if not args.all and not args.ids:
            raise CliError(f"give dead letter ids, or --all (keyrouter dead-letters {args.action} --all)")
        ids = [d.id for d in letters] if args.all else args.ids
        if not ids:
            print("no dead letters")
            return EXIT_OK
        change = store.retry_dead if args.action == "retry" else store.drop_dead
        missing = [i for i in ids if not await change(i)]
        for i in missing:
            print(f"keyrouter: {i}: not a dead letter (keyrouter dead-letters list)", file=sys.stderr)
        verb = ("will run again from their stored rows (shared with the workers now)"
                if args.action == "retry" else "dropped")
        print(f"{len(ids) - len(missing)} dead letters {verb}")
        return EXIT_BAD_INPUT if missing else EXIT_OK

    return with_store(settings, body)


# ---------------------------------------------------------------------------- survey
def read_surveys(settings: Settings) -> dict[str, tuple[str, ...]] | None:
    """Survey id -> the choices the rules declare; None when the rules cannot be read (then only
    the store's counts are shown)."""

    try:
        rules = load_rules(settings.rules, settings.rules_max_bytes, handlers=False)
    except (RulesError, OSError) as exc:
        print(f"keyrouter: warning: the rules ({settings.rules}) cannot be read, so choices with no "
              f"votes are not shown: {str(exc).splitlines()[0]}", file=sys.stderr)
        return None
    return declared_surveys(rules)


def cmd_survey(args: argparse.Namespace, settings: Settings) -> int:
    settings = read_store(args, settings)
    declared = read_surveys(settings)
    survey = str(args.id).strip()
    conversation = declared_conversation(settings, survey)

    async def body(store: Any) -> int:
        records = await store.conversation_records(survey)
        if conversation is not None or records:  # a conversation's results (docs/conversations.md)
            print_results(records, conversation, args.format, time.time())
            return EXIT_OK
        results = await store.survey_results(survey)
        used = bool(results.votes) or results.rejected or results.last_vote_at is not None
        if declared is not None and survey not in declared and not used:
            known = ", ".join(sorted(declared)) or "none"
            raise CliError(f"no survey {survey!r}: no rule declares it and no vote uses it "
                           f"(surveys in {settings.rules}: {known})")
        choices = (declared or {}).get(survey, ())
        if args.format == "json":
            print(json.dumps(exports.survey_dict(results, choices), ensure_ascii=False))
        elif args.format == "csv":
            sys.stdout.write(exports.survey_csv(results, choices))
        else:
            print(reports.survey_table(results, choices=choices))
        return EXIT_OK

    return with_store(settings, body)


# ---------------------------------------------------------------------------- parsers
def add_parser(sub: Any) -> None:
    p = command(sub, "dead-letters", "list, retry or drop the messages whose handlers gave up",
                "keyrouter dead-letters list\nkeyrouter dead-letters retry --all")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = command(actions, "list", "list the dead letters: id, time (Turkey), rule, attempts, error",
                "keyrouter dead-letters list --json | head -3")
    read_flags(q, DEFAULT_STORE)
    q.add_argument("--json", action="store_true", help="one JSON object a line")
    for name, summary in (("retry", "run these dead letters again at the next poll or replay"),
                          ("drop", "give up on these dead letters (they are marked done)")):
        q = command(actions, name, summary,
                    f"keyrouter dead-letters {name} 1012 1013\nkeyrouter dead-letters {name} --all")
        read_flags(q, DEFAULT_STORE)
        q.add_argument("ids", nargs="*", metavar="ID")
        q.add_argument("--all", action="store_true", help="every dead letter (none is fine)")
    p.set_defaults(func=cmd_dead_letters)

    p = command(sub, "survey", "survey votes counted by the survey handler, and conversations' "
                "answers",
                "keyrouter survey results spring-2026")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = command(actions, "results", "votes per choice (every choice the rules declare), voters, "
                "rejected votes, last vote", "keyrouter survey results spring-2026 --format csv")
    read_flags(q, DEFAULT_STORE)
    q.add_argument("--rules", help="rules file or folder that declares the survey's choices "
                   "(env KEYROUTER_RULES, default ./rules)")
    q.add_argument("id", metavar="ID", help="the survey's id, as in the rules: survey: {id: ...}")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_survey)
