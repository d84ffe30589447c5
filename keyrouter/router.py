"""Compiled rules -> indexes; `route(text, receiver)` -> `Route`.  Pure, no I/O.

File order decides, exact and pattern matches beat fuzzy ones.  The cost of a lookup does not
grow with the number of keyword rules: exact keywords are one dict probe, first-word keywords one
probe on the first word, fuzzy keywords a deletion-neighbourhood probe; only patterns are tried
one after another (most of them folded into one alternation the regex engine runs in C).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from keyrouter.firstchars import first_chars
from keyrouter.fuzzy import DeletionIndex
from keyrouter.message import canonical_receiver
from keyrouter.normalize import Normalizer, NormalizeSettings
from keyrouter.rules import HandlerEntry, Keyword, Rule, RuleSet

#: Patterns run on normalized texts up to this length; longer texts (no SMS is this long, even
#: concatenated) can still match keywords, and otherwise go to the default.
MAX_PATTERN_TEXT = 1000
How = Literal["exact", "first_word", "pattern", "fuzzy"]
_UNFOLDABLE = re.compile(r"\\[1-9]|\(\?\(|^\(\?[aiLmsux]+\)")
_NAMED_GROUP = re.compile(r"\(\?P<([A-Za-z_]\w*)>")
_NAMED_BACKREF = re.compile(r"\(\?P=([A-Za-z_]\w*)\)")


@dataclass(slots=True)
class Match:
    """What matched: handed to every handler of the rule, the same object to each, so treat it
    as read-only.  (Not frozen: a frozen dataclass costs three times as much to build, on the
    path every routed text takes.)"""

    rule: str
    keyword: str | None = None  # as written in the rules file
    captures: dict[str, str] = field(default_factory=dict)
    fuzzy: bool = False
    how: How = "exact"
    distance: int = 0


@dataclass(slots=True)
class Route:
    normalized: str
    match: Match | None
    rule: Rule | None
    handlers: tuple[HandlerEntry, ...]  # the rule's, or the default's when nothing matched


@dataclass(slots=True)
class _Found:
    index: int
    rule: Rule
    match: Match


class _Group:
    """The rules of one set of normalize settings (usually all of them)."""

    def __init__(self, normalizer: Normalizer, rules: list[Rule]) -> None:
        self.normalizer = normalizer
        self.exact: dict[str, list[tuple[Rule, Keyword]]] = {}
        self.first: dict[str, list[tuple[Rule, Keyword, tuple[str, ...]]]] = {}
        self.fuzzy_exact: DeletionIndex[tuple[Rule, Keyword]] = DeletionIndex()
        self.fuzzy_first: dict[int, DeletionIndex[tuple[Rule, Keyword]]] = {}
        self.patterns: list[Rule] = []
        for rule in rules:
            for kw in rule.keywords:
                if rule.match == "exact":
                    self.exact.setdefault(kw.normalized, []).append((rule, kw))
                    if kw.fuzzy:
                        self.fuzzy_exact.add(kw.normalized, kw.fuzzy, (rule, kw))
                else:
                    words = tuple(kw.normalized.split(" "))
                    self.first.setdefault(words[0], []).append((rule, kw, words))
                    if kw.fuzzy:
                        index = self.fuzzy_first.setdefault(len(words), DeletionIndex())
                        index.add(kw.normalized, kw.fuzzy, (rule, kw))
            if rule.pattern is not None:
                self.patterns.append(rule)
        for candidates in self.first.values():  # file order; within a rule, longest keyword first
            candidates.sort(key=lambda c: (c[0].index, -len(c[2])))
        self.patterns_first = [(r, first_chars(r.pattern)) for r in self.patterns]  # type: ignore[arg-type]
        self._by_head: dict[str, _PatternSet] = {}

    def find(self, text: str, receiver: str, best: _Found | None) -> _Found | None:
        limit = best.index if best else 1 << 62
        for rule, kw in self.exact.get(text, ()):
            if rule.index >= limit:
                break
            if rule.accepts(receiver):
                best, limit = _Found(rule.index, rule, Match(rule.name, kw.written)), rule.index
                break
        if self.first:
            head, _, _ = text.partition(" ")
            candidates = self.first.get(head)
            if candidates:
                words = text.split(" ")
                for rule, kw, kw_words in candidates:
                    if rule.index >= limit:
                        break
                    n = len(kw_words)
                    if tuple(words[:n]) == kw_words and rule.accepts(receiver):
                        match = Match(rule.name, kw.written, {"rest": " ".join(words[n:])},
                                      how="first_word")
                        best, limit = _Found(rule.index, rule, match), rule.index
                        break
        if self.patterns and len(text) <= MAX_PATTERN_TEXT:
            best = self._find_pattern(text, receiver, best, limit)
        return best

    def _patterns_for(self, head: str) -> _PatternSet:
        """The patterns that can match a text starting with `head`, compiled on first use."""
        found = self._by_head.get(head)
        if found is None:
            rules = [r for r, chars in self.patterns_first if chars is None or head in chars]
            found = self._by_head[head] = _PatternSet(rules)
        return found

    def _find_pattern(self, text: str, receiver: str, best: _Found | None,
                      limit: int) -> _Found | None:
        patterns = self._patterns_for(text[:1])
        if patterns.combined is not None and patterns.folded[0].index < limit:
            m = patterns.combined.fullmatch(text)
            if m:
                slot = int(m.lastgroup[2:])  # type: ignore[index]
                rule = patterns.folded[slot]
                if rule.index < limit:
                    captures = {name: m.group(group) for group, name in patterns.groups[slot]
                                if m.group(group) is not None}
                    best = _Found(rule.index, rule, Match(rule.name, None, captures, how="pattern"))
                    limit = rule.index
        for rule in patterns.single:
            if rule.index >= limit:
                break
            m = rule.pattern.fullmatch(text) if rule.accepts(receiver) else None  # type: ignore[union-attr]
            if m:
                captures = {k: v for k, v in m.groupdict().items() if v is not None}
                return _Found(rule.index, rule, Match(rule.name, None, captures, how="pattern"))
        return best

    def find_fuzzy(self, text: str, receiver: str, best: _Found | None) -> _Found | None:
        for (rule, kw), d in self.fuzzy_exact.near(text):
            if (best is None or rule.index < best.index) and rule.accepts(receiver):
                best = _Found(rule.index, rule, Match(rule.name, kw.written, {}, True, "fuzzy", d))
        if self.fuzzy_first:
            words = text.split(" ")
            for n, index in self.fuzzy_first.items():
                if len(words) < n:
                    continue
                for (rule, kw), d in index.near(" ".join(words[:n])):
                    if (best is None or rule.index < best.index) and rule.accepts(receiver):
                        match = Match(rule.name, kw.written, {"rest": " ".join(words[n:])},
                                      True, "fuzzy", d)
                        best = _Found(rule.index, rule, match)
        return best


class _PatternSet:
    """Receiver-less patterns folded into one alternation, in file order: the regex engine tries
    them in C and the first alternative that matches the whole text wins, as file order says.
    Patterns that cannot be folded safely (receivers, numbered back-references, conditionals,
    global flags) are tried one by one."""

    def __init__(self, patterns: list[Rule]) -> None:
        self.folded: list[Rule] = []
        self.single: list[Rule] = []
        self.groups: list[list[tuple[str, str]]] = []  # per folded rule: (group in combined, name)
        self.combined: re.Pattern[str] | None = None
        parts = []
        for rule in patterns:
            source = rule.pattern.pattern  # type: ignore[union-attr]
            if rule.receivers is not None or _UNFOLDABLE.search(source):
                self.single.append(rule)
                continue
            slot = len(self.folded)
            self.folded.append(rule)
            self.groups.append([(f"_g{slot}_{name}", name) for name in rule.pattern.groupindex])  # type: ignore[union-attr]
            source = _NAMED_GROUP.sub(lambda m, s=slot: f"(?P<_g{s}_{m.group(1)}>", source)
            source = _NAMED_BACKREF.sub(lambda m, s=slot: f"(?P=_g{s}_{m.group(1)})", source)
            parts.append(f"(?P<_k{slot}>{source})")
        if parts:
            try:
                self.combined = re.compile("|".join(parts))
            except re.error:  # never expected; trying them one by one is always correct
                self.folded, self.groups, self.single = [], [], list(patterns)


class Router:
    """Compiled once per rule set; `route()` is safe to call from many tasks or threads."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        by_settings: dict[NormalizeSettings, tuple[Normalizer, list[Rule]]] = {}
        for rule in rules.rules:
            by_settings.setdefault(rule.normalizer.settings, (rule.normalizer, []))[1].append(rule)
        self._groups = [_Group(n, rs) for n, rs in by_settings.values()]
        self._uses_receivers = any(r.receivers is not None for r in rules.rules)
        self._fuzzy = any(g.fuzzy_exact or g.fuzzy_first for g in self._groups)
        self.normalizer = rules.normalizer

    def route(self, text: str, receiver: str | None = None) -> Route:
        canonical = canonical_receiver(receiver) if self._uses_receivers and receiver else ""
        if len(self._groups) == 1:  # the usual case: one set of normalize settings
            group = self._groups[0]
            normalized = group.normalizer(text)
            best = group.find(normalized, canonical, None)
            if best is None and self._fuzzy:
                best = group.find_fuzzy(normalized, canonical, None)
            if best is None:
                return Route(normalized, None, None, self.rules.default)
            return Route(normalized, best.match, best.rule, best.rule.handlers)
        best = None
        texts = []
        for group in self._groups:
            normalized = group.normalizer(text)
            texts.append(normalized)
            best = group.find(normalized, canonical, best)
        if best is None and self._fuzzy:
            for group, normalized in zip(self._groups, texts, strict=True):
                best = group.find_fuzzy(normalized, canonical, best)
        if best is None:
            normalized = texts[0] if texts else self.normalizer(text)
            return Route(normalized, None, None, self.rules.default)
        normalized = texts[self._group_of(best.rule)]
        return Route(normalized, best.match, best.rule, best.rule.handlers)

    def _group_of(self, rule: Rule) -> int:
        for i, group in enumerate(self._groups):
            if group.normalizer.settings == rule.normalizer.settings:
                return i
        return 0
