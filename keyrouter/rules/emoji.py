"""Emoji as whole tokens, for rules and conversation answers that name an emoji (docs/conversations.md).

The ordinary normalization turns every symbol into a space, so `RET 👍` is `ret`.  An emoji
keyword or alias is compared with a second form of the text, `EmojiNormalizer`, in which each emoji
is a word of its own and everything else is normalized as usual.  Skin-tone modifiers, variation
selectors, zero-width joiners, keycap marks and tag characters are folded away, so `👍🏽`, `👍🏻` and
`👍` are one token and `❤️` is `❤`; a pair of regional indicators (a flag) stays one token.
Only texts that are not ASCII can hold an emoji, so the router pays for this form only then.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

from keyrouter.rules.normalize import Normalizer

#: Folded away before tokenizing: skin tones, variation selectors, ZWJ, keycap, tags.
_FOLDED = re.compile("[\U0001f3fb-\U0001f3ff\ufe00-\ufe0f\u200d\u20e3\U000e0020-\U000e007f]")
_RANGES = ((0x00A9, 0x00AE), (0x2000, 0x2BFF), (0x3000, 0x303F), (0x3290, 0x329F),
           (0x1F000, 0x1FAFF))


def _emoji_class() -> str:
    """A regex character class of the symbols (category So) in the ranges emoji live in."""
    spans: list[tuple[int, int]] = []
    for low, high in _RANGES:
        for cp in range(low, high + 1):
            if unicodedata.category(chr(cp)) == "So":
                if spans and spans[-1][1] == cp - 1:
                    spans[-1] = (spans[-1][0], cp)
                else:
                    spans.append((cp, cp))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in spans)


_EMOJI = re.compile(f"[\U0001f1e6-\U0001f1ff]{{2}}|[{_emoji_class()}]")


def has_emoji(text: str) -> bool:
    """Whether `text` holds at least one emoji token."""
    return not text.isascii() and _EMOJI.search(_FOLDED.sub("", text)) is not None


def fold(text: str) -> str:
    """`text` without skin tones, variation selectors and joiners: `👍🏽` -> `👍`."""
    return _FOLDED.sub("", text)


class EmojiNormalizer:
    """The ordinary normalization with each emoji kept as a word: `"Evet 👍🏽!"` -> `"evet 👍"`."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.normalizer = normalizer
        # prefixes are stripped once, from the whole text, not from each piece
        self._pieces = Normalizer(replace(normalizer.settings, strip_prefixes=()))

    def __call__(self, text: str) -> str:
        text = _FOLDED.sub("", text)
        words: list[str] = []
        start = 0
        for m in _EMOJI.finditer(text):
            piece = self._pieces(text[start:m.start()])
            if piece:
                words.extend(piece.split(" "))
            words.append(m.group())
            start = m.end()
        piece = self._pieces(text[start:])
        if piece:
            words.extend(piece.split(" "))
        if self.normalizer._prefix_heads and words and words[0] in self.normalizer._prefix_heads:
            words = self.normalizer._strip_prefixes(words)
        return " ".join(words)
