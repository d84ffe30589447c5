"""Who may see and change what.  Pure functions over the token: no framework types here.

- No token: read-only, and the CLI binds only to loopback.
- A token: every request needs it, as a bearer header (scripts) or a signed session cookie set by
  the login form (people).  The cookie holds the name typed at login (for the action log), its
  issue time and an HMAC keyed by the token, never the token itself; changing the token signs
  everyone out.  Changes (retry, drop) are POST forms carrying a CSRF token derived from the
  session, so another site cannot forge them even if the browser sent the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from keyrouter.settings import Settings

COOKIE = "keyrouter_session"
SESSION_SECONDS = 12 * 3600
MAX_NAME = 60
#: Failed logins allowed per client address per window, before answers are refused for a while.
LOGIN_FAILURES, LOGIN_WINDOW = 5, 60.0


@dataclass(frozen=True)
class Session:
    who: str
    issued: float
    cookie: str  # the raw cookie value: the CSRF token derives from it


class Auth:
    """`token` None: open and read-only.  `clock` lets tests move time."""

    def __init__(self, token: str | None, clock: Callable[[], float] = time.time) -> None:
        self._token = token.encode() if token else None
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def __repr__(self) -> str:
        return f"Auth(token={'set' if self._token else 'none'})"

    @property
    def required(self) -> bool:
        return self._token is not None

    @property
    def can_change(self) -> bool:
        """Retry and Drop exist only behind a token."""
        return self._token is not None

    def _mac(self, purpose: str, data: str) -> str:
        assert self._token is not None
        return hmac.new(self._token, f"{purpose}\0{data}".encode(), hashlib.sha256).hexdigest()

    def token_matches(self, given: str | None) -> bool:
        if self._token is None or not given:
            return False
        return hmac.compare_digest(given.encode(), self._token)

    def bearer_ok(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def new_cookie(self, who: str) -> str:
        body = json.dumps({"who": clean_name(who), "at": int(self._clock())}, ensure_ascii=False)
        data = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        return f"{data}.{self._mac('session', data)}"

    def session(self, cookie: str | None) -> Session | None:
        if self._token is None or not cookie or "." not in cookie:
            return None
        data, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", data).encode()):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
            who, at = str(body["who"]), float(body["at"])
        except (ValueError, KeyError, TypeError):
            return None
        if not 0 <= self._clock() - at <= SESSION_SECONDS:
            return None
        return Session(who, at, cookie)

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.cookie)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf_token(session).encode())

    # -- a brake on guessing the token from one address ---------------------------------------
    def login_blocked(self, client: str) -> bool:
        recent = self._failures.get(client)
        now = self._clock()
        while recent and now - recent[0] > LOGIN_WINDOW:
            recent.popleft()
        return recent is not None and len(recent) >= LOGIN_FAILURES

    def login_failed(self, client: str) -> None:
        if len(self._failures) > 10_000:  # bounded: forget everyone rather than grow
            self._failures.clear()
        self._failures.setdefault(client, deque(maxlen=LOGIN_FAILURES)).append(self._clock())


def clean_name(who: str) -> str:
    """The name typed at login, as the action log shows it: printable, short."""
    text = "".join(ch for ch in str(who) if ch.isprintable()).strip()[:MAX_NAME]
    return text or "signed-in user"


def dashboard_token(settings: Settings) -> str | None:
    """KEYROUTER_DASHBOARD_TOKEN, or None when unset or empty (then the dashboard is read-only)."""
    return settings.dashboard_token.get_secret_value() if settings.dashboard_token else None


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_hosts(host: str) -> list[str] | None:
    """The Host headers a loopback dashboard accepts (against DNS rebinding); None checks none."""
    if not is_loopback(host):
        return None
    return ["localhost", "127.0.0.1", "[::1]", "::1", host.strip("[]")]
