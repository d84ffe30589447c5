"""The dashboard's Starlette app: routes, the sign-in rule, security headers.

Server-rendered HTML that works without JavaScript (the pages ship none, and the CSP forbids
any); Jinja2 autoescapes every value.  The store is opened in the app's lifespan (so a Redis
client lives on the server's event loop) and closed with it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyrouter import timefmt
from keyrouter.compliance import exports
from keyrouter.settings import Settings
from keyrouter.store import Store, open_store
from keyrouter.web import pages
from keyrouter.web import status as status_info
from keyrouter.web.auth import COOKIE, SESSION_SECONDS, Auth, Session, clean_name, loopback_hosts
from keyrouter.web.charts import bar_chart
from keyrouter.web.conversations import conversation_views
from keyrouter.web.pending import SCAN
from keyrouter.web.proxy import Proxies, parse_cookie_mode

logger = logging.getLogger("keyrouter.dashboard")
HERE = Path(__file__).parent
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
NAV = [("/", "Status", "Durum"), ("/surveys", "Surveys", "Anketler"),
       ("/optouts", "Opt-outs", "Ret kayıtları"), ("/dead-letters", "Dead letters", "Başarısız mesajlar")]


class SecurityHeaders:
    """Adds the security headers to every response, errors and static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(k, v) for k, v in HEADERS if k not in names]]
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass
class Action:
    at: str
    who: str
    what: str
    id: str


@dataclass
class Dashboard:
    open_store: Callable[[], Store]
    rules: pages.RulesInfo
    auth: Auth
    store_label: str = ""
    namespace: str = "default"
    store: Store | None = None
    #: reverse proxies whose X-Forwarded-* headers are believed, and the cookie's Secure mode
    #: (keyrouter/web/proxy.py)
    proxies: Proxies = field(default_factory=Proxies)
    secure_cookie: str = "auto"

    def __post_init__(self) -> None:
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), auto_reload=False,
                               autoescape=select_autoescape(default=True, default_for_string=True))
        self.deadline = pages.deadline_function()
        self.actions: deque[Action] = deque(maxlen=50)

    # -- plumbing ---------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Compile the templates and build the holiday calendar before the first request, so the
        first page is as fast as the rest."""
        for name in self.env.list_templates():
            self.env.get_template(name)
        pages.business_hours_left(self.deadline(time.time()), time.time())

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        session: Session | None = request.scope.get("keyrouter.session")
        html = self.env.get_template(name).render(
            nav=NAV, path=request.url.path, auth=self.auth, session=session,
            csrf=self.auth.csrf_token(session) if session else "", **ctx)
        return HTMLResponse(html, status_code=status)

    def guarded(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
        """With a token, a request needs the bearer header or a valid session cookie; a person
        without one is sent to the login form, a script gets 401."""

        async def run(request: Request) -> Response:
            if self.auth.required:
                session = self.auth.session(request.cookies.get(COOKIE))
                if session is not None:
                    request.scope["keyrouter.session"] = session
                elif self.auth.bearer_ok(request.headers.get("authorization")):
                    request.scope["keyrouter.bearer"] = True
                elif request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                    return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
                else:
                    return Response("sign in: a session cookie or Authorization: Bearer <token>\n",
                                    401, {"www-authenticate": "Bearer"}, media_type="text/plain")
            return await endpoint(request)

        return run

    @property
    def db(self) -> Store:
        assert self.store is not None, "the store opens with the app's lifespan"
        return self.store

    # -- pages ------------------------------------------------------------------------------
    async def status(self, request: Request) -> Response:
        counts = await self.db.counts()
        held = await self.db.dead_letter_count()
        now = time.time()
        inbox = await status_info.inbox(self.db, now)
        poll = await status_info.last_poll(self.db, now)
        routed = await status_info.routed(self.db, now)
        chart = bar_chart(f"messages per rule, last {routed.window} hours",
                          [(rule, n, True) for rule, n in routed.totals])
        return self.render(request, "status.html", counts=counts, held=held, rules=self.rules,
                           inbox=inbox, poll=poll, routed=routed, routed_chart=chart,
                           loaded=timefmt.display(self.rules.loaded_at),
                           changed=status_info.rules_on_disk_changed(self.rules),
                           store=self.store_label, namespace=self.namespace,
                           now=timefmt.display(now))

    async def surveys(self, request: Request) -> Response:
        views = []
        for survey, declared in self.rules.surveys.items():
            view = pages.survey_view(await self.db.survey_results(survey), declared)
            views.append((view, bar_chart(f"survey {survey}", view.bars)))
        conversations = await conversation_views(self.db, self.rules.conversations, time.time())
        return self.render(request, "surveys.html", views=views, conversations=conversations)

    async def survey_csv(self, request: Request) -> Response:
        survey = request.path_params["survey"]
        if survey not in self.rules.surveys:
            return self.render(request, "error.html", 404, message="No such survey in the rules.")
        results = await self.db.survey_results(survey)
        return _csv(exports.survey_csv(results, self.rules.surveys[survey]), f"survey-{survey}.csv")

    async def optouts(self, request: Request) -> Response:
        f, problems = pages.LedgerFilter.parse(request.query_params)
        before = pages.decode_cursor(request.query_params.get("before"))
        page = await pages.ledger_page(self.db, f, before)
        now = time.time()
        rows = [pages.ledger_row(e, self.deadline, now) for e in page.entries]
        waiting, more_pending = (await pages.pending_rows(self.db, f, self.rules)
                                 if before is None else ([], False))
        pending = [pages.ledger_row(p.entry, self.deadline, now, pending=True, where=p.where)
                   for p in waiting[: pages.PENDING_SHOWN]]
        older = None
        if page.next is not None:
            older = "?" + urlencode({**f.query(), "before": pages.encode_cursor(page.next)})
        return self.render(request, "optouts.html", rows=rows, f=f, problems=problems,
                           pending=pending, pending_total=len(waiting), more_pending=more_pending,
                           scan=SCAN, searched=page.searched, ledger_scan=pages.LEDGER_SCAN,
                           searched_to=timefmt.display(page.next[0]) if page.next else "",
                           older=older, first=before is None,
                           newest="?" + urlencode(f.query()), effects=pages.EFFECTS,
                           csv="/optouts.csv?" + urlencode(f.query()),
                           full=self.auth.required)

    async def optouts_csv(self, request: Request) -> Response:
        f, problems = pages.LedgerFilter.parse(request.query_params)
        if problems:
            return Response("; ".join(problems) + "\n", 400, media_type="text/plain")
        full = self.auth.required  # full numbers only behind the token
        body = pages.ledger_csv(self.db, f, full, self.rules)
        return StreamingResponse(body, media_type="text/csv; charset=utf-8", headers={
            "content-disposition": 'attachment; filename="optouts.csv"'})

    async def dead_letters(self, request: Request) -> Response:
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        rule = request.query_params.get("rule") or None
        held = await self.db.dead_letter_count()
        offset = (page - 1) * pages.PAGE_SIZE
        if rule is None:
            letters = await self.db.dead_letters_page(offset, pages.PAGE_SIZE)
            last_page = max(1, -(-held // pages.PAGE_SIZE))
            last: int | None = last_page
            more = page < last_page
        else:  # filtered: no count (it would read them all); a page and whether more follow
            letters = await self.db.dead_letters_page(offset, pages.PAGE_SIZE + 1, rules=[rule])
            more, last = len(letters) > pages.PAGE_SIZE, None
            letters = letters[: pages.PAGE_SIZE]
        keep = {"rule": rule} if rule else {}
        return self.render(request, "dead_letters.html", rows=[pages.dead_row(d) for d in letters],
                           held=held, page=page, last=last, more=more, rule=rule or "",
                           rules=self.rules.rule_names, actions=list(reversed(self.actions)),
                           newer="?" + urlencode({**keep, "page": page - 1}),
                           older="?" + urlencode({**keep, "page": page + 1}),
                           done=request.query_params.get("done", ""))

    async def dead_letter(self, request: Request) -> Response:
        d = await self.db.get_dead_letter(request.path_params["id"])
        if d is None:
            return self.render(request, "error.html", 404, message="No such dead letter (retried or "
                               "dropped already?).")
        return self.render(request, "dead_letter.html", d=pages.dead_row(d), raw=pages.raw_row_text(d))

    async def change_dead(self, request: Request) -> Response:
        """POST /dead-letters/{id}/retry|drop: token only, CSRF-checked for sessions, logged."""
        if not self.auth.can_change:
            return Response("read-only: start the dashboard with KEYROUTER_DASHBOARD_TOKEN\n", 403,
                            media_type="text/plain")
        session: Session | None = request.scope.get("keyrouter.session")
        form = await request.form()
        if session is not None and not self.auth.csrf_ok(session, str(form.get("csrf") or "")):
            return Response("CSRF check failed: reload the page and try again\n", 403,
                            media_type="text/plain")
        id, action = request.path_params["id"], request.path_params["action"]
        if action not in ("retry", "drop"):
            return Response("unknown action: retry or drop\n", 404, media_type="text/plain")
        if action == "drop" and form.get("confirm") != "yes":  # a drop cannot be undone: ask once
            d = await self.db.get_dead_letter(id)
            if d is None:
                return RedirectResponse("/dead-letters?" + urlencode({"done": f"{id} was not a dead letter"}),
                                        303)
            return self.render(request, "confirm_drop.html", d=pages.dead_row(d))
        change = self.db.retry_dead if action == "retry" else self.db.drop_dead
        ok = await change(id)
        who = session.who if session else "bearer token"
        client = self.proxies.client(request)
        verb = "retried" if action == "retry" else "dropped"
        logger.info("dashboard: dead letter %s %s by %s (%s)%s", id, verb, who, client,
                    "" if ok else ": it was not a dead letter any more")
        if ok:
            self.actions.append(Action(timefmt.display(time.time()), who, verb, id))
        return RedirectResponse("/dead-letters?" + urlencode({"done": f"{verb} {id}" if ok else
                                                               f"{id} was not a dead letter"}), 303)

    # -- signing in ---------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        nxt = _local(request.query_params.get("next", "/"))
        if not self.auth.required:
            return RedirectResponse(nxt, 303)
        if request.method == "GET":
            return self.render(request, "login.html", next=nxt, error="")
        client = self.proxies.client(request)
        form = await request.form()
        nxt = _local(str(form.get("next") or "/"))
        if self.auth.login_blocked(client):
            return self.render(request, "login.html", 429, next=nxt,
                               error="Too many failed attempts; wait a minute.")
        if not self.auth.token_matches(str(form.get("token") or "")):
            self.auth.login_failed(client)
            logger.warning("dashboard: failed sign-in from %s", client)
            return self.render(request, "login.html", 401, next=nxt, error="Wrong token.")
        who = str(form.get("name") or "")
        response = RedirectResponse(nxt, 303)
        response.set_cookie(COOKIE, self.auth.new_cookie(who), max_age=SESSION_SECONDS, httponly=True,
                            samesite="strict", secure=self.cookie_secure(request), path="/")
        logger.info("dashboard: %s signed in from %s", clean_name(who), client)
        return response

    def cookie_secure(self, request: Request) -> bool:
        """The session cookie's Secure flag: KEYROUTER_DASHBOARD_SECURE_COOKIE, `auto` following
        the request's scheme (as a trusted proxy reports it)."""
        if self.secure_cookie != "auto":
            return self.secure_cookie == "always"
        return self.proxies.https(request)

    async def logout(self, request: Request) -> Response:
        session: Session | None = request.scope.get("keyrouter.session")
        form = await request.form()
        if session is not None and not self.auth.csrf_ok(session, str(form.get("csrf") or "")):
            return Response("CSRF check failed\n", 403, media_type="text/plain")
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response


async def _unavailable(request: Request, exc: Exception) -> Response:
    """Outside the middleware (Starlette's last resort), so the headers are set here."""
    logger.error("dashboard: %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    body = "The store did not answer (or the page failed); try again shortly.\n"
    return Response(body, 503, {k.decode(): v.decode() for k, v in HEADERS}, media_type="text/plain")


def _local(target: str) -> str:
    """Only same-site paths after login: never an open redirect."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def _csv(text: str, filename: str) -> Response:
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


def dashboard_app(settings: Settings, host: str, rules: pages.RulesInfo,
                  token: str | None) -> Starlette:
    """The dashboard over `settings`' store and namespace, served on `host` (Host header checked
    when it is a loopback address); the same for `keyrouter dashboard` and `run --dashboard`.
    A reverse-proxy setting that cannot be read is a ValueError."""
    horizon = settings.horizon_delta()
    return create_app(lambda: open_store(settings.store, settings.namespace, horizon), rules,
                      token=token, allowed_hosts=loopback_hosts(host),
                      store_label=status_info.store_label(settings.store),
                      namespace=settings.namespace,
                      trusted_proxies=settings.dashboard_trusted_proxies,
                      secure_cookie=settings.dashboard_secure_cookie)


def create_app(open_store: Callable[[], Store], rules: pages.RulesInfo, *, token: str | None = None,
               allowed_hosts: list[str] | None = None, store_label: str = "",
               namespace: str = "default", trusted_proxies: str | None = None,
               secure_cookie: str | None = None) -> Starlette:
    """`open_store` runs in the lifespan; `allowed_hosts` (Host header check, against DNS
    rebinding of a loopback dashboard) None checks nothing; `trusted_proxies` and
    `secure_cookie` are the reverse-proxy settings (keyrouter/web/proxy.py; a bad value is a
    ValueError naming the variable)."""
    d = Dashboard(open_store, rules, Auth(token), store_label, namespace,
                  proxies=Proxies(trusted_proxies), secure_cookie=parse_cookie_mode(secure_cookie))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        d.store = open_store()
        d.warm_up()
        try:
            yield
        finally:
            await d.store.close()

    g = d.guarded
    routes = [
        Route("/", g(d.status)),
        Route("/surveys", g(d.surveys)),
        Route("/surveys/{survey:path}.csv", g(d.survey_csv)),
        Route("/optouts", g(d.optouts)),
        Route("/optouts.csv", g(d.optouts_csv)),
        Route("/dead-letters", g(d.dead_letters)),
        Route("/dead-letters/{id:path}/{action:str}", g(d.change_dead), methods=["POST"]),
        Route("/dead-letters/{id:path}", g(d.dead_letter)),
        Route("/login", d.login, methods=["GET", "POST"]),
        Route("/logout", g(d.logout), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={Exception: _unavailable})
    app.state.dashboard = d
    return app
