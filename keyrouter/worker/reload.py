"""Hot reload of the rules: SIGHUP, and `--watch` (a cheap mtime poll of the rules files).

A new rule set takes effect only if it passes everything `keyrouter check` checks: it loads, it
validates, and every `examples` entry routes as written.  Otherwise the worker keeps the rules it
has, logs each problem as `file:line: ...`, and counts a rejection.  The swap is
`dispatcher.use_router(router)`: messages routed before it finish under the rules they were routed
with.  Exactly-once does not depend on the rules (done markers and leases are per message id), so
two workers reloading at different moments never run an entry twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from keyrouter.conversations.checks import check_all
from keyrouter.events import NO_EVENTS, Events
from keyrouter.rules.cache import load_rules_cached
from keyrouter.rules.loader import rule_files
from keyrouter.rules.model import Problem, RulesError
from keyrouter.rules.router import Router
from keyrouter.settings import rules_cache_dir

logger = logging.getLogger("keyrouter.reload")
WATCH_PERIOD = 2.0
T = TypeVar("T")


def rules_version(path: str | Path) -> str:
    """A short hash of the rules files' names and bytes: `keyrouter_rules_info{version}`."""
    digest = hashlib.sha256()
    for file in rule_files(path):
        digest.update(file.name.encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def without_collections(build: Callable[[], T]) -> T:
    """`build()` with the cyclic garbage collector paused, then everything alive moved to its
    permanent generation (gc.freeze).  A full collection walks every object with the GIL held:
    with 10,000 rules alive that is 0.2-0.5 s in which the event loop cannot run, whichever
    thread builds.  The rules hold no reference cycles, and frozen objects are still freed when
    their last reference goes, so the replaced rule set is freed once nothing refers to it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return build()
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def build_router(path: str | Path, max_bytes: int | None = None,
                 cache_dir: Path | None = None) -> Router:
    """The router of the rules in `path` through the cache in `cache_dir`, built without
    collector pauses (without_collections); raises RulesError."""
    return without_collections(
        lambda: Router(load_rules_cached(path, max_bytes, cache_dir=cache_dir)))


def load_checked(path: str | Path, cache_dir: Path | None = None) -> tuple[Router, str]:
    """The rules as `keyrouter check` accepts them, and their version; raises RulesError with
    every problem (load, validation, failing examples).  `cache_dir`: the compiled-rules cache
    (keyrouter.rules.cache), None for none."""
    version = rules_version(path)  # before loading: a file changed meanwhile reloads again
    router = build_router(path, cache_dir=cache_dir)
    failures, _ = check_all(router)
    if failures:
        raise RulesError(failures)
    return router, version


def _signature(path: str | Path) -> tuple[Any, ...]:
    """What --watch compares: each rules file's name, size and mtime (and the folder's)."""
    entries: list[Any] = []
    p = Path(path)
    with contextlib.suppress(OSError):
        entries.append(("", p.stat().st_mtime_ns))
    for file in rule_files(p) if p.exists() else ():
        try:
            st = file.stat()
        except OSError:
            entries.append((str(file), None))
            continue
        entries.append((str(file), st.st_mtime_ns, st.st_size))
    return tuple(entries)


class UsesRouter(Protocol):
    """What a reload swaps the rules of (the Dispatcher)."""

    def use_router(self, router: Router) -> None: ...


class Reloader:
    """Reloads `path` into `dispatcher` (anything with `use_router(router)`)."""

    def __init__(self, path: str | Path, dispatcher: UsesRouter, events: Events = NO_EVENTS, *,
                 on_swap: Callable[[Router, str], None] | None = None) -> None:
        self.path = path
        self.dispatcher = dispatcher
        self.events = events
        self.on_swap = on_swap
        self.version = rules_version(path)
        #: KEYROUTER_RULES_CACHE, as the start-up used it
        self.cache_dir = rules_cache_dir()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def reload(self, why: str = "reload") -> bool:
        """True when the new rules are in force.  Loading runs in a thread (file I/O, compiling)."""
        async with self._lock:
            try:
                router, version = await asyncio.to_thread(load_checked, self.path, self.cache_dir)
                self.dispatcher.use_router(router)
            except RulesError as exc:
                return self._reject(why, exc.problems)
            except Exception as exc:  # e.g. a handler that does not import: keep the old rules
                return self._reject(why, [f"{self.path}: {type(exc).__name__}: {exc}"])
            self.version = version
            if self.on_swap is not None:
                self.on_swap(router, version)
            self.events.rules_reloaded("ok", version)
            logger.info("%s: rules %s loaded from %s (%d rules)", why, version, self.path,
                        len(router.rules.rules))
            return True

    def _reject(self, why: str, problems: list[Problem] | list[str]) -> bool:
        for problem in problems:
            logger.error("%s", problem)
        logger.error("%s: the new rules in %s were rejected (%d problems); keeping rules %s",
                     why, self.path, len(problems), self.version)
        self.events.rules_reloaded("rejected", self.version)
        return False

    def install_sighup(self) -> None:
        """SIGHUP -> reload (on the running loop)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._spawn, "SIGHUP")

    def _spawn(self, why: str) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def watch(self, stopping: asyncio.Event, period: float = WATCH_PERIOD) -> None:
        """Poll the files' mtimes; reload when they change (an editor's half-written file is
        rejected, and the next change reloads again)."""
        seen = await asyncio.to_thread(_signature, self.path)
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), period)
            if stopping.is_set():
                return
            now = await asyncio.to_thread(_signature, self.path)
            if now != seen:
                seen = now
                await self.reload("rules changed")
