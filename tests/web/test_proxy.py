"""The dashboard behind a reverse proxy: the login limiter keys on the client named by a TRUSTED
proxy's X-Forwarded-For (never on the proxy, never on a header from anyone else), and the
session cookie's Secure flag follows the setting and the proxy's X-Forwarded-Proto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyrouter.settings import Settings
from keyrouter.web.proxy import Proxies, parse_cookie_mode

from .test_http import TOKEN

PROXY = "10.0.0.5"


def client_via(make_app: Callable[..., Any], peer: str, **kw: Any) -> TestClient:
    return TestClient(make_app(token=TOKEN, **kw), client=(peer, 40000))


def fail_five_times(client: TestClient, forwarded_for: str) -> None:
    for _ in range(5):
        r = client.post("/login", data={"token": "guess"},
                        headers={"X-Forwarded-For": forwarded_for})
        assert r.status_code == 401


def test_behind_a_trusted_proxy_the_limiter_keys_on_each_client(
        make_app: Callable[..., Any]) -> None:
    with client_via(make_app, PROXY, trusted_proxies="10.0.0.0/24") as client:
        fail_five_times(client, "203.0.113.7")
        blocked = client.post("/login", data={"token": TOKEN},
                              headers={"X-Forwarded-For": "203.0.113.7"})
        assert blocked.status_code == 429
        # another person behind the same proxy signs in: the proxy itself is not blocked
        other = client.post("/login", data={"token": TOKEN, "next": "/"}, follow_redirects=False,
                            headers={"X-Forwarded-For": "198.51.100.20, 10.0.0.9"})
        assert other.status_code == 303


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
        make_app: Callable[..., Any]) -> None:
    with client_via(make_app, "192.0.2.44", trusted_proxies="10.0.0.0/24") as client:
        # a client cannot escape the limiter by inventing a new X-Forwarded-For each time
        for i in range(5):
            assert client.post("/login", data={"token": "guess"},
                               headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code == 401
        assert client.post("/login", data={"token": TOKEN},
                           headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 429


def test_without_the_setting_a_proxy_is_one_client(make_app: Callable[..., Any]) -> None:
    with client_via(make_app, PROXY) as client:
        fail_five_times(client, "203.0.113.7")
        assert client.post("/login", data={"token": TOKEN},
                           headers={"X-Forwarded-For": "198.51.100.20"}).status_code == 429


def session_cookie_header(client: TestClient, **headers: str) -> str:
    r = client.post("/login", data={"token": TOKEN, "next": "/"}, follow_redirects=False,
                    headers=headers)
    assert r.status_code == 303
    return r.headers["set-cookie"]


@pytest.mark.parametrize(("mode", "proto", "secure"), [
    ("auto", "https", True), ("auto", "http", False), (None, "https", True),
    ("always", "http", True), ("never", "https", False),
])
def test_the_cookie_secure_flag(make_app: Callable[..., Any], mode: str | None, proto: str,
                                secure: bool) -> None:
    with client_via(make_app, PROXY, trusted_proxies=PROXY, secure_cookie=mode) as client:
        cookie = session_cookie_header(client, **{"X-Forwarded-Proto": proto})
    assert ("; secure" in cookie.lower()) is secure, cookie
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()


def test_x_forwarded_proto_from_an_untrusted_peer_does_not_make_it_secure(
        make_app: Callable[..., Any]) -> None:
    with client_via(make_app, "192.0.2.44", trusted_proxies=PROXY) as client:
        cookie = session_cookie_header(client, **{"X-Forwarded-Proto": "https"})
    assert "; secure" not in cookie.lower()


def test_settings_are_read_and_checked() -> None:
    s = Settings.from_env({"KEYROUTER_DASHBOARD_TRUSTED_PROXIES": "10.0.0.5, 172.16.0.0/12",
                           "KEYROUTER_DASHBOARD_SECURE_COOKIE": "always"})
    assert s.dashboard_trusted_proxies == "10.0.0.5, 172.16.0.0/12"
    assert s.dashboard_secure_cookie == "always"
    proxies = Proxies(s.dashboard_trusted_proxies)
    assert proxies.trusted("172.20.1.1") and proxies.trusted("10.0.0.5")
    assert not proxies.trusted("10.0.0.6") and not proxies.trusted("testclient")
    with pytest.raises(ValueError, match="KEYROUTER_DASHBOARD_TRUSTED_PROXIES"):
        Proxies("10.0.0.300")
    with pytest.raises(ValueError, match="KEYROUTER_DASHBOARD_SECURE_COOKIE"):
        parse_cookie_mode("sometimes")
