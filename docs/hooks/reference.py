"""A MkDocs hook that writes the reference pages at build time from the code itself, so they
cannot drift: `reference/settings.md` from the settings model (every field, its environment
variable, type, default, bounds and description) and `reference/commands.md` from the argument
parser (every command, action, argument and flag).  mkdocs.yml names it under `hooks:`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import annotated_types
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from keyrouter.cli import build_parser
from keyrouter.settings import _ENV, Settings

SETTINGS_PAGE = "reference/settings.md"
COMMANDS_PAGE = "reference/commands.md"
USAGE_WIDTH = 76  # fits the code block of the Material theme without scrolling


class ReferenceError(Exception):
    """The code lacks something the reference needs (a description, an environment variable)."""


def cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def type_name(info: FieldInfo) -> str:
    annotation = info.annotation
    args = getattr(annotation, "__args__", None)
    kinds = [a for a in args if a is not type(None)] if args else [annotation]
    names = ["secret" if kind is SecretStr else getattr(kind, "__name__", str(kind)) for kind in kinds]
    return " or ".join(names)


def bounds(info: FieldInfo) -> str:
    said = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            said.append(f"at least {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            said.append(f"more than {item.gt}")
        elif isinstance(item, annotated_types.Le):
            said.append(f"at most {item.le}")
        elif isinstance(item, annotated_types.Lt):
            said.append(f"less than {item.lt}")
    return ", ".join(said)


def settings_page() -> str:
    """Every Settings field as one table row; a field without an environment variable or a
    description stops the build with its name."""
    missing_env = [name for name in Settings.model_fields if name not in _ENV]
    missing_text = [name for name, info in Settings.model_fields.items() if not info.description]
    stale = [name for name in _ENV if name not in Settings.model_fields]
    if missing_env or missing_text or stale:
        raise ReferenceError(f"keyrouter.settings: fields without an environment variable {missing_env}, "
                             f"without a description {missing_text}; variables of no field {stale}")
    lines = [
        "# Settings",
        "",
        "Every setting is an environment variable; a command's flag (`--rules`, `--store`, "
        "`--metrics`...) overrides it. A value that is not valid stops every command with exit 2 "
        "and a line naming the variable. Secrets never appear in logs, errors or reprs.",
        "",
        "This page is generated from `keyrouter.settings.Settings` when the site is built.",
        "",
        "| variable | meaning | type | default |",
        "| --- | --- | --- | --- |",
    ]
    for name, info in Settings.model_fields.items():
        default = "none" if info.default is None else f"`{info.default}`"
        kind = type_name(info) + (f" ({bounds(info)})" if bounds(info) else "")
        lines.append(f"| `{_ENV[name]}` | {cell(info.description or '')} | {kind} | {default} |")
    return "\n".join(lines) + "\n"


def subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """(words after `keyrouter`, parser, one-line summary) of every command and action, depth first."""
    sub = subparsers(parser)
    if sub is None:
        return
    summaries = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    seen: set[int] = set()
    for name, child in sub.choices.items():
        if id(child) in seen:  # an alias
            continue
        seen.add(id(child))
        yield (*path, name), child, summaries.get(name, "")
        yield from commands(child, (*path, name))


def flag_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if action.option_strings:
            metavar = formatter._format_args(action, action.dest.upper()) if action.nargs != 0 else ""
            name = ", ".join(f"`{o}{' ' + metavar if metavar else ''}`" for o in action.option_strings)
        else:
            name = f"`{formatter._metavar_formatter(action, action.dest)(1)[0]}`"
        text = formatter._expand_help(action) if action.help else ""
        if action.choices and not isinstance(action.choices, dict):
            choices = f"one of {', '.join(f'`{c}`' for c in action.choices)}"
            text = f"{text} ({choices})" if text else choices
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else f"`{default}`"
        rows.append(f"| {name} | {cell(text)} | {shown} |")
    return rows


def usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def commands_page() -> str:
    root = build_parser()
    lines = [
        "# Commands",
        "",
        "Every command, action and flag of `keyrouter`, with the example each one prints under "
        "`--help`. Exit codes and the conventions every command follows are in "
        "[the reference's overview](index.md).",
        "",
        "This page is generated from `keyrouter.cli.build_parser()` when the site is built.",
        "",
        "## keyrouter",
        "",
        "```",
        usage(root),
        "```",
        "",
        "| argument | meaning | default |",
        "| --- | --- | --- |",
        *flag_rows(root),
        "",
    ]
    for words, parser, summary in commands(root):
        depth = "#" * min(len(words) + 1, 4)
        sentence = cell(summary[:1].upper() + summary[1:]) + "."
        lines += [f"{depth} keyrouter {' '.join(words)}", "", sentence, "", "```", usage(parser), "```", ""]
        rows = flag_rows(parser)
        if rows:
            lines += ["| argument | meaning | default |", "| --- | --- | --- |", *rows, ""]
        if parser.epilog:
            lines += ["```", parser.epilog.strip("\n"), "```", ""]
    return "\n".join(lines)


def pages() -> dict[str, str]:
    """The generated pages by their path under docs/."""
    return {SETTINGS_PAGE: settings_page(), COMMANDS_PAGE: commands_page()}


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    """MkDocs event: add the generated pages before the navigation is built."""
    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
