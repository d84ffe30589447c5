"""The worker's side of reconciliation (docs/reconciliation.md): only the fetch leader (one worker
per namespace, keyrouter.intake) reconciles, every KEYROUTER_RECONCILE_INTERVAL, in the background
so get-inbox polls go on meanwhile; the provider opt-outs it finds are published to every worker
like inbox rows.  After each poll the leader also publishes the kept provider rows not finished
yet (one store read when there are none), so a row kept by `keyrouter optouts reconcile`, or by a
reconcile killed before it shared its rows, runs at the next poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from keyrouter.compliance.reconcile import Reconciler, iys_params_of
from keyrouter.events import Events
from keyrouter.message import Message
from keyrouter.providers.iys import SOURCES, shared_client
from keyrouter.store.codec import dumps_ascii
from keyrouter.worker.runtime import Runtime

__all__ = ["ReconcileTicker"]

logger = logging.getLogger("keyrouter.reconcile")


class ReconcileTicker:
    """Call `after_poll` after each successful poll of the fetch leader; `stop` at the end."""

    def __init__(self, runtime: Runtime, events: Events, clock: Callable[[], float] = time.time
                 ) -> None:
        self.runtime = runtime
        self.events = events
        self.clock = clock
        self.interval = runtime.settings.reconcile_seconds()
        self.next_at = 0.0  # the first poll reconciles
        self.task: asyncio.Task[None] | None = None
        self._refused: str | None = None

    async def after_poll(self, token: int | None) -> None:
        """Share the kept rows; start a reconcile when one is due and none is running."""
        if token is None or self.runtime.client is None:
            return
        store = self.runtime.store
        kept = await store.reconciled_rows()
        if kept:
            waiting = set(await store.unfinished([i for i, _ in kept]))
            rows = [(i, row) for i, row in kept if i in waiting]
            if rows:
                await store.publish(rows, token)
        now = self.clock()
        if now >= self.next_at and (self.task is None or self.task.done()):
            self.next_at = now + self.interval
            self.task = asyncio.create_task(self._run(token), name="keyrouter-reconcile")

    def reconciler(self) -> Reconciler | None:
        """Built per run from the rules in force (hot reloads); None, logged once, when the
        settings cannot work."""
        client, settings = self.runtime.client, self.runtime.settings
        if client is None:  # after_poll starts no run without one
            return None
        router = self.runtime.dispatcher.router
        source = settings.reconcile_iys_source.strip()
        problem = None
        if source not in SOURCES:
            problem = f"KEYROUTER_RECONCILE_IYS_SOURCE={source!r} is not an İYS source"
        iys = iys_params_of(router.rules, source)
        if problem is None and iys is not None and shared_client(settings) is None:
            problem = "the rules register opt-outs in İYS but İYS is not configured (IYS_*)"
        if problem is not None:
            if problem != self._refused:
                logger.error("blacklist reconciliation is off: %s", problem)
            self._refused = problem
            return None
        self._refused = None
        return Reconciler(self.runtime.store, client, router=router, iys=iys,
                          events=self.events)

    async def _run(self, token: int) -> None:
        reconciler = self.reconciler()
        if reconciler is None:
            return
        store = self.runtime.store

        async def share(messages: list[Message]) -> None:
            rows = [(m.id, dumps_ascii(dict(m.row))) for m in messages]
            if await store.publish(rows, token) == -1:
                logger.info("reconcile: another worker fetches now; its next poll shares the "
                            "kept provider opt-outs")

        try:
            outcome = await reconciler.run(share, waits=False)
        except Exception as exc:  # the provider or the store: tried again next interval
            logger.error("blacklist reconciliation failed (%s: %s); next try in %.0fs",
                         type(exc).__name__, exc, self.interval)
            return
        s = outcome.summary()
        log = logger.info if outcome.result == "agree" else logger.warning
        log("reconcile (%s pass): %d on the provider's blacklist, %d provider opt-outs recorded, "
            "%d re-added, %d opt-ins not held at the provider, %d in progress; %s", s["mode"],
            s["listed"], s["recorded"], s["readded"], s["reported"], s["busy"], s["result"])

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
