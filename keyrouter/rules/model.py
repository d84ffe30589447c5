"""The compiled rules the router and the dispatcher consume: rules, their keywords and handler
entries, and the `file:line` problems found while loading them (keyrouter.rules.loader)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from keyrouter.rules import patterns
from keyrouter.rules.conversations import Conversation
from keyrouter.rules.normalize import Normalizer

__all__ = ["HandlerEntry", "Keyword", "Location", "Problem", "Rule", "RuleSet", "RulesError"]


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Problem:
    where: Location
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.where}: {prefix}{self.message}"


class RulesError(ValueError):
    """The rules cannot be used; `problems` lists every fault found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class HandlerEntry:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds this entry may run (its own `timeout:`, else its rule's); None: the worker's
    #: KEYROUTER_HANDLER_TIMEOUT.
    timeout: float | None = None
    #: `optional: true`: a failure (permanent, or its last attempt) is recorded and the rule goes
    #: on; a transient one is retried after the rest of the rule (docs/opt-out-duty.md).
    optional: bool = False
    #: What identifies the entry within its rule besides the rule's name: handler, params digest
    #: and occurrence among identical entries (keyrouter.rules.entry_keys); "" until computed.
    identity: str = ""

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Keyword:
    written: str  # as in the file: what `match.keyword` reports
    normalized: str
    fuzzy: int  # 0 where the rule's fuzzy does not apply (keyword shorter than 4)
    where: Location
    #: Holds an emoji: `normalized` is the EmojiNormalizer form, matched as whole tokens.
    emoji: bool = False


@dataclass(frozen=True)
class Rule:
    name: str
    index: int  # file order across all files: lower wins
    handlers: tuple[HandlerEntry, ...]
    normalizer: Normalizer
    where: Location
    keywords: tuple[Keyword, ...] = ()
    pattern: patterns.Regex | None = None  # RE2: fullmatch, groupindex, pattern
    match: Literal["exact", "first_word"] = "exact"
    receivers: frozenset[str] | None = None
    max_age: timedelta | None = None
    priority: Literal["high", "normal"] = "normal"
    timeout: float | None = None  # seconds, for entries without their own
    examples_match: tuple[tuple[str, Location], ...] = ()
    examples_no_match: tuple[tuple[str, Location], ...] = ()
    #: where the rule's normalize settings come from: `file:line` of its file's section, or
    #: the file with "(no normalize: the defaults)"
    normalize_from: str = ""

    def accepts(self, receiver: str) -> bool:
        """`receiver` in canonical form (see message.canonical_receiver)."""
        return self.receivers is None or receiver in self.receivers


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    default: tuple[HandlerEntry, ...] = ()
    warnings: tuple[Problem, ...] = ()
    normalizer: Normalizer = field(default_factory=Normalizer)  # the first file's, for misses
    #: `conversations:` of every file; each has a start rule (`conversation:<id>`) after the
    #: files' rules, holding its start keywords (docs/conversations.md)
    conversations: tuple[Conversation, ...] = ()

    def entries(self) -> list[HandlerEntry]:
        """Every handler entry: each rule's in order, then the default's (what a feature check
        such as "does any rule use `iys`" has to look through)."""
        return [e for r in self.rules for e in r.handlers] + list(self.default)
