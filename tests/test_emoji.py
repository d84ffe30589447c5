"""Emoji keywords: whole tokens, skin tones and variation selectors folded, under their rule's
`match`; every other rule still sees emoji as spaces (docs/conversations.md, "Emoji")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrouter.rules.emoji import EmojiNormalizer, fold, has_emoji
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError
from keyrouter.rules.normalize import Normalizer
from keyrouter.rules.router import Router

RULES = """
    version: 1
    normalize: {strip_prefixes: [ILT]}
    rules:
      - {name: optout, keywords: [RET], match: first_word, priority: high, handlers: [log]}
      - {name: like, keywords: ["👍", "❤️", "TAMAM ✅"], handlers: [log]}
      - {name: flag, keywords: ["🇹🇷"], match: first_word, handlers: [log]}
      - {name: evet, keywords: [EVET], handlers: [log]}
"""


@pytest.fixture
def router(write_rules) -> Router:
    return Router(load_rules(write_rules(RULES)))


@pytest.mark.parametrize("text", ["👍", "👍🏽", "👍🏿", " 👍🏻 ", "ILT 👍", "👍\ufe0f", "❤", "❤️",
                                  "tamam ✅", "Tamam✅!"])
def test_an_emoji_keyword_matches_with_modifiers_folded(router: Router, text: str) -> None:
    route = router.route(text)
    assert route.rule is not None and route.rule.name == "like", text


@pytest.mark.parametrize("text", ["👍👍", "👍 evet", "evet 👍", "👎", "ok 👍", "❤ 👍"])
def test_an_exact_emoji_keyword_is_the_whole_text(router: Router, text: str) -> None:
    route = router.route(text)
    assert route.rule is None or route.rule.name != "like", text


def test_first_word_emoji_keeps_the_rest(router: Router) -> None:
    route = router.route("🇹🇷 harika bir ülke")
    assert route.rule is not None and route.rule.name == "flag"
    assert route.match is not None and route.match.captures == {"rest": "harika bir ulke"}


def test_other_rules_still_see_emoji_as_spaces(router: Router) -> None:
    for text in ("RET 👍", "RET👍🏽", "ILT RET ❤️"):
        route = router.route(text)
        assert route.rule is not None and route.rule.name == "optout", text
    route = router.route("EVET 🙏")
    assert route.rule is not None and route.rule.name == "evet"


def test_an_emoji_keyword_claimed_twice_is_a_shadowing_error(write_rules) -> None:
    path = write_rules("""
        version: 1
        rules:
          - {name: a, keywords: ["👍"], handlers: [log]}
          - {name: b, keywords: ["👍🏽"], handlers: [log]}
    """)
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert f"{path}:4: keyword '👍🏽' of rule 'b' can never match: rule 'a' claims it first" \
        in str(caught.value)


def test_the_emoji_normalizer() -> None:
    emoji = EmojiNormalizer(Normalizer())
    assert emoji("Evet 👍🏽!") == "evet 👍"
    assert emoji("👨‍👩‍👧") == "👨 👩 👧"  # a joined family: its people, each a token
    assert emoji("1️⃣") == "1"
    assert fold("👍🏽\ufe0f") == "👍"
    assert has_emoji("ok 👍") and not has_emoji("İptal!") and not has_emoji("ok")


@given(st.text(max_size=40))
def test_the_emoji_form_is_idempotent_and_equals_the_ordinary_without_emoji(text: str) -> None:
    emoji, plain = EmojiNormalizer(Normalizer()), Normalizer()
    once = emoji(text)
    assert emoji(once) == once
    if not has_emoji(text):
        assert once == plain(text)
