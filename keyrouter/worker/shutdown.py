"""SIGTERM and SIGINT: the first asks for a clean stop (no new message, running handlers finish),
the second exits at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

logger = logging.getLogger("keyrouter.worker")
EXIT_AT_ONCE = 130


def install(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            logger.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(EXIT_AT_ONCE)
        logger.info("%s: finishing running handlers, then stopping (send again to exit at once)",
                    signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
