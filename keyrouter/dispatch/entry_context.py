"""The Context a handler entry receives from the dispatcher, built lazily: its idempotency key (a
SHA-256), its logger adapter and its claim check are made when the handler first reads them, so a
handler that never does costs none of it.  It reads and compares like any Context;
`dataclasses.replace` (or calling the class) gives a plain Context."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from keyrouter.events import Events
from keyrouter.handlers.context import Context, idempotency_key
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.rules.model import HandlerEntry
from keyrouter.settings import Settings
from keyrouter.store.base import Store

_UNSET: Any = object()
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class Shared:
    """What every entry's context holds alike: the dispatcher's namespace, clients and hooks."""

    __slots__ = ("client", "events", "handler_logger", "holds", "namespace", "settings", "store")

    def __init__(self, namespace: str, client: IletiMerkezi | None, store: Store,
                 settings: Settings | None, events: Events,
                 handler_logger: Callable[[str], logging.Logger],
                 holds: Callable[[str], Awaitable[bool]]) -> None:
        self.namespace, self.client, self.store = namespace, client, store
        self.settings, self.events = settings, events
        self.handler_logger = handler_logger  # a handler's logger, by handler name
        self.holds = holds  # fencing: this worker still holds the message's claim (renews it)


class EntryContext(Context):
    __slots__ = ("_entry", "_holds", "_index", "_key", "_log", "_message_id", "_params", "_shared")
    _entry: HandlerEntry
    _holds: Any
    _index: int
    _key: Any
    _log: Any
    _message_id: str
    _params: Any
    _shared: Shared

    def __new__(cls, *args: Any, **kwargs: Any) -> Context:  # type: ignore[misc]
        """A plain Context (what `dataclasses.replace` builds); the dispatcher uses `lazy`."""
        return Context(*args, **kwargs)

    @classmethod
    def lazy(cls, shared: Shared, message_id: str, rule: str, index: int, entry: HandlerEntry,
             attempt: int) -> EntryContext:
        self: EntryContext = object.__new__(cls)
        self._shared, self._message_id, self._index, self._entry = shared, message_id, index, entry
        self.rule, self.attempt = rule, attempt
        self.client, self.store, self.settings = shared.client, shared.store, shared.settings
        self.events = shared.events
        self._params = self._key = self._log = self._holds = _UNSET
        return self

    @property
    def params(self) -> Mapping[str, Any]:
        if self._params is _UNSET:
            return self._entry.params
        return self._params  # type: ignore[no-any-return]

    @params.setter
    def params(self, value: Mapping[str, Any]) -> None:
        self._params = value

    @property
    def idempotency_key(self) -> str:
        if self._key is _UNSET:
            entry = self._entry
            self._key = idempotency_key(self._shared.namespace, self._message_id, self.rule,
                                        entry.identity or self._index, entry.name)
        return self._key  # type: ignore[no-any-return]

    @idempotency_key.setter
    def idempotency_key(self, value: str) -> None:
        self._key = value

    @property
    def logger(self) -> Logger:
        if self._log is _UNSET:
            name = self._entry.name
            fields = {"message_id": self._message_id, "rule": self.rule, "handler": name,
                      "attempt": self.attempt}
            self._log = logging.LoggerAdapter(self._shared.handler_logger(name), fields)
        return self._log  # type: ignore[no-any-return]

    @logger.setter
    def logger(self, value: Logger) -> None:
        self._log = value

    @property
    def holds_claim(self) -> Callable[[], Awaitable[bool]] | None:
        if self._holds is _UNSET:
            holds, message_id = self._shared.holds, self._message_id
            self._holds = lambda: holds(message_id)
        return self._holds  # type: ignore[no-any-return]

    @holds_claim.setter
    def holds_claim(self, value: Callable[[], Awaitable[bool]] | None) -> None:
        self._holds = value
