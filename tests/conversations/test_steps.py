"""One message applied to a record (pure): re-sends varied only inside the provider's
duplicate window, expiry by the last SMS, answers matched like keywords."""

from __future__ import annotations

from pathlib import Path

from keyrouter.conversations import steps
from keyrouter.rules.conversations import Conversation
from keyrouter.rules.loader import load_rules

from .support import ASK1, ASK2, write_rules


def nps(tmp_path: Path) -> Conversation:
    return load_rules(write_rules(tmp_path)).conversations[0]


def test_a_resend_is_varied_only_within_ten_minutes(tmp_path: Path) -> None:
    conv = nps(tmp_path)
    record = steps.start(conv, "+905321112233", "m1", 1000.0)
    assert record.reply == ASK1
    again = steps.resend(conv, record, "m2", 1300.0)
    assert (again.reply, again.message_id, again.step) == (f"{ASK1} (2)", "m2", 0)
    third = steps.resend(conv, again, "m3", 1400.0)
    assert third.reply == f"{ASK1} (3)"
    later = steps.resend(conv, third, "m4", 1400.0 + steps.DUPLICATE_WINDOW)
    assert later.reply == ASK1  # ten minutes on, the provider takes the same text again


def test_expiry_counts_from_the_last_sms(tmp_path: Path) -> None:
    conv = nps(tmp_path)
    record = steps.answer(conv, steps.start(conv, "x", "m1", 0.0), "5", "m2", 20 * 3600.0)
    assert record.reply == ASK2 and record.last_at == 20 * 3600.0
    assert record.is_open(conv, 43 * 3600.0)  # 24h after the first SMS, 23h after the last
    assert not record.is_open(conv, 44 * 3600.0)
    assert record.final_status(conv, 44 * 3600.0) == "expired"
    assert not record.is_open(None, 21 * 3600.0)  # a conversation no longer in the rules


def test_choices_aliases_emoji_and_typos(tmp_path: Path) -> None:
    conv = nps(tmp_path)
    score, _, callback = conv.questions
    choose = [(q, t) for q, t in ((score, "Beş!"), (score, "👍🏼"), (score, " 3 "), (score, "👎"),
                                  (callback, "evte"), (callback, "Hayır."), (callback, "HYIR"))]
    got = [q.choose(text, conv.normalizer, conv.emoji) for q, text in choose]
    assert got == ["5", "5", "3", "1", "EVET", "HAYIR", "HAYIR"]
    for text in ("6", "5 5", "👍👍", "evet hayir", "", "👍👎"):
        assert score.choose(text, conv.normalizer, conv.emoji) is None, text
