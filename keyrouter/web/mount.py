"""`keyrouter run --metrics ADDR --dashboard`: the dashboard on the operator's own listener.

One port then answers /metrics, /healthz and /readyz (as without the dashboard) and every other
path with the dashboard.  uvicorn serves it from a thread with its own event loop, so /healthz
still answers while the worker's loop is blocked, as the standard-library listener does.  The
dashboard's rules hold here too: a non-loopback address needs KEYROUTER_DASHBOARD_TOKEN.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keyrouter.ops.metrics import Metrics
from keyrouter.settings import Settings
from keyrouter.web.auth import dashboard_token, is_loopback
from keyrouter.web.pages import RulesInfo


def dashboard_listener(metrics: Metrics, host: str, port: int, settings: Settings) -> MountedListener:
    """Raises ValueError (one line) without the web extra, without a token on a non-loopback
    address, or with rules that do not load."""
    try:  # the web extra, imported only when the dashboard is mounted
        import uvicorn  # noqa: F401, PLC0415
        from starlette.applications import Starlette  # noqa: PLC0415
        from starlette.requests import Request  # noqa: PLC0415
        from starlette.responses import Response  # noqa: PLC0415
        from starlette.routing import Mount, Route  # noqa: PLC0415

        from keyrouter.web.app import dashboard_app  # noqa: PLC0415
    except ImportError as exc:
        raise ValueError(f"--dashboard needs the web extra ({exc.name} is missing): "
                         "pip install 'keyrouter[web]'") from None

    token = dashboard_token(settings)
    if not is_loopback(host) and not token:
        raise ValueError(f"--dashboard on {host}, not a loopback address: set KEYROUTER_DASHBOARD_TOKEN "
                         "so every dashboard request must sign in")
    rules = RulesInfo.load(settings.rules, time.time())  # RulesError is a ValueError
    dashboard = dashboard_app(settings, host, rules, token)

    async def exposition(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), headers={"content-type": CONTENT_TYPE_LATEST,
                                                                     "cache-control": "no-store"})

    def health(check: str) -> Any:
        async def answer(request: Request) -> Response:
            ok, why = getattr(metrics, check)()
            return Response(why + "\n", 200 if ok else 503, media_type="text/plain",
                            headers={"cache-control": "no-store"})
        return answer

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with dashboard.router.lifespan_context(dashboard):  # opens the dashboard's store
            yield

    app = Starlette(routes=[Route("/metrics", exposition), Route("/healthz", health("health")),
                            Route("/readyz", health("readiness")), Mount("/", app=dashboard)],
                    lifespan=lifespan)
    return MountedListener(app, host, port)


class MountedListener:
    """The Listener interface (start, address, wanted, stop) over a uvicorn server in a thread."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn  # noqa: PLC0415  # the web extra

        self.wanted = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._host, self._port = host, port
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", server_header=False,
                                                     proxy_headers=False, lifespan="on"))
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._socket is not None, "start() first"
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> MountedListener:
        """Binds in the caller's thread, so a taken port raises OSError before anything runs."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="keyrouter-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
            self._thread = None
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
