"""What a person sees on a terminal: one rich Console on stderr shared by the log handler and the
progress display, so log lines scroll above the bar instead of breaking it.  Off a terminal
(pipes, files, systemd, tests) logs stay plain lines and there is no bar."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.highlighter import NullHighlighter
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_console: Console | None = None


def console() -> Console:
    """The stderr console (made on first use, so tests that swap sys.stderr get theirs)."""
    global _console
    if _console is None or _console.file is not sys.stderr:
        _console = Console(stderr=True, highlight=False)
    return _console


def is_terminal() -> bool:
    return sys.stderr.isatty()


def log_handler() -> logging.Handler:
    """RichHandler on the shared console on a terminal; a plain stream handler elsewhere."""
    if is_terminal():
        return RichHandler(console=console(), show_path=False, markup=False,
                           highlighter=NullHighlighter(), rich_tracebacks=False,
                           log_time_format="[%X]")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    return handler


class PerMessageLines(logging.Filter):
    """Holds back the lines written once per message (handlers' INFO lines, the dispatcher's
    retry and dead-letter lines) while a progress bar is shown; counts them instead."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        per_message = (record.name.startswith("keyrouter.handler") and record.levelno < logging.ERROR) or (
            record.name == "keyrouter.dispatch" and str(record.msg).startswith(("dead letter", "retry in")))
        if per_message:
            self.held += 1
        return not per_message


@contextmanager
def progress_bar(description: str, *, hold_lines: bool = True) -> Iterator[Callable[[int, int], None]]:
    """`progress(done, total)` drawing a rich bar on the stderr console.  With `hold_lines`,
    per-message log lines are held back while it runs (a one-line count follows)."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=console(), transient=False)
    task = bar.add_task(description, total=None)
    held = PerMessageLines()
    handlers = list(logging.getLogger().handlers) if hold_lines else []
    for h in handlers:
        h.addFilter(held)

    def show(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    try:
        with bar:
            yield show
    finally:
        for h in handlers:
            h.removeFilter(held)
        if held.held:
            logging.getLogger("keyrouter.replay").info(
                "%d per-message log lines held back during the progress bar "
                "(KEYROUTER_LOG_LEVEL=DEBUG shows them)", held.held)
