"""A reload builds the new router off the event loop: the old router serves until the swap, the
loop keeps running, and the compiled-rules cache never hands back rules other than the files'."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path
from typing import Any

import pytest

from keyrouter.rules import cache
from keyrouter.rules.model import RuleSet
from keyrouter.rules.router import Router
from keyrouter.worker import reload as reload_module
from keyrouter.worker.reload import Reloader, build_router, without_collections

OLD = "version: 1\nrules:\n  - name: hello\n    keywords: [MERHABA]\n    handlers: [log]\n"
NEW = OLD.replace("[MERHABA]", "[MERHABA, SELAM]")


class Holder:
    def __init__(self, router: Router) -> None:
        self.router = router

    def use_router(self, router: Router) -> None:
        self.router = router


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(OLD, encoding="utf-8")
    return path


@pytest.mark.anyio
async def test_the_old_router_serves_and_the_loop_runs_while_the_new_one_builds(
        rules_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = Holder(build_router(rules_file))
    old = holder.router
    reloader = Reloader(rules_file, holder)
    reloader.cache_dir = tmp_path / "cache"
    started, release = threading.Event(), threading.Event()
    real = reload_module.load_rules_cached

    def slow_load(*args: Any, **kwargs: Any) -> RuleSet:
        started.set()
        assert release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(reload_module, "load_rules_cached", slow_load)
    rules_file.write_text(NEW, encoding="utf-8")
    task = asyncio.create_task(reloader.reload("test"))
    while not started.is_set():
        await asyncio.sleep(0.005)
    ticks = 0
    for _ in range(5):  # the build is held: the loop still runs, the old rules still route
        await asyncio.sleep(0.001)
        ticks += 1
        assert holder.router is old
        assert holder.router.route("selam").rule is None
        assert holder.router.route("merhaba").rule is not None
    assert ticks == 5 and not task.done()
    release.set()
    assert await task
    assert holder.router is not old
    assert holder.router.route("selam").rule is not None


@pytest.mark.anyio
async def test_a_reload_of_unchanged_rules_is_a_hit_and_a_change_is_not(
        rules_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = Holder(build_router(rules_file, cache_dir=tmp_path / "cache"))
    reloader = Reloader(rules_file, holder)
    reloader.cache_dir = tmp_path / "cache"
    full_loads = []
    real = cache.load_rules

    def counted(*args: Any, **kwargs: Any) -> RuleSet:
        full_loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "load_rules", counted)
    assert await reloader.reload("test")
    assert full_loads == []  # the start-up wrote the entry
    assert holder.router.route("merhaba").rule is not None
    rules_file.write_text(NEW, encoding="utf-8")
    assert await reloader.reload("test")
    assert len(full_loads) == 1
    assert holder.router.route("selam").rule is not None
    assert await reloader.reload("test")
    assert len(full_loads) == 1


def test_building_pauses_the_collector_and_restores_it_even_on_failure() -> None:
    assert gc.isenabled()
    seen = []
    assert without_collections(lambda: seen.append(gc.isenabled()) or 7) == 7
    assert seen == [False] and gc.isenabled()
    frozen = gc.get_freeze_count()
    with pytest.raises(ValueError):
        without_collections(lambda: (_ for _ in ()).throw(ValueError("bad rules")))
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen
