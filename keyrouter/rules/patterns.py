"""Rule patterns on Google's RE2: matching time grows linearly with the text, whatever the pattern.

A Python (backtracking) regex such as `(a+)+b` takes seconds on a 30-character SMS and freezes the
worker; RE2 runs it in microseconds.  RE2 lacks a few constructs that need backtracking
(backreferences, lookaround, possessive quantifiers, atomic groups, conditionals): `compile`
names them in one sentence, so `keyrouter check` can say what to write instead.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any

import re2

try:  # Python's parser is private; without it nothing is inferred, which is always safe
    from re import _constants as _c  # type: ignore[attr-defined]  # private: not in typeshed
    from re import _parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _parser = None

Regex = Any  # re2._Regexp: fullmatch, groupindex, pattern, like re.Pattern

#: Why RE2 refuses it, and what to write instead (matched against the pattern and RE2's error).
_TWICE = "match the text twice in a handler instead"
_NO_BACKTRACKING = "RE2 never backtracks, so write the plain form"
_WHY = (
    (re.compile(r"\\[1-9]"), "a backreference (\\1)", _TWICE),
    (re.compile(r"\(\?P=\w+\)"), "a named backreference ((?P=name))", _TWICE),
    (re.compile(r"\(\?[=!]"), "a lookahead ((?= or (?!)",
     "a pattern matches the whole text, so spell out what follows"),
    (re.compile(r"\(\?<[=!]"), "a lookbehind ((?<= or (?<!)",
     "a pattern matches the whole text, so spell out what precedes"),
    (re.compile(r"\(\?>"), "an atomic group ((?>...))", _NO_BACKTRACKING),
    (re.compile(r"(?:[*+?]|\})\+"), "a possessive quantifier (++, *+, ?+)", _NO_BACKTRACKING),
    (re.compile(r"\(\?\("), "a conditional ((?(...)...))", "split it into two rules"),
    (re.compile(r"\(\?#"), "a comment ((?#...))", "remove it, or write a YAML comment"),
    (re.compile(r"\(\?[a-zA-Z]*[xauL]"), "an inline flag RE2 lacks (it has i, m, s and U)",
     "remove it"),
    (re.compile(r"\\Z"), "\\Z", "write \\z (or nothing: a pattern always matches the whole text)"),
    (re.compile(r"\\[uUN]"), "a \\u, \\U or \\N{...} escape", "write \\x{20AC}, or the character"),
)
NESTED_WARNING = ("pattern repeats a group that itself repeats (like `(a+)+`): catastrophic in "
                  "backtracking regex engines; harmless here, RE2 matches in linear time, but "
                  "simplify it (e.g. `a+`) if the pattern is reused elsewhere")
_SYNTAX = "patterns use RE2 syntax, which matches in linear time"


class PatternProblem(ValueError):
    """A pattern RE2 cannot run; the message is one sentence for `file:line: pattern: ...`."""


def _options() -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False  # RE2 would print to stderr: `check` reports one line per problem
    return opts


OPTIONS = _options()


def compile_pattern(source: str) -> Regex:
    """The RE2 regex for a rule's pattern, or PatternProblem saying what to write instead."""
    try:
        regex = re2.compile(source, OPTIONS)
    except re2.error as exc:
        raise PatternProblem(_explain(source, exc)) from None
    except (TypeError, UnicodeEncodeError):
        raise PatternProblem(f"pattern is not valid text; {_SYNTAX}") from None
    names = [name for _, _, name in capture_groups(source) if name]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PatternProblem(f"pattern names the group '{twice[0]}' twice; give each group its "
                             "own name (named groups become captures)")
    return regex


def _explain(source: str, exc: Exception) -> str:
    reason = exc.args[0] if exc.args else exc
    reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    fragment = reason.rpartition(": ")[2]
    for text in (fragment, source):  # RE2 quotes the offending part: trust it first
        for found, what, instead in _WHY:
            if found.search(text):
                return f"pattern: {what} is not supported ({_SYNTAX}): {instead}"
    if "repetition" in reason and "size" in reason:
        return f"pattern does not compile: {reason} (RE2 allows counts up to 1000)"
    if "too large" in reason:
        return f"pattern does not compile: {reason} (simplify counted repetitions)"
    return f"pattern does not compile: {reason} (RE2 syntax: docs/rules.md, Pattern syntax)"


def capture_groups(source: str) -> Iterator[tuple[int, int, str | None]]:
    """(start, end, name or None) of every capturing group's opening `(`, `(?P<name>` or
    `(?<name>`: escapes, `\\Q...\\E` and character classes (with `[:alpha:]` inside) skipped."""
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == "\\":
            if source.startswith("\\Q", i):
                end = source.find("\\E", i + 2)
                i = n if end < 0 else end + 2
            else:
                i += 2
            continue
        if c == "[":
            i = _class_end(source, i)
            continue
        if c == "(":
            if not source.startswith("(?", i):
                yield i, i + 1, None
            else:
                m = _NAMED_OPEN.match(source, i)
                if m:
                    yield i, m.end(), m.group(1)
        i += 1


_NAMED_OPEN = re.compile(r"\(\?P?<([A-Za-z_]\w*)>")


def _class_end(source: str, i: int) -> int:
    """Index just past the character class that opens at `i` (`[]a]` and `[^]a]` hold `]`)."""
    n = len(source)
    i += 1
    if i < n and source[i] == "^":
        i += 1
    if i < n and source[i] == "]":
        i += 1
    while i < n:
        if source[i] == "\\":
            i += 2
        elif source.startswith("[:", i):
            end = source.find(":]", i + 2)
            i = n if end < 0 else end + 2
        elif source[i] == "]":
            return i + 1
        else:
            i += 1
    return n


def rewrite_groups(source: str, rename: Any) -> str:
    """`source` with each capturing group opener replaced by `rename(name)` (name None for an
    unnamed group); `rename` returns the new opener, e.g. `(?:` or `(?P<_g0_code>`."""
    out, last = [], 0
    for start, end, name in capture_groups(source):
        out.append(source[last:start])
        out.append(rename(name))
        last = end
    out.append(source[last:])
    return "".join(out)


# ---------------------------------------------------------------- what Python's parser can tell
def _parse(source: str) -> Any:
    """Python's parse tree of `source`, or None where Python would read it differently from RE2
    (POSIX classes, RE2-only escapes) or not at all."""
    if _parser is None or "[:" in source:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = _parser.parse(source)
    except Exception:
        return None
    return parsed


def first_chars(source: str) -> frozenset[str] | None:
    """Which characters can a match start with?  Lets the router skip patterns that cannot match
    a text without running them.  None means "could be anything": always safe."""
    parsed = _parse(source)
    if parsed is None or parsed.state.flags & re.IGNORECASE:
        return None
    try:
        return _first(list(parsed))
    except Exception:
        return None


_MAX_RANGE = 64


def _first(items: list[Any]) -> frozenset[str] | None:
    if not items:
        return None
    op, arg = items[0]
    if op is _c.LITERAL:
        return frozenset(chr(arg))
    if op is _c.SUBPATTERN:
        _, add_flags, del_flags, sub = arg
        return None if add_flags or del_flags else _first(list(sub))
    if op is _c.BRANCH:
        out: set[str] = set()
        for branch in arg[1]:
            got = _first(list(branch))
            if got is None:
                return None
            out |= got
        return frozenset(out)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
        low, _, sub = arg
        return _first(list(sub)) if low >= 1 else None
    if op is _c.IN:
        out = set()
        for kind, value in arg:
            if kind is _c.LITERAL:
                out.add(chr(value))
            elif kind is _c.RANGE and value[1] - value[0] <= _MAX_RANGE:
                out.update(chr(x) for x in range(value[0], value[1] + 1))
            else:
                return None
        return frozenset(out)
    return None


def nested_repetition(source: str) -> bool:
    """True for a repetition of something that itself repeats a variable-length part, such as
    `(a+)+b` or `(\\w+\\s?)*`: catastrophic in backtracking engines (harmless in RE2)."""
    parsed = _parse(source)
    return parsed is not None and _nested(list(parsed), inside=False)


def _nested(items: list[Any], inside: bool) -> bool:
    for op, arg in items:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", None)):
            low, high, sub = arg
            if (inside and low != high) or _nested(list(sub), inside or high > 1):
                return True
            continue
        children = [arg[3]] if op is _c.SUBPATTERN else arg[1] if op is _c.BRANCH else []
        if any(_nested(list(child), inside) for child in children):
            return True
    return False
