"""Compiled rules -> indexes; `route(text, receiver)` -> `Route`.  Pure, no I/O.

File order decides, exact and pattern matches beat fuzzy ones.  The cost of a lookup does not
grow with the number of keyword rules: exact keywords are one dict probe, first-word keywords one
probe on the first word, fuzzy keywords a deletion-neighbourhood probe; only patterns are tried
one after another (folded into one RE2 alternation per possible first character, which runs in C
in time linear in the text).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import re2

from keyrouter.message import canonical_receiver
from keyrouter.rules.emoji import EmojiNormalizer
from keyrouter.rules.fuzzy import DeletionIndex
from keyrouter.rules.model import HandlerEntry, Keyword, Rule, RuleSet
from keyrouter.rules.normalize import Normalizer, NormalizeSettings
from keyrouter.rules.patterns import OPTIONS, first_chars, rewrite_groups

#: Patterns run on normalized texts up to this length; longer texts (no SMS is this long, even
#: concatenated) can still match keywords, and otherwise go to the default.
MAX_PATTERN_TEXT = 1000
How = Literal["exact", "first_word", "pattern", "fuzzy"]
_BOTH = re2._Anchor.ANCHOR_BOTH
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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

    def copy(self) -> Match:
        """A copy with its own captures: what a handler changes stays with its message."""
        return Match(self.rule, self.keyword, dict(self.captures) if self.captures else {},
                     self.fuzzy, self.how, self.distance)


@dataclass(slots=True)
class Route:
    normalized: str
    match: Match | None
    rule: Rule | None
    handlers: tuple[HandlerEntry, ...]  # the rule's, or the default's when nothing matched

    def copy(self) -> Route:
        """The same route with its own Match (see `Match.copy`)."""
        return Route(self.normalized, None if self.match is None else self.match.copy(),
                     self.rule, self.handlers)


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
        # emoji keywords, matched on the EmojiNormalizer form of texts that are not ASCII
        self.emoji_exact: dict[str, list[tuple[Rule, Keyword]]] = {}
        self.emoji_first: dict[str, list[tuple[Rule, Keyword, tuple[str, ...]]]] = {}
        for rule in rules:
            for kw in rule.keywords:
                if kw.emoji:
                    if rule.match == "exact":
                        self.emoji_exact.setdefault(kw.normalized, []).append((rule, kw))
                    else:
                        words = tuple(kw.normalized.split(" "))
                        self.emoji_first.setdefault(words[0], []).append((rule, kw, words))
                    continue
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
        for candidates in (*self.first.values(), *self.emoji_first.values()):
            candidates.sort(key=lambda c: (c[0].index, -len(c[2])))  # file order, longest first
        self.emoji = (EmojiNormalizer(normalizer)
                      if self.emoji_exact or self.emoji_first else None)
        # first character -> the patterns (positions in self.patterns) that can start with it
        starts = [first_chars(r.pattern.pattern) for r in self.patterns]  # type: ignore[union-attr]
        self._anywhere = tuple(i for i, chars in enumerate(starts) if chars is None)
        self._head_key = {head: tuple(i for i, chars in enumerate(starts)
                                      if chars is None or head in chars)
                          for head in set().union(*(c for c in starts if c))}
        self._sets: dict[tuple[int, ...], _PatternSet] = {}
        self._by_head: dict[str, _PatternSet] = {}

    def find(self, text: str, receiver: str, best: _Found | None) -> _Found | None:
        best = _keyword_match(self.exact, self.first, text, receiver, best)
        if self.patterns and len(text) <= MAX_PATTERN_TEXT:
            best = self._find_pattern(text, receiver, best, best.index if best else 1 << 62)
        return best

    def find_emoji(self, raw: str, receiver: str, best: _Found | None) -> _Found | None:
        """The emoji keywords, on the EmojiNormalizer form of the raw text."""
        assert self.emoji is not None
        return _keyword_match(self.emoji_exact, self.emoji_first, self.emoji(raw), receiver, best)

    def _patterns_for(self, head: str) -> _PatternSet:
        """The patterns that can match a text starting with `head`, compiled on first use (one
        set per distinct list of patterns, so odd first characters cannot grow the cache)."""
        found = self._by_head.get(head)
        if found is None:
            key = self._head_key.get(head, self._anywhere)
            found = self._sets.get(key)
            if found is None:
                found = self._sets[key] = _PatternSet([self.patterns[i] for i in key])
            if head in self._head_key:
                self._by_head[head] = found
        return found

    def _find_pattern(self, text: str, receiver: str, best: _Found | None,
                      limit: int) -> _Found | None:
        patterns = self._patterns_for(text[:1])
        if patterns.combined is None and not patterns.single:
            return best
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate (half an emoji): RE2 reads only UTF-8
            text = _LONE_SURROGATE.sub("\ufffd", text)
            data = text.encode()
        if patterns.combined is not None and patterns.folded[0].index < limit:
            found = patterns.first(data)
            if found is not None:
                rule = patterns.folded[found[0]]
                if rule.index < limit:
                    best = _Found(rule.index, rule, Match(rule.name, None, found[1], how="pattern"))
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
    """Receiver-less patterns folded into one RE2 alternation, in file order.  RE2 prefers the
    earliest alternative that matches the whole text, as file order says, in time linear in the
    text.  Most texts stop at a byte comparison (RE2's bounds of what any match can be) or at
    `test`, a program without capturing groups (RE2's cost grows with them); `combined` has a
    group per rule, to tell which rule matched and its captures.  Patterns with `receivers` are
    tried one by one (an earlier pattern may be for another receiver)."""

    def __init__(self, patterns: list[Rule]) -> None:
        self.folded: list[Rule] = []
        self.single: list[Rule] = [r for r in patterns if r.receivers is not None]
        self.test: Any = None  # re2's RE2 objects, called directly (no per-match wrapper)
        self.combined: Any = None
        self.low, self.high = b"", b"\xff" * 8  # every match lies between them
        self.slot_of: dict[int, int] = {}  # group number of a rule's wrapper group -> slot
        self.captures: list[list[tuple[int, str]]] = []  # per slot: (group number, name)
        folded = [r for r in patterns if r.receivers is None]
        if not folded:
            return
        tests, parts = [], []
        for slot, rule in enumerate(folded):
            source = rule.pattern.pattern  # type: ignore[union-attr]
            tests.append("(?:" + rewrite_groups(source, lambda name: "(?:") + ")")
            parts.append(f"(?P<_k{slot}>" + rewrite_groups(
                source, lambda name, s=slot: f"(?P<_g{s}_{name}>" if name else "(?:") + ")")
        try:
            test = re2.compile("|".join(tests), OPTIONS)
            combined = re2.compile("|".join(parts), OPTIONS)
        except re2.error:  # never expected; trying them one by one is always correct
            self.single = list(patterns)
            return
        index = combined.groupindex
        expected = len(folded) + sum(len(r.pattern.groupindex) for r in folded if r.pattern is not None)
        if test.groups or combined.groups != expected:  # the rewrite misread a pattern
            self.single = list(patterns)
            return
        self.folded, self.combined = folded, combined._regexp
        self.test = test._regexp if combined.groups > 4 else None  # few groups: one call is less
        with contextlib.suppress(re2.error):  # no useful bounds (a leading `.*`): keep them open
            self.low, self.high = test.possiblematchrange(16)
        self.slot_of = {index[f"_k{slot}"]: slot for slot in range(len(folded))}
        self.captures = [[(index[f"_g{slot}_{name}"], name) for name in rule.pattern.groupindex]  # type: ignore[union-attr]
                         for slot, rule in enumerate(folded)]

    def first(self, data: bytes) -> tuple[int, dict[str, str]] | None:
        """(slot, captures) of the first folded rule matching the whole UTF-8 `data`."""
        n = len(data)
        if data < self.low or data > self.high:
            return None
        if self.test is not None and self.test.Match(_BOTH, data, 0, n)[0][0] < 0:
            return None
        spans = self.combined.Match(_BOTH, data, 0, n)
        if spans[0][0] < 0:
            return None
        slot = self.slot_of[spans.index((0, n), 1)]  # the first group spanning it all: a wrapper
        return slot, {name: data[start:end].decode("utf-8", "replace")
                      for group, name in self.captures[slot]
                      for start, end in (spans[group],) if start >= 0}


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
            if group.emoji is not None and not text.isascii():
                best = group.find_emoji(text, canonical, best)
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
            if group.emoji is not None and not text.isascii():
                best = group.find_emoji(text, canonical, best)
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


def _keyword_match(exact: dict[str, list[tuple[Rule, Keyword]]],
                   first: dict[str, list[tuple[Rule, Keyword, tuple[str, ...]]]], text: str,
                   receiver: str, best: _Found | None) -> _Found | None:
    """The earliest rule (before `best`) whose keyword is the whole text (`exact`) or its first
    word(s) (`first`, the rest captured)."""
    limit = best.index if best else 1 << 62
    for rule, kw in exact.get(text, ()):
        if rule.index >= limit:
            break
        if rule.accepts(receiver):
            best, limit = _Found(rule.index, rule, Match(rule.name, kw.written)), rule.index
            break
    candidates = first.get(text.partition(" ")[0]) if first else None
    if candidates:
        words = text.split(" ")
        for rule, kw, kw_words in candidates:
            if rule.index >= limit:
                break
            n = len(kw_words)
            if tuple(words[:n]) == kw_words and rule.accepts(receiver):
                match = Match(rule.name, kw.written, {"rest": " ".join(words[n:])}, how="first_word")
                return _Found(rule.index, rule, match)
    return best
