"""The rules a message runs under: the router, the rules' conversations, and the handlers their
entries name, resolved once.  A hot reload swaps all three together (`use`)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from keyrouter.compliance.channels import is_provider_row, provider_route
from keyrouter.conversations.engine import Conversations
from keyrouter.dispatch.scheduling import HIGH, NORMAL, Item
from keyrouter.message import Message
from keyrouter.rules import registry
from keyrouter.rules.router import Route, Router
from keyrouter.store.base import Store


class Handlers:
    """Handler names resolved to functions (and whether they are `async def`), and their loggers,
    each looked up once."""

    def __init__(self) -> None:
        self._found: dict[str, tuple[Callable[..., Any], bool]] = {}
        self._loggers: dict[str, logging.Logger] = {}

    def check(self, router: Router) -> None:
        """Resolve every handler the rules name: a bad name fails now, not at the first message."""
        for rule in router.rules.rules:
            for entry in rule.handlers:
                self.resolve(entry.name)
        for entry in router.rules.default:
            self.resolve(entry.name)

    def resolve(self, name: str) -> tuple[Callable[..., Any], bool]:
        found = self._found.get(name)
        if found is None:
            func = registry.resolve(name)
            found = self._found[name] = (func, inspect.iscoroutinefunction(func))
        return found

    def logger(self, handler: str) -> logging.Logger:
        found = self._loggers.get(handler)
        if found is None:
            found = self._loggers[handler] = logging.getLogger(f"keyrouter.handler.{handler}")
        return found


#: Texts up to this long are remembered with their route, at most ROUTES_KEPT of them (then the
#: memory starts afresh): a campaign's replies repeat ("RET", "ANKET A"), and routing a text
#: again (normalizing, the keyword indexes, the patterns) costs several times a dictionary probe.
#: Longer texts (free text, codes) rarely repeat and are routed each time.
REMEMBERED_TEXT = 64
ROUTES_KEPT = 4096


class Routing:
    """The current rules; `route_item` routes an offered message once the store says it is
    unfinished, `route_now` decides its route when it starts.  A route depends on the text and
    the receiver alone (router.py), so repeated texts are routed once per set of rules; each
    message still gets its own Route and Match."""

    def __init__(self, router: Router, store: Store, clock: Callable[[], float],
                 handlers: Handlers) -> None:
        self.store, self.clock, self.handlers = store, clock, handlers
        handlers.check(router)  # fail at start-up, not at the first message
        self.router = router
        self._routes: dict[tuple[str, str], Route] = {}
        #: the rules' conversations, consulted when each message starts (`route_now`)
        self.conversations = Conversations.for_rules(router.rules, store, clock)

    def use(self, router: Router) -> None:
        """Hot reload: messages not started yet run under the new rules, started ones finish
        under theirs.  Raises (and keeps the old rules) when a handler cannot be resolved."""
        self.handlers.check(router)
        self.router, self._routes = router, {}
        self.conversations = Conversations.for_rules(router.rules, self.store, self.clock)

    def route(self, message: Message) -> Route:
        if is_provider_row(message):  # an opt-out found on the provider's blacklist only
            return provider_route(message)
        text, receiver = message.text, message.receiver
        if len(text) > REMEMBERED_TEXT:
            return self.router.route(text, receiver)
        routes = self._routes
        found = routes.get((text, receiver))
        if found is None:
            if len(routes) >= ROUTES_KEPT:
                routes.clear()
            found = routes[text, receiver] = self.router.route(text, receiver)
        return found.copy()

    def route_item(self, item: Item) -> None:
        item.route, item.router = self.route(item.message), self.router
        rule = item.route.rule
        item.priority = HIGH if rule is not None and rule.priority == "high" else NORMAL

    def rules_route(self, item: Item) -> Route:
        """The message's route by the rules: the one found when it was offered, unless the rules
        were reloaded since.  Without conversations, its route when it starts (`route_now`
        without a coroutine)."""
        route = item.route
        if route is None or item.router is not self.router:
            route = item.route = self.route(item.message)
        return route

    async def route_now(self, item: Item) -> Route:
        """The message's route when it starts: `rules_route`, but a conversation may take it
        over, decided now that the sender's earlier messages are finished."""
        route = self.rules_route(item)
        if self.conversations is not None:
            route = await self.conversations.route_for(item.message, route)
        return route
