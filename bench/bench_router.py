"""Routing throughput against rule-set size, with the naive baseline measured in the same run.

    python bench/bench_router.py [--texts 100000] [--naive-texts 2000]

Builds the shipped rules plus 10, 1,000 and 10,000 generated keyword rules (a tenth of them
first_word, a twentieth fuzzy) and 50 pattern rules, then routes one realistic mixed stream of raw
texts (prefixes, Turkish letters, punctuation, typos, misses) through `Router.route` on one core.
The naive baseline normalizes, then tries every rule in file order with its own regex.
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from pathlib import Path

import yaml

from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router

SYLLABLES = ["ka", "ra", "me", "sı", "tü", "ğa", "li", "on", "şe", "pa", "ko", "da", "ür", "çi", "ye"]
FILLER = ["Merhaba", "bugün", "kampanya", "hakkında", "bilgi", "alabilir", "miyim", "teşekkürler",
          "lütfen", "arayın", "fiyat", "nedir", "Tamam", "olur", "İyi", "günler"]


def keyword(rng: random.Random, i: int) -> str:
    word = "".join(rng.choice(SYLLABLES) for _ in range(3)).upper()
    return f"{word}{i}"


def build_rules(n_keyword_rules: int, folder: Path, rng: random.Random) -> tuple[Path, list[str]]:
    shipped = yaml.safe_load(Path("rules/main.yaml").read_text(encoding="utf-8"))
    words = []
    for i in range(n_keyword_rules):
        kw = keyword(rng, i)
        words.append(kw)
        rule = {"name": f"kw{i}", "keywords": [kw], "handlers": ["log"]}
        if i % 10 == 3:
            rule["match"] = "first_word"
        if i % 20 == 7:
            rule["fuzzy"] = 1
        shipped["rules"].append(rule)
    for i in range(50):
        shipped["rules"].append({"name": f"pat{i}", "handlers": ["log"],
                                 "pattern": rf"(?:kod{i}|code{i}) (?P<n>\d{{4,8}})"})
    path = folder / f"rules-{n_keyword_rules}.yaml"
    path.write_text(yaml.safe_dump(shipped, allow_unicode=True), encoding="utf-8")
    return path, words


def stream(rng: random.Random, words: list[str], n: int) -> list[str]:
    optouts = ["ILT AHKTEST RET", "RET", "ret.", "İptal", "IPTAL", "ıptal!", "STOP", "Stop all",
               "İPTL", "istemiyorum", "ILT RET"]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            out.append(rng.choice(optouts))
        elif r < 0.35:
            out.append(f"{rng.choice(['ANKET', 'Anket:', 'survey'])} {rng.choice('ABCabd')}")
        elif r < 0.45:
            out.append(f"{rng.choice(['REZ', 'Rez.', 'REZERVASYON'])} {rng.randrange(10**6):06d}")
        elif r < 0.70:
            w = rng.choice(words)
            out.append(rng.choice([w, w.lower() + "!", f"ILT {w}", f"{w} lütfen"]))
        elif r < 0.75:
            w = rng.choice(words)
            i = rng.randrange(len(w))
            out.append(w[:i] + w[i + 1:])  # a typo: one letter dropped
        else:
            out.append(" ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 8))) + rng.choice(".?!😀"))
    return out


class NaiveRouter:
    """The obvious implementation: one Python regex per rule, tried in file order (Python's `re`,
    as keyrouter used before RE2, so the baseline stays comparable across versions)."""

    def __init__(self, router: Router) -> None:
        self.normalize = router.normalizer
        self.rules = []
        for rule in router.rules.rules:
            if rule.pattern is not None:
                regex = re.compile(rule.pattern.pattern)
            else:
                alts = "|".join(re.escape(k.normalized) for k in rule.keywords)
                tail = r"(?: (?P<rest>.*))?" if rule.match == "first_word" else ""
                regex = re.compile(f"(?:{alts}){tail}")
            self.rules.append((rule.name, regex))

    def route(self, text: str) -> str | None:
        normalized = self.normalize(text)
        for name, regex in self.rules:
            if regex.fullmatch(normalized):
                return name
        return None


def rate(route, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        route(text)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--naive-texts", type=int, default=2_000)
    args = parser.parse_args()
    rng = random.Random(2026)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10, 1_000, 10_000):
            path, words = build_rules(n, Path(tmp), rng)
            router = Router(load_rules(path))
            texts = stream(random.Random(7), words, args.texts)
            rate(router.route, texts[:2000])  # warm the per-character tables
            fast = max(rate(router.route, texts) for _ in range(3))
            naive_router = NaiveRouter(router)
            naive = rate(naive_router.route, texts[: args.naive_texts])
            misses = sum(router.route(t).rule is None for t in texts[:10_000]) / 100
            rows.append((n, len(router.rules.rules), fast, naive, misses))
    base = rows[0][2]
    header = ("keyword rules", "rules", "routed/s", "vs 10", "naive/s", "speedup", "misses")
    print("{:>13} {:>6} {:>10} {:>6} {:>9} {:>8} {:>7}".format(*header))
    for n, total, fast, naive, misses in rows:
        print(f"{n:>13,} {total:>6,} {fast:>10,.0f} {fast / base:>6.2f} {naive:>9,.0f} "
              f"{fast / naive:>7.0f}x {misses:>6.1f}%")


if __name__ == "__main__":
    main()
