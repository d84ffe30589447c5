"""Shared fixtures: the fake provider, a client on it, and builders for messages and contexts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest

from keyrouter.handlers.context import Context
from keyrouter.message import TURKEY, Message, to_e164
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.settings import Settings
from keyrouter.store.memory import MemoryStore
from keyrouter.testing import FakeIletiMerkezi

from .support import FAST, HASH, IDEMPOTENCY_KEY, KEY, NUMBER


@pytest.fixture
def fake() -> Iterator[FakeIletiMerkezi]:
    with FakeIletiMerkezi(KEY, HASH) as server:
        yield server


@pytest.fixture
async def client(fake: FakeIletiMerkezi) -> AsyncIterator[IletiMerkezi]:
    async with IletiMerkezi(KEY, HASH, base_url=fake.base_url, timeout=FAST) as api:
        yield api


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


MakeMessage = Callable[..., Message]
MakeContext = Callable[..., Context]


@pytest.fixture
def make_message() -> MakeMessage:
    def make(
        text: str = "RET",
        *,
        sender: str = NUMBER,
        id: str = "m-1",
        receiver: str = "7889",
        age: timedelta = timedelta(0),
        received_at: datetime | None = None,
        normalized: str | None = None,
    ) -> Message:
        return Message(
            id=id,
            received_at=received_at or datetime.now(TURKEY) - age,
            sender=sender,
            sender_e164=to_e164(sender),
            receiver=receiver,
            text=text,
            normalized=text.lower() if normalized is None else normalized,
        )

    return make


@pytest.fixture
def make_context() -> MakeContext:
    def make(
        params: Mapping[str, Any] | None = None,
        *,
        client: IletiMerkezi | None = None,
        store: Any = None,
        settings: Settings | None = None,
        rule: str = "optout",
        key: str = IDEMPOTENCY_KEY,
    ) -> Context:
        return Context(
            params=dict(params or {}),
            idempotency_key=key,
            logger=logging.getLogger("test"),
            rule=rule,
            client=client,
            store=store,
            settings=settings,
        )

    return make
