"""Every built-in named in the registry exists where the registry says, as an async function."""

from __future__ import annotations

import importlib
import inspect

import pytest

from keyrouter.retries import PermanentError, RetryLater
from keyrouter.rules import registry


@pytest.mark.parametrize("name", sorted(registry.BUILTINS))
def test_builtin_resolves_to_a_coroutine_function(name: str) -> None:
    handler = registry.resolve(name)
    assert inspect.iscoroutinefunction(handler)
    assert list(inspect.signature(handler).parameters) == ["message", "match", "context"]
    module = importlib.import_module(registry.BUILTINS[name].partition(":")[0])
    assert module.params_problem({}) is None or name in ("reply", "webhook", "survey") or (
        name.startswith("conversation"))  # added by the dispatcher, never written in a file


def test_retry_later_is_an_ordinary_failure() -> None:
    exc = RetryLater("HTTP 429", retry_after=3.0)
    assert not isinstance(exc, PermanentError)
    assert (str(exc), exc.retry_after) == ("HTTP 429", 3.0)
    assert RetryLater("x").retry_after is None
