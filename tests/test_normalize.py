import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrouter.rules.normalize import Normalizer, NormalizeSettings

DEFAULT = Normalizer()
PREFIXED = Normalizer(NormalizeSettings(strip_prefixes=("ILT", "AHKTEST")))


@pytest.mark.parametrize("text", ["İPTAL", "IPTAL", "ıptal", "iptal", "İptal", "Iptal", "I\u0307PTAL"])
def test_turkish_iptal_spellings_meet(text: str) -> None:
    assert DEFAULT(text) == "iptal"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ŞİKAYET", "sikayet"),
        ("ÇĞÖÜ çğöü", "cgou cgou"),
        ("e\u0301", "e"),  # combining accent composed then folded
        ("ﬁ", "fi"),  # NFKC ligature
        ("ＲＥＴ", "ret"),  # NFKC full-width
        ("R\u200bE\u200dT", "ret"),  # zero-width space / joiner
        ("\u202eRET\u202c", "ret"),  # bidi override
        ("RE\x00T", "ret"),  # NUL
        ("RET\nIPTAL", "ret iptal"),  # a line break separates words
        ("ret.", "ret"),
        ("¡¡Stop, all!!", "stop all"),
        ("😀 RET 👍🏽", "ret"),  # emoji and skin-tone modifiers are symbols
        ("  a \t  b  ", "a b"),
        ("", ""),
        ("...", ""),
    ],
)
def test_default_steps(text: str, expected: str) -> None:
    assert DEFAULT(text) == expected


def test_turkish_lowercase_without_folding_keeps_dotless_i() -> None:
    n = Normalizer(NormalizeSettings(fold_accents=False))
    assert n("IŞIK") == "ışık"
    assert n("İSTANBUL") == "istanbul"


def test_locale_none_lowercases_i_to_i() -> None:
    n = Normalizer(NormalizeSettings(locale="none", fold_accents=False))
    assert n("IPTAL") == "iptal"


def test_punctuation_kept_when_disabled() -> None:
    n = Normalizer(NormalizeSettings(strip_punctuation=False))
    assert n("ret.") == "ret."
    assert n("a  ,  b") == "a , b"


def test_folding_disabled_keeps_accents() -> None:
    n = Normalizer(NormalizeSettings(fold_accents=False))
    assert n("Şikayet") == "şikayet"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ILT AHKTEST RET", "ret"),
        ("ilt ilt ahktest Ret", "ret"),  # repeatedly
        ("ILT, AHKTEST: ret!", "ret"),  # after punctuation is gone
        ("AHKTESTRET", "ahktestret"),  # whole words only
        ("RET ILT", "ret ilt"),  # only from the start
        ("ILT", ""),
    ],
)
def test_prefixes_stripped_repeatedly_from_the_start(text: str, expected: str) -> None:
    assert PREFIXED(text) == expected


def test_multi_word_prefix_and_longest_first() -> None:
    n = Normalizer(NormalizeSettings(strip_prefixes=("ABC", "ABC DEF")))
    assert n("abc def ret") == "ret"
    assert n("abc ret") == "ret"


def test_steps_are_in_spec_order_and_end_at_the_result() -> None:
    steps = PREFIXED.steps("ILT AHKTEST İPTAL!!")
    names = [name for name, _ in steps]
    assert names == [
        "unicode NFKC, controls removed",
        "lowercase (tr)",
        "accents folded",
        "punctuation and symbols to spaces",
        "whitespace collapsed",
        "prefixes stripped",
    ]
    assert steps[1][1] == "ılt ahktest iptal!!"  # Turkish lowercasing before folding
    assert steps[-1][1] == "iptal"


SETTINGS = [
    NormalizeSettings(),
    NormalizeSettings(fold_accents=False),
    NormalizeSettings(locale="none"),
    NormalizeSettings(locale="none", fold_accents=False, strip_punctuation=False),
    NormalizeSettings(strip_prefixes=("ILT", "AHKTEST", "a b")),
]


@settings(max_examples=400)
@given(st.text(), st.sampled_from(SETTINGS))
def test_properties(text: str, config: NormalizeSettings) -> None:
    n = Normalizer(config)
    out = n(text)  # never raises
    assert n(out) == out  # idempotent
    assert not any(c.isupper() for c in out)
    assert "  " not in out
    assert out == out.strip()


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(codec="ascii")), st.sampled_from(SETTINGS[:4]))
def test_ascii_fast_path_agrees_with_the_general_path(text: str, config: NormalizeSettings) -> None:
    n = Normalizer(config)
    general = n(text + "ğ")  # a non-ASCII letter forces the per-character table path
    assert general.endswith("g") or general.endswith("ğ")
    assert n(text) == general[:-1].rstrip()


@given(st.text())
def test_steps_end_where_normalize_ends(text: str) -> None:
    assert PREFIXED.steps(text)[-1][1] == PREFIXED(text)
