"""When a failed message is tried again: exponential backoff with jitter, and a last attempt."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime


class PermanentError(Exception):
    """Raise from a handler for a failure that retrying cannot fix (an invalid number, a refused
    recipient): the message goes straight to the dead letters with this error."""


class RetryLater(Exception):
    """Raise from a handler for a failure worth retrying (a timeout, a 5xx, a 429).

    `retry_after` is the delay in seconds the other side asked for (an HTTP `Retry-After`), or None
    to use the retry policy's own backoff.  The dispatcher should wait at least that long (capped
    by its policy's `max_delay`) before the next attempt; it still counts as a failed attempt."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:  # survives pickling (worker subprocesses)
        return (type(self), (str(self), self.retry_after))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 10.0  # seconds before the second attempt
    max_delay: float = 900.0
    jitter: float = 0.25  # +/- this fraction, so workers that failed together do not retry together

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1-based)."""
        raw = min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1))
        spread = raw * self.jitter
        return max(0.0, raw + (rng or random).uniform(-spread, spread))

    def exhausted(self, failures: int) -> bool:
        return failures >= self.max_attempts


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """A `Retry-After` header -> seconds from now (>= 0), or None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322, but Python leaves it naive
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
