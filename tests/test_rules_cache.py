"""The compiled-rules cache: a hit routes as a fresh build does; any change, damage, other format
or version, or a file someone else could have written means a full load, never other rules."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from conversations.support import RULES as CONVERSATION_RULES

from keyrouter.conversations.checks import check_all
from keyrouter.rules import cache, registry
from keyrouter.rules.cache import CacheMiss, cache_file, load_rules_cached, rules_key
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError, RuleSet
from keyrouter.rules.router import Router
from keyrouter.settings import DEFAULT_MAX_BYTES, Settings, cache_folder, rules_cache_dir

SHIPPED = Path(__file__).resolve().parent.parent / "rules" / "main.yaml"
TEXTS = ["ILT AHKTEST RET", "RET", "iptal!", "İPTL", "ANKET A", "Rez. 123456", "REZ 12",
         "KW17", "kw3 devamı var", "KW40X", "kod7 1234", "code7 99999", "merhaba", "😀", ""]


def generated(n: int) -> str:
    """Keyword rules (some first_word, some fuzzy, some for one receiver) and a few patterns."""
    lines = []
    for i in range(n):
        lines.append(f"  - name: kw{i}\n    keywords: [KW{i}, KW{i}X]\n    handlers: [log]")
        if i % 10 == 3:
            lines.append("    match: first_word")
        if i % 20 == 7:
            lines.append("    fuzzy: 1")
        if i % 50 == 9:
            lines.append("    receivers: ['08501234567']")
    for i in range(10):
        lines.append(f"  - name: pat{i}\n    pattern: '(?:kod{i}|code{i}) (?P<n>\\d{{4,8}})'\n"
                     "    handlers: [log]")
    return "version: 1\nrules:\n" + "\n".join(lines) + "\n"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copy(SHIPPED, folder / "main.yaml")
    (folder / "more.yaml").write_text(generated(600), encoding="utf-8")  # > one validation chunk
    return folder


def routes(rules: RuleSet) -> list[Any]:
    router = Router(rules)
    out = []
    for text in TEXTS:
        for receiver in (None, "08501234567"):
            got = router.route(text, receiver)
            out.append((got.normalized, got.match, got.rule.name if got.rule else None,
                        [(h.name, dict(h.params), h.identity, h.timeout) for h in got.handlers]))
    return out


def test_a_hit_routes_as_a_fresh_build_and_reads_no_rules_file(
        rules_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "cache"
    fresh = load_rules(rules_dir)
    first = load_rules_cached(rules_dir, cache_dir=where)
    assert cache_file(where, rules_dir).exists()

    def no_full_load(*args: Any, **kwargs: Any) -> RuleSet:
        raise AssertionError("a hit must not load the files")

    monkeypatch.setattr(cache, "load_rules", no_full_load)
    hit = load_rules_cached(rules_dir, cache_dir=where)
    assert routes(hit) == routes(first) == routes(fresh)
    assert [r.name for r in hit.rules] == [r.name for r in fresh.rules]
    assert [(str(p), p.severity) for p in hit.warnings] == [(str(p), p.severity) for p in fresh.warnings]
    assert [r.where for r in hit.rules] == [r.where for r in fresh.rules]
    assert hit.default == fresh.default


def test_a_hit_keeps_conversations_and_their_examples_still_hold(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(CONVERSATION_RULES, encoding="utf-8")
    fresh = load_rules(path)
    load_rules_cached(path, cache_dir=tmp_path / "c")
    hit = cache.read(cache_file(tmp_path / "c", path), rules_key(path, DEFAULT_MAX_BYTES) or "")
    assert [c.id for c in hit.conversations] == [c.id for c in fresh.conversations] == ["nps-2026"]
    assert hit.conversations[0].questions[0].choose("bes", hit.conversations[0].normalizer,
                                                    hit.conversations[0].emoji) == "5"
    assert check_all(Router(hit)) == check_all(Router(fresh))
    assert check_all(Router(hit))[0] == []


def test_the_file_is_the_owners_alone(rules_dir: Path, tmp_path: Path) -> None:
    where = tmp_path / "cache"
    load_rules_cached(rules_dir, cache_dir=where)
    assert cache_file(where, rules_dir).stat().st_mode & 0o777 == 0o600
    assert where.stat().st_mode & 0o077 == 0
    assert not [p for p in where.iterdir() if p.name.endswith(".tmp")]


def test_a_changed_file_misses_and_replaces_the_entry(rules_dir: Path, tmp_path: Path) -> None:
    where = tmp_path / "cache"
    before = load_rules_cached(rules_dir, cache_dir=where)
    assert Router(before).route("KW5").rule is not None
    more = rules_dir / "more.yaml"
    more.write_text(more.read_text(encoding="utf-8").replace("KW5, KW5X", "YENI5, KW5X"),
                    encoding="utf-8")
    after = load_rules_cached(rules_dir, cache_dir=where)
    assert Router(after).route("KW5").rule is None
    assert Router(after).route("YENI5").rule.name == "kw5"  # type: ignore[union-attr]
    assert list(where.iterdir()) == [cache_file(where, rules_dir)]  # one entry per rules path
    again = cache.read(cache_file(where, rules_dir), rules_key(rules_dir, DEFAULT_MAX_BYTES) or "")
    assert Router(again).route("YENI5").rule.name == "kw5"  # type: ignore[union-attr]


def test_a_new_file_in_the_folder_misses(rules_dir: Path, tmp_path: Path) -> None:
    load_rules_cached(rules_dir, cache_dir=tmp_path)
    (rules_dir / "zz.yaml").write_text(
        "version: 1\nrules:\n  - name: late\n    keywords: [GEC]\n    handlers: [log]\n",
        encoding="utf-8")
    assert Router(load_rules_cached(rules_dir, cache_dir=tmp_path)).route("gec").rule is not None


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "garbage"])
def test_a_damaged_file_falls_back_to_a_full_load(rules_dir: Path, tmp_path: Path,
                                                  damage: str) -> None:
    load_rules_cached(rules_dir, cache_dir=tmp_path)
    file = cache_file(tmp_path, rules_dir)
    data = file.read_bytes()
    file.write_bytes({"truncated": data[: len(data) // 2],
                      "flipped": data[:-100] + bytes([data[-100] ^ 1]) + data[-99:],
                      "empty": b"",
                      "garbage": b"\x80\x05not a cache at all"}[damage])
    key = rules_key(rules_dir, DEFAULT_MAX_BYTES) or ""
    with pytest.raises(CacheMiss):
        cache.read(file, key)
    assert routes(load_rules_cached(rules_dir, cache_dir=tmp_path)) == routes(load_rules(rules_dir))
    cache.read(file, key)  # the full load wrote a good entry again


def test_another_format_or_version_is_ignored(rules_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    load_rules_cached(rules_dir, cache_dir=tmp_path)
    file = cache_file(tmp_path, rules_dir)
    key = rules_key(rules_dir, DEFAULT_MAX_BYTES) or ""
    cache.read(file, key)
    monkeypatch.setattr(cache, "FORMAT", cache.FORMAT + 1)
    with pytest.raises(CacheMiss, match="another format"):
        cache.read(file, key)
    monkeypatch.undo()
    monkeypatch.setattr(cache, "version", lambda: "99.0")
    assert rules_key(rules_dir, DEFAULT_MAX_BYTES) != key  # another version: another key


@pytest.mark.parametrize("callable_", [os.getpid, load_rules], ids=["os", "keyrouter"])
def test_a_pickle_naming_other_code_is_refused(rules_dir: Path, tmp_path: Path,
                                               callable_: Any) -> None:
    file = cache_file(tmp_path, rules_dir)
    key = rules_key(rules_dir, DEFAULT_MAX_BYTES) or ""
    cache.write(file, key, load_rules(rules_dir))
    payload = pickle.dumps(callable_)  # a valid header and digest around a callable
    digest = cache.hashlib.sha256(payload).hexdigest().encode()
    file.write_bytes(cache.MAGIC + f"{cache.FORMAT}\n{key}\n".encode() + digest + b"\n" + payload)
    with pytest.raises(CacheMiss, match=r"names (posix|os|keyrouter\.rules\.loader)\.(getpid|load_rules)"):
        cache.read(file, key)


def test_a_folder_others_can_write_is_not_trusted(rules_dir: Path, tmp_path: Path) -> None:
    where = tmp_path / "shared"
    load_rules_cached(rules_dir, cache_dir=where)
    where.chmod(0o777)
    try:
        with pytest.raises(CacheMiss, match="not trusted"):
            cache.read(cache_file(where, rules_dir), rules_key(rules_dir, DEFAULT_MAX_BYTES) or "")
        assert routes(load_rules_cached(rules_dir, cache_dir=where)) == routes(load_rules(rules_dir))
    finally:
        where.chmod(0o700)


def test_a_handler_that_no_longer_resolves_gets_the_full_loads_error(
        rules_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (rules_dir / "zz.yaml").write_text(
        "version: 1\nrules:\n  - name: ext\n    keywords: [DIS]\n"
        "    handlers: ['keyrouter.handlers.log:handle']\n", encoding="utf-8")
    load_rules_cached(rules_dir, cache_dir=tmp_path)
    real = registry.problem
    monkeypatch.setattr(registry, "problem", lambda name, load=True: (
        "cannot import it" if name == "keyrouter.handlers.log:handle" else real(name, load=load)))
    with pytest.raises(RulesError, match=r"zz\.yaml:5: cannot import it"):
        load_rules_cached(rules_dir, cache_dir=tmp_path)


def test_off_uses_no_cache_and_errors_are_the_full_loads(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - name: x\n    keywords: [A]\n", encoding="utf-8")
    with pytest.raises(RulesError, match=r"bad\.yaml:3: missing required key 'handlers'"):
        load_rules_cached(bad, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_an_unwritable_folder_still_loads(rules_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    assert routes(load_rules_cached(rules_dir, cache_dir=blocker / "cache")) == \
        routes(load_rules(rules_dir))


def test_the_setting_names_the_folder() -> None:
    assert cache_folder("off") is None
    assert cache_folder("auto", {"XDG_CACHE_HOME": "/x"}) == Path("/x/keyrouter")
    assert cache_folder("/var/cache/kr") == Path("/var/cache/kr")
    assert rules_cache_dir({"KEYROUTER_RULES_CACHE": "off"}) is None
    assert Settings.from_env({"KEYROUTER_RULES_CACHE": "/c"}).rules_cache_dir() == Path("/c")
    assert Settings.from_env({}).rules_cache == "auto"


def test_a_large_file_reports_a_bad_rule_at_its_line(tmp_path: Path) -> None:
    text = generated(1200).replace("  - name: kw1100\n    keywords: [KW1100, KW1100X]\n",
                                   "  - name: kw1100\n    keyword: [KW1100, KW1100X]\n")
    path = tmp_path / "big.yaml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("    keyword: [KW1100, KW1100X]") + 1
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    shown = [str(p) for p in caught.value.problems]
    assert [f"{path}:{line}: unknown key 'keyword' in a rule (did you mean 'keywords'?)"] == shown
