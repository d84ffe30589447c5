"""Text -> normalized text: the six steps of docs/rules.md (Normalization), in order.  Pure: no I/O.

The same `Normalizer` is applied to message texts and to rule keywords, so `İPTAL`, `IPTAL`,
`ıptal` and `iptal` meet.  Steps 1-4 act character by character, so `Normalizer` folds them into
one translation table, filled lazily per character (as a fixed point, which makes normalizing
idempotent) and, for ASCII texts, a 256-byte table: the hot path is one `translate` and one
`split`.  `steps()` runs the stages one by one for `keyrouter explain`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

Locale = Literal["tr", "none"]
_WHITESPACE_CONTROLS = frozenset("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029")
# Letters with no decomposition that readers still see as an accented Latin letter.
_FOLD_EXTRA = str.maketrans({"ı": "i", "ø": "o", "ł": "l", "đ": "d", "ħ": "h", "ß": "ss",
                             "æ": "ae", "œ": "oe"})


@dataclass(frozen=True)
class NormalizeSettings:
    """The `normalize:` block of a rules file (defaults as in docs/rules.md)."""

    locale: Locale = "tr"
    fold_accents: bool = True
    strip_punctuation: bool = True
    strip_prefixes: tuple[str, ...] = ()


def _remove_controls(text: str) -> str:
    """Step 1 after NFKC: controls and format characters go; line breaks become spaces (a line
    break separates words, deleting it would join them)."""
    return "".join(
        " " if c in _WHITESPACE_CONTROLS else c
        for c in text
        if c in _WHITESPACE_CONTROLS or unicodedata.category(c) not in ("Cc", "Cf")
    )


def _lower(text: str, locale: Locale) -> str:
    if locale == "tr":
        text = text.replace("I", "ı").replace("İ", "i")
    return text.lower()


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.translate(_FOLD_EXTRA)


def _punctuation_to_spaces(text: str) -> str:
    return "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)


class _CharTable(dict[int, str]):
    """str.translate table computed per character on first sight (translate calls __missing__)."""

    def __init__(self, stage: Callable[[str], str]) -> None:
        super().__init__()
        self._stage = stage

    def __missing__(self, cp: int) -> str:
        out, seen = chr(cp), set()
        while out not in seen:  # a fixed point: normalizing the output changes nothing
            seen.add(out)
            out = self._stage(out)
        self[cp] = out
        return out


class Normalizer:
    """A compiled `NormalizeSettings`: build once, call per text."""

    def __init__(self, settings: NormalizeSettings | None = None) -> None:
        self.settings = settings or NormalizeSettings()
        self._table = _CharTable(self._chars)
        self._bytes_table, self._bytes_delete = self._build_bytes_table()
        self._prefixes: list[tuple[str, ...]] = []
        if self.settings.strip_prefixes:
            bare = Normalizer(replace(self.settings, strip_prefixes=()))
            found = {tuple(bare(p).split()) for p in self.settings.strip_prefixes} - {()}
            self._prefixes = sorted(found, key=len, reverse=True)
        self._prefix_heads = frozenset(p[0] for p in self._prefixes)

    def __repr__(self) -> str:
        return f"Normalizer({self.settings!r})"

    def _stages(self) -> list[tuple[str, Callable[[str], str]]]:
        s = self.settings
        stages: list[tuple[str, Callable[[str], str]]] = [
            ("unicode NFKC, controls removed",
             lambda t: _remove_controls(unicodedata.normalize("NFKC", t))),
            (f"lowercase ({s.locale})", lambda t: _lower(t, s.locale)),
        ]
        if s.fold_accents:
            stages.append(("accents folded", _fold))
        if s.strip_punctuation:
            stages.append(("punctuation and symbols to spaces", _punctuation_to_spaces))
        return stages

    def _chars(self, text: str) -> str:
        for _, stage in self._stages():
            text = stage(text)
        return text

    def _build_bytes_table(self) -> tuple[bytes | None, bytes]:
        """The ASCII fast path, possible when every ASCII character maps to at most one ASCII
        character (not so for Turkish lowercasing without folding: `I` -> `ı`)."""
        table, delete = bytearray(range(256)), bytearray()
        for cp in range(128):
            out = self._table[cp]
            if out == "":
                delete.append(cp)
            elif len(out) == 1 and out.isascii():
                table[cp] = ord(out)
            else:
                return None, b""
        return bytes(table), bytes(delete)

    def __call__(self, text: str) -> str:
        if self._bytes_table is not None and text.isascii():
            data = text.encode("ascii").translate(self._bytes_table, self._bytes_delete)
            words = data.decode("ascii").split()
        else:
            out = text.translate(self._table)
            if not unicodedata.is_normalized("NFC", out):
                out = self._compose(out)
            words = out.split()
        if self._prefix_heads and words and words[0] in self._prefix_heads:
            words = self._strip_prefixes(words)
        return " ".join(words)

    def _compose(self, text: str) -> str:
        """Per-character tables cannot compose a base letter with a following combining mark;
        NFC does, and the composed letter goes through the table again."""
        for _ in range(4):
            composed = unicodedata.normalize("NFC", text).translate(self._table)
            if composed == text:
                break
            text = composed
        return text

    def _strip_prefixes(self, words: list[str]) -> list[str]:
        start, heads = 0, self._prefix_heads
        while start < len(words) and words[start] in heads:
            for prefix in self._prefixes:  # longest first
                end = start + len(prefix)
                if words[start] == prefix[0] and tuple(words[start:end]) == prefix:
                    start = end
                    break
            else:
                break
        return words[start:]

    def steps(self, text: str) -> list[tuple[str, str]]:
        """Each step with its output, in order, for `keyrouter explain`."""
        out: list[tuple[str, str]] = []
        for name, stage in self._stages():
            text = stage(text)
            out.append((name, text))
        text = " ".join(text.split())
        out.append(("whitespace collapsed", text))
        final = self(text)
        if final != text:
            out.append(("prefixes stripped" if self._prefixes else "normalized again", final))
        return out


def settings_diff(mine: NormalizeSettings, theirs: NormalizeSettings) -> str:
    """`strip_prefixes: [] here, [ACME] there` for each setting that differs."""
    def shown(value: object) -> str:
        return f"[{', '.join(value)}]" if isinstance(value, tuple) else str(value).lower()
    return ", ".join(f"{name}: {shown(getattr(mine, name))} here, {shown(getattr(theirs, name))} there"
                     for name in ("locale", "fold_accents", "strip_punctuation", "strip_prefixes")
                     if getattr(mine, name) != getattr(theirs, name))
