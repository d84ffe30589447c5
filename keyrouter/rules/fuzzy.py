"""Damerau (optimal string alignment) distance and a deletion-neighbourhood index.

The index is SymSpell's idea: a keyword within distance k of a text shares with it a string
reachable by at most k deletions from each side.  Lookups cost a few dict probes per deletion
variant of the text, whatever the number of keywords.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def deletions(word: str, k: int) -> set[str]:
    """`word` and every string made by deleting up to `k` characters from it."""
    out, frontier = {word}, {word}
    for _ in range(k):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


def _within_one(a: str, b: str) -> int:
    """distance(a, b, 1) by slicing, which compares in C: the common case of `fuzzy: 1`."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    i = 0
    while i < len(b) and a[i] == b[i]:
        i += 1
    if len(a) != len(b):
        return 1 if a[i + 1 :] == b[i:] else 2
    if a[i + 1 :] == b[i + 1 :]:
        return 1  # substitution
    swapped = i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]
    return 1 if swapped else 2


def distance(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance (insert, delete, substitute, swap of neighbours);
    returns limit + 1 as soon as the distance is known to exceed `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    if limit == 1:
        return _within_one(a, b)
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1] if prev[-1] <= limit else limit + 1


class DeletionIndex(Generic[T]):
    """Maps strings to items; `near(text)` yields (item, distance) within each item's own k."""

    def __init__(self) -> None:
        self._index: dict[str, list[tuple[str, int, T]]] = {}
        self.max_k = 0
        self.max_len = 0
        self.spaces = False  # no key has a space: a text with one cannot be near any key

    def add(self, key: str, k: int, item: T) -> None:
        for variant in deletions(key, k):
            self._index.setdefault(variant, []).append((key, k, item))
        self.max_k = max(self.max_k, k)
        self.max_len = max(self.max_len, len(key))
        self.spaces = self.spaces or " " in key

    def __bool__(self) -> bool:
        return bool(self._index)

    def near(self, text: str) -> Iterator[tuple[T, int]]:
        if not self._index or len(text) > self.max_len + self.max_k:
            return
        if not self.spaces and text.count(" ") > self.max_k:
            return
        seen: set[int] = set()
        for variant in deletions(text, self.max_k):
            for key, k, item in self._index.get(variant, ()):
                if id(item) in seen:
                    continue
                d = distance(text, key, k)
                if d <= k:
                    seen.add(id(item))
                    yield item, d
