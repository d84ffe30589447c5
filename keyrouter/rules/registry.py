"""Handler names -> callables: the built-ins, `package.module:function`, and entry points.

Resolution happens once, when rules are loaded, so a typo is a `keyrouter check` error and not a
dead letter at three in the morning.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from typing import Any, cast

from keyrouter.rules import plugin_path
from keyrouter.suggest import did_you_mean

ENTRY_POINT_GROUP = "keyrouter.handlers"
#: Built-in handler names and where they live.
BUILTINS: dict[str, str] = {
    "log": "keyrouter.handlers.log:handle",
    "blacklist": "keyrouter.handlers.blacklist:blacklist",
    "unblacklist": "keyrouter.handlers.blacklist:unblacklist",
    "reply": "keyrouter.handlers.reply:handle",
    "webhook": "keyrouter.handlers.webhook:handle",
    "survey": "keyrouter.handlers.survey:handle",
    "iys": "keyrouter.handlers.iys:handle",
    # the steps of conversations, added by the dispatcher (never written in a rules file)
    "conversation": "keyrouter.conversations.engine:step",
    "conversation_reply": "keyrouter.conversations.engine:send",
    "conversation_end": "keyrouter.conversations.engine:end",
}

Handler = Callable[..., Any]


class HandlerNotFound(LookupError):
    pass


@cache
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _import(target: str) -> Handler:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise HandlerNotFound(f"'{target}' is not of the form package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        # the module itself (or its package) is missing, not something it imports
        fix = f" ({plugin_path.not_found_hint()})" if missing and module_name.startswith(missing) else ""
        raise HandlerNotFound(f"cannot import module '{module_name}': {exc}{fix}") from None
    try:
        func = getattr(module, attr)
    except AttributeError:
        raise HandlerNotFound(f"module '{module_name}' has no attribute '{attr}'") from None
    if not callable(func):
        raise HandlerNotFound(f"'{target}' is not callable")
    return cast(Handler, func)


def resolve(name: str) -> Handler:
    """The callable for a handler entry name, or HandlerNotFound saying why not."""
    if name in BUILTINS:
        return _import(BUILTINS[name])
    if ":" in name:
        return _import(name)
    ep = _entry_points().get(name)
    if ep is None:
        raise HandlerNotFound(
            f"unknown handler '{name}'{did_you_mean(name, [*BUILTINS, *_entry_points()])}: "
            f"not a built-in ({', '.join(BUILTINS)}), "
            f"not package.module:function, and no installed package registers it under "
            f"the entry-point group '{ENTRY_POINT_GROUP}'"
        )
    try:
        func = ep.load()
    except Exception as exc:  # a broken plugin package must not crash `check`
        raise HandlerNotFound(f"entry point '{name}' ({ep.value}) failed to load: {exc}") from None
    if not callable(func):
        raise HandlerNotFound(f"entry point '{name}' ({ep.value}) is not callable")
    return cast(Handler, func)


def params_problem(name: str, params: Any, captures: list[str] | None) -> str | None:
    """Why a built-in's params cannot work (unknown keys, a template naming a capture no match
    can fill), or None.  `captures`: the names a match of the rule can carry, when known."""
    if name not in BUILTINS:
        return None
    module = importlib.import_module(BUILTINS[name].partition(":")[0])
    check = getattr(module, "params_problem", None)
    if check is None:
        return None
    if name in ("reply", "survey"):
        found = check(params, captures)
    elif name in ("blacklist", "unblacklist"):
        found = check(params, name)
    else:
        found = check(params)
    return None if found is None else str(found)


def problem(name: str, *, load: bool = True) -> str | None:
    """Why `name` cannot be used as a handler, or None.  Built-ins are trusted by name.
    `load=False` (commands that only read the store): only the form of the name is checked, so
    they work without the company's handler code."""
    if name in BUILTINS:
        return None
    if not load:
        module, colon, attr = name.partition(":")
        return None if not colon or (module and attr) else (
            f"'{name}' is not of the form package.module:function")
    try:
        resolve(name)
    except HandlerNotFound as exc:
        return str(exc)
    return None
