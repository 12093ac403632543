"""What every answer and every request goes through on the HTTP level: the trusted proxies (whose
X-Forwarded-For names the client), CORS, security headers, and no debug mode outside development."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Callable, Iterable, Optional

from flask import Flask, Response, request
from flask_cors import CORS

from carbon_optimizer.settings import Settings
from carbon_optimizer.web.auth import API_KEY_HEADER

log = logging.getLogger(__name__)

_COMMON_HEADERS = [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                   ("Referrer-Policy", "no-referrer")]
# Everything else (the pages, their static files, /health): scripts and styles only from files this
# service serves, no inline script or style element, requests only to this origin. data: images are
# the icons inside Swagger UI's stylesheet.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
_PAGE_HEADERS = _COMMON_HEADERS + [("Content-Security-Policy", PAGE_CSP)]
_API_HEADERS = _COMMON_HEADERS + [("Cache-Control", "no-store"),
                                  ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")]


def _address(text: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    return getattr(address, "ipv4_mapped", None) or address


class TrustedProxies:
    """WSGI middleware: the client address from X-Forwarded-For, believed only as far as trusted
    proxies wrote it. From the direct peer leftwards, at most `count` hops, each step is taken only
    while the address at hand is inside `networks`: a peer outside them is the client itself, and
    what it wrote in the header is ignored (so it cannot pick its rate-limit identity or pass the
    /metrics allowlist). X-Forwarded-Proto is read at the same hop."""

    def __init__(self, app: Callable[..., Any], count: int, networks: Iterable[str]):
        self.app = app
        self.count = count
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def _trusted(self, text: str) -> bool:
        address = _address(text)
        return address is not None and any(address in network for network in self.networks)

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        peer = environ.get("REMOTE_ADDR", "")
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "").split(",")
        client, hops = peer, 0
        while hops < min(self.count, len(forwarded)) and self._trusted(client):
            candidate = forwarded[-1 - hops].strip()
            if _address(candidate) is None:  # no address where one belongs: keep the last hop read
                break
            client, hops = candidate, hops + 1
        if hops:
            environ["werkzeug.proxy_fix.orig"] = {"REMOTE_ADDR": peer,
                                                  "wsgi.url_scheme": environ.get("wsgi.url_scheme")}
            environ["REMOTE_ADDR"] = client
            protos = [p.strip() for p in environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")]
            if len(protos) >= hops and protos[-hops] in ("http", "https"):
                environ["wsgi.url_scheme"] = protos[-hops]
        return self.app(environ, start_response)


def init_app(app: Flask, settings: Settings) -> None:
    # No interactive debugger or debug error pages outside development.
    if settings.environment != "development" and app.debug:
        log.warning("debug mode requested outside ENVIRONMENT=development: turned off")
        app.debug = False

    # Behind N proxies (the ALB is one), the client is the Nth address from the right of
    # X-Forwarded-For, provided each hop on the way is a proxy in TRUSTED_PROXY_CIDRS; what a
    # client writes further left, or sends straight to the port, is ignored. Without networks
    # nothing is trusted (load_settings refuses a count without them).
    if settings.trusted_proxy_count and settings.trusted_proxy_cidrs:
        app.wsgi_app = TrustedProxies(  # type: ignore[method-assign]
            app.wsgi_app, settings.trusted_proxy_count, settings.trusted_proxy_cidrs)

    if settings.cors_origins:
        CORS(app, resources={r"/api/*": {"origins": settings.cors_origins}},
             allow_headers=["Content-Type", API_KEY_HEADER], methods=["GET", "POST", "OPTIONS"],
             expose_headers=["Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                             "X-RateLimit-Reset"],
             supports_credentials=False, max_age=600)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        # No view sets these itself, so they are appended without a lookup (this runs per request).
        response.headers.extend(_API_HEADERS if request.path.startswith("/api/") else _PAGE_HEADERS)
        return response
