"""Logging set-up for every command: level and format from the environment, numbers masked.

`KEYROUTER_LOG_LEVEL` (DEBUG, INFO, WARNING, ERROR) and `KEYROUTER_LOG_FORMAT` (`text`, or `json`:
one JSON object a line for log shippers).  Both formats go through one filter that masks Turkish
mobile numbers with `keyrouter.masking.mask_text` (every written form), so a number a plugin logs by mistake
is masked in text and JSON alike.  A bad value is a `LogConfigError` naming the variable (the CLI
prints it as one line and exits 2).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from keyrouter.masking import mask_text
from keyrouter.ops import terminal

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Structured fields a log call may pass with `extra=`; JSON lines carry them as keys.
FIELDS = ("message_id", "rule", "handler", "attempt")
_CHATTY = ("httpx", "httpcore")  # they log whole URLs: webhook tokens and credentials


class LogConfigError(ValueError):
    """A bad KEYROUTER_LOG_* value: the text names the variable and the accepted values."""


class MaskNumbers(logging.Filter):
    """Renders the message once with its arguments, masked; both formatters then print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_text(record.getMessage()), ()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the structured
    fields that were given, and `error` (type and text, no traceback frames) for exceptions."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            document["error"] = mask_text(f"{type(exc).__name__}: {exc}")
        return json.dumps(document, ensure_ascii=False, default=str)


def read_config(env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(level, format) from the environment; raises LogConfigError for a bad value."""
    env = os.environ if env is None else env
    level = (env.get("KEYROUTER_LOG_LEVEL") or "INFO").strip().upper()
    if level not in LEVELS:
        raise LogConfigError(f"KEYROUTER_LOG_LEVEL={env.get('KEYROUTER_LOG_LEVEL')!r} is not a log "
                             f"level: use one of {', '.join(LEVELS)}")
    fmt = (env.get("KEYROUTER_LOG_FORMAT") or "text").strip().lower()
    if fmt not in FORMATS:
        raise LogConfigError(f"KEYROUTER_LOG_FORMAT={env.get('KEYROUTER_LOG_FORMAT')!r} is not a "
                             f"log format: use text or json")
    return getattr(logging, level), fmt


def setup_logging(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> None:
    """Configure the root logger for a command.  Raises LogConfigError before changing anything."""

    level, fmt = read_config(env)
    if fmt == "text" and stream is None and terminal.is_terminal():
        handler = terminal.log_handler()  # rich, on the console the progress bar shares
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(MaskNumbers())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for chatty in _CHATTY:
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
