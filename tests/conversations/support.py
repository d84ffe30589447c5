"""The issue's survey as a rules file, for the conversation tests."""

from __future__ import annotations

from pathlib import Path

RULES = """\
version: 1
rules:
  - name: optout
    keywords: [RET, IPTAL]
    match: first_word
    priority: high
    handlers:
      - reply: {text: "Listeden cikarildiniz."}
      - blacklist
  - name: hello
    keywords: [MERHABA]
    handlers:
      - reply: {text: "Merhaba!"}
conversations:
  nps-2026:
    start: [ANKET, SURVEY]
    expires: 24h
    fuzzy: 1
    questions:
      - id: score
        ask: "Bizi 1 (kotu) ile 5 (cok iyi) arasinda puanlar misiniz?"
        choices: ["1", "2", "3", "4", "5"]
        aliases: {"5": ["bes", "👍"], "1": ["bir", "👎"]}
        retry: "Lutfen 1 ile 5 arasinda bir sayi yazin."
      - id: reason
        ask: "Kisaca nedenini yazar misiniz?"
        text: true
      - id: callback
        ask: "Sizi arayalim mi? EVET / HAYIR"
        choices: [EVET, HAYIR]
    done: "Tesekkurler, yanitiniz kaydedildi."
    examples:
      - say: [ANKET, "5", "hizli teslimat", evet]
        answers: {score: "5", reason: "hizli teslimat", callback: EVET}
"""

ASK1 = "Bizi 1 (kotu) ile 5 (cok iyi) arasinda puanlar misiniz?"
ASK2 = "Kisaca nedenini yazar misiniz?"
ASK3 = "Sizi arayalim mi? EVET / HAYIR"
RETRY1 = "Lutfen 1 ile 5 arasinda bir sayi yazin."
DONE = "Tesekkurler, yanitiniz kaydedildi."


def write_rules(folder: Path, text: str = RULES) -> Path:
    path = folder / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path
