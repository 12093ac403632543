"""What every answer and every request goes through on the HTTP level: the trusted-proxy count
(ProxyFix), CORS, security headers, and no debug mode outside development."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from carbon_optimizer.settings import Settings
from carbon_optimizer.web.auth import API_KEY_HEADER

log = logging.getLogger(__name__)

_COMMON_HEADERS = [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                   ("Referrer-Policy", "no-referrer")]
_API_HEADERS = _COMMON_HEADERS + [("Cache-Control", "no-store"),
                                  ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")]


def init_app(app: Flask, settings: Settings) -> None:
    # No interactive debugger or debug error pages outside development.
    if settings.environment != "development" and app.debug:
        log.warning("debug mode requested outside ENVIRONMENT=development: turned off")
        app.debug = False

    # Behind N proxies (the ALB is one), the client is the Nth address from the right of
    # X-Forwarded-For; what a client writes further left is ignored.
    if settings.trusted_proxy_count:
        n = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]

    if settings.cors_origins:
        CORS(app, resources={r"/api/*": {"origins": settings.cors_origins}},
             allow_headers=["Content-Type", API_KEY_HEADER], methods=["GET", "POST", "OPTIONS"],
             expose_headers=["Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                             "X-RateLimit-Reset"],
             supports_credentials=False, max_age=600)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        # No view sets these itself, so they are appended without a lookup (this runs per request).
        response.headers.extend(_API_HEADERS if request.path.startswith("/api/") else _COMMON_HEADERS)
        return response
