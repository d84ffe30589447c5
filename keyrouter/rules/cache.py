"""The compiled rules on disk, so a start or a reload of unchanged rules skips parsing them.

The cache file holds one `RuleSet` (rules/model.py), pickled, behind a header: a magic line, the
format version, the key it was written for and the SHA-256 of the payload.  The key is a hash of
every rules file's name and bytes, the rules path, the size limit, KEYROUTER_PLUGIN_PATH,
keyrouter's version and the bytes of keyrouter's own source, so any change to the rules or to
the code that compiles them misses.  A file that does not match in every part, or does not read
back, is ignored and the rules are loaded in full; the cache can only make loading faster, never
route with other rules.

What is not in the file: handler code.  Handlers are named in the rules and resolved again on
every load (a cached name that no longer imports falls back to the full load, which reports it);
RE2 programs are compiled again from their source; normalizers are rebuilt from their settings.

Unpickling runs code the file names, so the file is the worker's own: written 0600 into a
directory the worker owns and no one else may write (checked before reading and writing), and
read only through an unpickler that accepts the rule set's classes and a few plain types.
"""

from __future__ import annotations

import copyreg
import dataclasses
import gc
import hashlib
import io
import logging
import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from keyrouter.rules import patterns, plugin_path, registry, yamlpos
from keyrouter.rules.conversations import Conversation, Example, Question
from keyrouter.rules.emoji import EmojiNormalizer
from keyrouter.rules.fuzzy import DeletionIndex
from keyrouter.rules.loader import load_rules, rule_files
from keyrouter.rules.model import HandlerEntry, Keyword, Location, Problem, Rule, RuleSet
from keyrouter.rules.normalize import Normalizer, NormalizeSettings
from keyrouter.settings import rules_max_bytes

logger = logging.getLogger("keyrouter.rules.cache")

#: Bumped whenever what the file holds changes shape; a file of another format is ignored.
FORMAT = 1
MAGIC = b"keyrouter-rules-cache\n"
_PACKAGE = Path(__file__).resolve().parent.parent
#: Plain types a cache file may name (with the rules' own classes: `_ALLOWED`).
_PLAIN = {("builtins", n) for n in ("frozenset", "set", "dict", "list", "tuple", "str", "int",
                                    "float", "bool", "bytes")} | {("datetime", "timedelta")}


class CacheMiss(Exception):
    """Why a cache file is not used (logged at debug level; the rules are loaded in full)."""


def cache_file(cache_dir: Path, path: str | Path) -> Path:
    """One file per rules path: a changed rule set replaces its entry, so the folder never grows."""
    where = hashlib.sha256(str(Path(path).resolve()).encode("utf-8", "surrogatepass")).hexdigest()
    return cache_dir / f"rules-{where[:16]}.cache"


@cache
def version() -> str:
    """keyrouter's installed version (keyrouter/__init__.py imports the rules: not from there)."""
    try:
        return metadata.version("keyrouter")
    except metadata.PackageNotFoundError:
        return "unknown"


@cache
def code_digest() -> str:
    """The bytes of keyrouter's source files, read once per process: an edited checkout with an
    unchanged version number misses too."""
    digest = hashlib.sha256()
    for file in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(file.relative_to(_PACKAGE)).encode() + b"\0")
        try:
            digest.update(file.read_bytes())
        except OSError:
            digest.update(b"?")
    return digest.hexdigest()


def rules_key(path: str | Path, max_bytes: int) -> str | None:
    """What the cache is keyed by, or None when the files cannot be read within `max_bytes` (the
    full load then says why)."""
    digest = hashlib.sha256(MAGIC + f"{FORMAT}\0{version()}\0{sys.version}\0".encode())
    digest.update(code_digest().encode() + b"\0")
    digest.update(f"{Path(path).resolve()}\0{max_bytes}\0".encode("utf-8", "surrogatepass"))
    digest.update(os.environ.get(plugin_path.ENV, "").encode("utf-8", "surrogatepass") + b"\0")
    budget = max_bytes
    try:
        files = rule_files(path)
        for file in files:
            text = yamlpos.read_limited(file, budget, max_bytes)
            data = text.encode("utf-8", "surrogatepass")
            budget -= len(data)
            digest.update(file.name.encode("utf-8", "surrogatepass") + b"\0")
            digest.update(len(data).to_bytes(8, "big") + data)
    except (OSError, ValueError):  # unreadable, too large, not UTF-8
        return None
    return digest.hexdigest() if files else None


# ---------------------------------------------------------------- pickling
def _by_fields(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """Dataclasses rebuilt through their constructor.  Pickle's own route calls a Python
    `__setstate__` per slotted object (twice the time for 10,000 rules), and fills other objects
    through their `__dict__`, which leaves attribute lookups on the routing path slower than on
    objects built by `__init__`."""
    names = [f.name for f in dataclasses.fields(cls)]
    if not all(f.init for f in dataclasses.fields(cls)):  # its constructor cannot restore it
        raise TypeError(f"{cls.__name__} has fields outside __init__: give it its own reducer")
    return lambda obj: (cls, tuple(getattr(obj, name) for name in names))


_REDUCERS: dict[type, Callable[[Any], Any]] = {
    **{cls: _by_fields(cls) for cls in (Location, Keyword, HandlerEntry, Problem, Rule, RuleSet,
                                        Conversation, Question, Example)},
    # RE2 programs and normalizer tables are rebuilt from their source, never stored
    type(patterns.compile_pattern("a")): lambda regex: (patterns.compile_pattern, (regex.pattern,)),
    Normalizer: lambda normalizer: (Normalizer, (normalizer.settings,)),
}


#: Everything a cache file may name: the rule set's classes and the one function that rebuilds
#: a pattern.  Any other name (a new field's type included) is refused, and the rules load in full.
_NAMED: tuple[type | Callable[..., Any], ...] = (
    *_REDUCERS, EmojiNormalizer, DeletionIndex, NormalizeSettings, patterns.compile_pattern)
_ALLOWED = _PLAIN | {(obj.__module__, obj.__qualname__) for obj in _NAMED
                     if obj.__module__.startswith("keyrouter.")}


def dumps(rules: RuleSet) -> bytes:
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, **_REDUCERS}
    pickler.dump(rules)
    return out.getvalue()


class _Unpickler(pickle.Unpickler):
    """Only the rule set's classes and plain values: a file that names anything else (a
    function of keyrouter's included) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise CacheMiss(f"names {module}.{name}")


def loads(payload: bytes) -> RuleSet:
    enabled = gc.isenabled()
    gc.disable()  # tens of thousands of small objects: collecting while building them is waste
    try:
        rules = _Unpickler(io.BytesIO(payload)).load()
    finally:
        if enabled:
            gc.enable()
    if not isinstance(rules, RuleSet):
        raise CacheMiss(f"holds a {type(rules).__name__}")
    return rules


# ---------------------------------------------------------------- the file
def _owned(st: os.stat_result, what: str) -> None:
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise CacheMiss(f"{what} is not this user's alone (owner {st.st_uid}, mode "
                        f"{st.st_mode & 0o777:o}): not trusted")


def read(file: Path, key: str) -> RuleSet:
    """The rule set in `file` if it was written for `key` by this format; CacheMiss otherwise."""
    _owned(os.stat(file.parent), "the cache folder")
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise CacheMiss("no cache file") from None
    with os.fdopen(fd, "rb") as f:
        _owned(os.fstat(f.fileno()), "the cache file")
        data = f.read()
    header = MAGIC + f"{FORMAT}\n{key}\n".encode()
    if not data.startswith(header):
        raise CacheMiss("written by another format or for other rules")
    digest, _, payload = data[len(header):].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CacheMiss("its payload does not match its digest (truncated or damaged)")
    try:
        return loads(payload)
    except CacheMiss:
        raise
    except Exception as exc:  # anything a damaged pickle raises
        raise CacheMiss(f"does not read back: {type(exc).__name__}: {exc}") from None


def write(file: Path, key: str, rules: RuleSet) -> None:
    """Atomically: a temporary file (0600) in the same folder, renamed over the old entry."""
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _owned(os.stat(file.parent), "the cache folder")
    payload = dumps(rules)
    data = b"".join((MAGIC, f"{FORMAT}\n{key}\n".encode(),
                     hashlib.sha256(payload).hexdigest().encode(), b"\n", payload))
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".rules-", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- loading through it
def _handlers_resolve(rules: RuleSet, path: str | Path) -> bool:
    """Every handler the rules name imports now (the company's code may have changed since)."""
    plugin_path.extend(path)
    names = {entry.name for entry in rules.entries()}
    return all(registry.problem(name) is None for name in sorted(names - set(registry.BUILTINS)))


def load_rules_cached(path: str | Path, max_bytes: int | None = None, *,
                      cache_dir: Path | None) -> RuleSet:
    """`load_rules(path, max_bytes)`, through the cache in `cache_dir` (None: no cache).  Raises
    RulesError as `load_rules` does; a cache that cannot be read or written costs a full load
    and a log line, never a failure."""
    if max_bytes is None:
        max_bytes = rules_max_bytes()
    if cache_dir is None:
        return load_rules(path, max_bytes)
    key = rules_key(path, max_bytes)
    file = cache_file(cache_dir, path)
    if key is not None:
        try:
            rules = read(file, key)
        except (CacheMiss, OSError) as exc:
            logger.debug("rules cache %s not used: %s", file, exc)
        else:
            if _handlers_resolve(rules, path):
                return rules
            logger.debug("rules cache %s not used: a handler no longer resolves", file)
    rules = load_rules(path, max_bytes)
    # a file that changed while it was being read: its rules are not stored under either key
    if key is not None and rules_key(path, max_bytes) == key:
        try:
            write(file, key, rules)
        except (CacheMiss, OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
            logger.warning("rules cache %s not written (start-up and reloads read the files in "
                           "full): %s", file, exc)
    return rules
