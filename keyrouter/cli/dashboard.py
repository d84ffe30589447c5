"""`keyrouter dashboard`: checks the host and token rule, loads the rules, serves the app.

The web libraries are imported only here, when the command runs: the worker's install does not
need them, and without them this command says so in one line (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

from keyrouter.cli.common import CliError, command, read_store
from keyrouter.rules.model import RulesError
from keyrouter.settings import Settings
from keyrouter.store import Store, open_store
from keyrouter.store.choice import read_flags
from keyrouter.web.auth import dashboard_token, is_loopback
from keyrouter.web.pages import RulesInfo

EXIT_OK, EXIT_BAD_CONFIG, EXIT_STORE_UNREACHABLE = 0, 2, 4
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8470


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]

    p = command(subparsers, "dashboard", "a web page with survey charts, the opt-out ledger, "
                "dead letters and status (needs keyrouter[web])",
                "keyrouter dashboard --port 8470\n"
                "KEYROUTER_DASHBOARD_TOKEN=... keyrouter dashboard --host 0.0.0.0")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to listen on (default 127.0.0.1; any other needs KEYROUTER_DASHBOARD_TOKEN)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    read_flags(p, "sqlite:///keyrouter.sqlite3")
    p.add_argument("--rules", help="rules file or folder (env KEYROUTER_RULES, default ./rules): "
                                   "each survey's declared choices")
    p.set_defaults(func=cmd_dashboard)


def _fail(message: str) -> int:
    print(f"keyrouter: {message}", file=sys.stderr)
    return EXIT_BAD_CONFIG


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    try:  # the web extra: imported only when the dashboard runs
        import uvicorn  # noqa: PLC0415

        from keyrouter.web.app import dashboard_app  # noqa: PLC0415
    except ImportError as exc:
        return _fail(f"the dashboard needs the web extra ({exc.name} is missing): "
                     "pip install 'keyrouter[web]'")

    token = dashboard_token(settings)
    if not is_loopback(args.host) and not token:
        return _fail(f"--host {args.host} is not a loopback address: set KEYROUTER_DASHBOARD_TOKEN "
                     "so every request must sign in (or keep the default 127.0.0.1)")
    if not 0 < args.port < 65536:
        return _fail(f"--port {args.port}: give 1-65535")
    try:
        settings = read_store(args, settings)
    except CliError as exc:
        return _fail(str(exc))
    try:
        rules = RulesInfo.load(settings.rules, time.time())
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_CONFIG
    horizon = settings.horizon_delta()
    try:
        code = asyncio.run(_probe(open_store(settings.store, settings.namespace, horizon)))
    except ValueError as exc:
        return _fail(str(exc))
    if code:
        return code
    try:
        app = dashboard_app(settings, args.host, rules, token)
    except ValueError as exc:  # a reverse-proxy setting that cannot be read
        return _fail(str(exc))
    mode = "signed in by token, Retry/Drop enabled" if token else "read-only, no token"
    print(f"keyrouter dashboard on http://{args.host}:{args.port}/ ({mode}); Ctrl-C stops it",
          file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host.strip("[]"), port=args.port, log_level="warning",
                    server_header=False, proxy_headers=False)
    except (OSError, SystemExit) as exc:  # uvicorn exits 1 when it cannot bind
        return _fail(f"cannot listen on {args.host}:{args.port}: "
                     f"{getattr(exc, 'strerror', None) or 'address in use or not available'}")
    return EXIT_OK


async def _probe(store: Store) -> int:
    """Reach the store once before serving: unreachable is exit 4, as for every command."""
    try:
        await store.counts()
    except Exception as exc:  # redis, sqlite, OS errors: one line, no traceback
        print(f"keyrouter: the store is unreachable ({type(exc).__name__})", file=sys.stderr)
        return EXIT_STORE_UNREACHABLE
    finally:
        with contextlib.suppress(Exception):
            await store.close()
    return EXIT_OK
