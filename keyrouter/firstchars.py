"""Which characters can a regex match start with?  Lets the router skip patterns that cannot
match a text without running them.  None means "could be anything": always safe."""

from __future__ import annotations

import re
from typing import Any

try:  # the parser is private; if it ever changes shape, every pattern is simply "anything"
    from re import _constants as c
    from re import _parser
except ImportError:  # pragma: no cover
    _parser = None  # type: ignore[assignment]

_MAX_RANGE = 64


def first_chars(pattern: re.Pattern[str]) -> frozenset[str] | None:
    if _parser is None or pattern.flags & re.IGNORECASE:
        return None
    try:
        return _first(list(_parser.parse(pattern.pattern)))
    except Exception:
        return None


def _first(items: list[Any]) -> frozenset[str] | None:
    if not items:
        return None
    op, arg = items[0]
    if op is c.LITERAL:
        return frozenset(chr(arg))
    if op is c.SUBPATTERN:
        _, add_flags, del_flags, sub = arg
        return None if add_flags or del_flags else _first(list(sub))
    if op is c.BRANCH:
        out: set[str] = set()
        for branch in arg[1]:
            got = _first(list(branch))
            if got is None:
                return None
            out |= got
        return frozenset(out)
    if op in (c.MAX_REPEAT, c.MIN_REPEAT):
        low, _, sub = arg
        return _first(list(sub)) if low >= 1 else None
    if op is c.IN:
        out = set()
        for kind, value in arg:
            if kind is c.LITERAL:
                out.add(chr(value))
            elif kind is c.RANGE and value[1] - value[0] <= _MAX_RANGE:
                out.update(chr(x) for x in range(value[0], value[1] + 1))
            else:
                return None
        return frozenset(out)
    return None
