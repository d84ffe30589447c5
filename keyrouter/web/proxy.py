"""The dashboard behind a reverse proxy: who the client is, and whether the cookie is `Secure`.

Behind nginx or a load balancer every request arrives from the proxy's address, so the login
limiter would block the proxy (everyone) after a few wrong tokens, and the request's scheme is
http even when people use https.  Two settings (docs/ordering-and-masking.md, "Behind a reverse
proxy"):
- KEYROUTER_DASHBOARD_TRUSTED_PROXIES: comma-separated addresses or networks of the proxies
  (`10.0.0.5, 172.16.0.0/12`).  Only when the TCP peer is one of them are `X-Forwarded-For`
  (the rightmost address that is not a trusted proxy is the client) and `X-Forwarded-Proto`
  believed; from anyone else the headers are ignored, so a client cannot choose its own address.
- KEYROUTER_DASHBOARD_SECURE_COOKIE: `auto` (the default: Secure when the request is https,
  directly or as a trusted proxy says), `always` (TLS ends at the proxy and people only use
  https), or `never` (plain http on a trusted network).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import Request

__all__ = ["COOKIE_MODES", "Proxies", "parse_cookie_mode"]

COOKIE_MODES = ("auto", "always", "never")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Proxies:
    """The trusted proxies; an empty set trusts none (the peer is the client)."""

    def __init__(self, spec: str | Iterable[str] | None = None) -> None:
        items = spec.split(",") if isinstance(spec, str) else list(spec or ())
        self.networks: list[Network] = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"KEYROUTER_DASHBOARD_TRUSTED_PROXIES: {item!r} is not an IP "
                                 "address or network (e.g. 10.0.0.5 or 172.16.0.0/12)") from None

    def trusted(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client(self, request: Request) -> str:
        """The client's address: the peer, or from a trusted proxy the rightmost address of
        X-Forwarded-For that is not itself a trusted proxy."""
        peer = request.client.host if request.client else "?"
        if not self.trusted(peer):
            return peer
        hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",")]
        hops = [h for h in hops if h]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer

    def https(self, request: Request) -> bool:
        """True when the request is https: directly, or as a trusted proxy's X-Forwarded-Proto
        says (its last value: the one the nearest proxy set)."""
        if request.url.scheme == "https":
            return True
        peer = request.client.host if request.client else None
        proto = request.headers.get("x-forwarded-proto", "")
        return self.trusted(peer) and proto.split(",")[-1].strip().lower() == "https"


def parse_cookie_mode(value: str | None) -> str:
    """KEYROUTER_DASHBOARD_SECURE_COOKIE, checked: auto (default), always or never."""
    mode = (value or "auto").strip().lower()
    if mode not in COOKIE_MODES:
        raise ValueError(f"KEYROUTER_DASHBOARD_SECURE_COOKIE must be one of {', '.join(COOKIE_MODES)}, "
                         f"not {value!r}")
    return mode
