"""What a dispatch did (Report) and the small vocabulary every part of the dispatcher shares."""

from __future__ import annotations

from dataclasses import dataclass

from keyrouter.providers.iletimerkezi import PermanentApiError
from keyrouter.retries import PermanentError
from keyrouter.rules.entry_keys import entry_key, legacy_entry_key

__all__ = ["ADMITTED", "DEAD", "DEFAULT_RULE", "DEFERRED", "DONE", "RETRYING", "SKIPPED", "Report",
           "describe_error", "entry_key", "is_permanent", "legacy_entry_key"]

DEFAULT_RULE = "default"
ADMITTED = "!admitted"  # progress marker: the message passed its max_age check once
_ERROR_LIMIT = 2000
#: Report fields a message can settle in (one per message and `process()` call).
DONE, SKIPPED, RETRYING, DEAD, DEFERRED = "done", "skipped", "retrying", "dead", "deferred"


@dataclass
class Report:
    """What one `process()` call did, for logs, exit codes and tests."""

    seen: int = 0
    done: int = 0
    skipped: int = 0  # older than the rule's max_age
    retrying: int = 0  # failed, retry scheduled
    dead: int = 0
    # not this time: held by another worker, retry not due, or the sender's earlier message pending
    deferred: int = 0
    ignored: int = 0  # duplicates within the batch, or older than the horizon

    def add(self, other: Report) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def is_permanent(exc: BaseException) -> bool:
    """Retrying cannot help (AuthenticationRefused is not among these: new credentials can)."""
    return isinstance(exc, PermanentError | PermanentApiError)


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_LIMIT else text[: _ERROR_LIMIT - 1] + "…"
