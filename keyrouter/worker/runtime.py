"""Settings -> the running parts (rules, router, store, client, dispatcher), opened and closed
in one place, so the CLI, `keyrouter.testing` and library users wire them up the same way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from keyrouter.dispatch import Dispatcher
from keyrouter.events import NO_EVENTS, Events
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.providers.iys import close_shared as close_iys_clients
from keyrouter.rules.router import Router
from keyrouter.settings import Settings
from keyrouter.store import Store, open_store
from keyrouter.worker.reload import build_router


@dataclass
class Runtime:
    settings: Settings
    router: Router
    store: Store
    client: IletiMerkezi | None
    dispatcher: Dispatcher
    #: The running `keyrouter.worker.loop.Worker` (`run` only): metrics read `is_fetch_leader`.
    worker: Any = None
    events: Events = NO_EVENTS


def make_client(settings: Settings) -> IletiMerkezi | None:
    """None without credentials: routing, replay and the store still work; built-ins that need
    the provider fail with a clear, permanent error.  `settings.http_timeout` (KEYROUTER_HTTP_TIMEOUT),
    when set, bounds every phase of a request (connect, write, read, pool) instead of the client's
    DEFAULT_TIMEOUT."""
    if settings.api_key is None or settings.api_hash is None:
        return None
    timeout = httpx.Timeout(settings.http_timeout) if settings.http_timeout is not None else None
    return IletiMerkezi(settings.api_key.get_secret_value(), settings.api_hash.get_secret_value(),
                        base_url=settings.base_url, timeout=timeout)


@asynccontextmanager
async def open_runtime(settings: Settings, *, router: Router | None = None,
                       stopping: asyncio.Event | None = None,
                       client: IletiMerkezi | None = None,
                       events: Events = NO_EVENTS) -> AsyncIterator[Runtime]:
    """Raises RulesError for bad rules and ValueError for a bad store URL or horizon."""
    router = router or build_router(settings.rules, settings.rules_max_bytes,
                                    settings.rules_cache_dir())
    horizon = settings.horizon_delta()
    store = open_store(settings.store, settings.namespace, horizon)
    client = client or make_client(settings)
    dispatcher = Dispatcher(
        router, store, namespace=settings.namespace, client=client, settings=settings,
        policy=settings.retry_policy(), lease=settings.lease, concurrency=settings.concurrency,
        horizon=horizon, stopping=stopping, handler_timeout=settings.handler_timeout,
        events=events,
        shutdown_grace=settings.shutdown_grace, max_abandoned=settings.max_abandoned,
    )
    try:
        yield Runtime(settings, router, store, client, dispatcher, events=events)
    finally:
        await dispatcher.aclose()
        if client is not None:
            await client.aclose()
        await close_iys_clients()
        await store.close()
