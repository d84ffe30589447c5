"""What `keyrouter run` adds around the worker for operators: the metrics/health listener
(`--metrics ADDR`, KEYROUTER_METRICS_ADDR) and hot reload of the rules (SIGHUP, `--watch`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from keyrouter.events import NO_EVENTS, Events
from keyrouter.ops.listener import Listener, parse_addr
from keyrouter.ops.metrics import Metrics
from keyrouter.settings import Settings
from keyrouter.web.mount import dashboard_listener
from keyrouter.worker.reload import WATCH_PERIOD, Reloader

logger = logging.getLogger("keyrouter.service")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", metavar="ADDR",
                   help="serve /metrics, /healthz and /readyz on HOST:PORT (env KEYROUTER_METRICS_ADDR)")
    p.add_argument("--watch", action="store_true",
                   help=f"reload the rules when their files change (checked every {WATCH_PERIOD:g}s); "
                        "SIGHUP always reloads")
    p.add_argument("--dashboard", action="store_true",
                   help="also serve the dashboard (keyrouter[web]) on the --metrics address")


def make_metrics(args: argparse.Namespace, settings: Settings,
                 interval: float) -> tuple[Metrics | None, Any]:
    """The metrics and a listener not yet started (with `--dashboard`, one that also serves the
    dashboard), or (None, None) without an address.  Raises ValueError for a bad address or a
    dashboard that cannot be served (before anything runs)."""
    addr = getattr(args, "metrics", None) or settings.metrics_addr
    if not addr:
        if getattr(args, "dashboard", False):
            raise ValueError("--dashboard is served on the metrics listener: give --metrics ADDR "
                             "(or KEYROUTER_METRICS_ADDR) too")
        return None, None
    where = "--metrics" if getattr(args, "metrics", None) else "KEYROUTER_METRICS_ADDR"
    host, port = parse_addr(addr, where)
    metrics = Metrics(interval=interval)
    if getattr(args, "dashboard", False):
        return metrics, dashboard_listener(metrics, host, port, settings)
    return metrics, Listener(metrics, host, port)


@contextlib.asynccontextmanager
async def operating(runtime: Any, stopping: asyncio.Event, *, metrics: Metrics | None,
                    listener: Any, watch: bool, interval: float,
                    worker: Any = None) -> AsyncIterator[Reloader]:
    """Listener, store refresher, SIGHUP and --watch around the worker; all stopped on exit."""
    events: Events = metrics if metrics is not None else NO_EVENTS

    def swapped(router: Any, version: str) -> None:
        runtime.router = router
        if metrics is not None:
            metrics.rules_loaded([r.name for r in router.rules.rules], version)

    reloader = Reloader(runtime.settings.rules, runtime.dispatcher, events, on_swap=swapped)
    tasks: list[asyncio.Task[Any]] = []
    if metrics is not None:
        rules = [r.name for r in runtime.router.rules.rules] + ["default"]
        metrics.bind(runtime.dispatcher, worker or (lambda: getattr(runtime, "worker", None)), rules,
                     reloader.version)
        period = max(1.0, min(interval, 15.0))
        tasks.append(asyncio.create_task(metrics.refresher(runtime.store, stopping, period)))
    if listener is not None:
        try:
            listener.start()
        except OSError as exc:
            for task in tasks:
                task.cancel()
            raise ValueError(f"cannot serve metrics on {listener.wanted}: {exc.strerror or exc}") from None
        host, port = listener.address
        logger.info("serving /metrics, /healthz and /readyz on %s:%d", host, port)
    reloader.install_sighup()
    if watch:
        tasks.append(asyncio.create_task(reloader.watch(stopping)))
    try:
        yield reloader
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if listener is not None:
            listener.stop()
