"""What makes the API safe to put on the internet: client API keys, /metrics access, rate limits,
CORS, the trusted-proxy count, security headers and no debug mode outside development.

`install_security(app, settings, secret_store)` wires it all into an app built by `create_app`.
Secrets are read from the store on every request, so a rotated key applies as soon as the store
refreshes; no key, token or hash of one is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from typing import Iterable, Optional

from flask import Flask, Response, current_app, g, request
from flask_cors import CORS
from flask_limiter import Limiter, RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix

from carbon_optimizer.ops import metrics
from carbon_optimizer.web.errors import error_response
from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.settings import Settings

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
_OPEN_PATHS = ("/health",)            # never authenticated, never limited (the ALB's probe)
_UNLIMITED_PATHS = ("/health", "/metrics")
_DOCS_PATHS = ("/docs", "/api/v1/openapi.json")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def matches_any(given: Optional[str], valid: Iterable[str]) -> bool:
    """Whether `given` is one of `valid`, in time that depends on neither which one nor how much of
    it matched: every key is compared, as equal-length digests, with hmac.compare_digest."""
    if not given:
        return False
    probe = _digest(given)
    found = False
    for key in valid:
        found |= hmac.compare_digest(probe, _digest(key))
    return found


def _presented_key() -> Optional[str]:
    # Leading and trailing blanks are not part of an HTTP field value (RFC 9110 5.5): strip them,
    # as every HTTP server in front of us does; anything else must match a key exactly.
    value = request.headers.get(API_KEY_HEADER)
    return value.strip(" \t") or None if value is not None else None


def _client_identity() -> str:
    """Rate-limit key: a valid API key (as a digest prefix, never the key), else the client IP."""
    if getattr(g, "api_client", None):
        return g.api_client
    return f"ip:{request.remote_addr or 'unknown'}"


_COMMON_HEADERS = [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                   ("Referrer-Policy", "no-referrer")]
_API_HEADERS = _COMMON_HEADERS + [("Cache-Control", "no-store"),
                                  ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")]


def install_security(app: Flask, settings: Settings, secret_store: SecretStore) -> None:
    # No interactive debugger or debug error pages outside development.
    if settings.environment != "development" and app.debug:
        log.warning("debug mode requested outside ENVIRONMENT=development: turned off")
        app.debug = False

    # Behind N proxies (the ALB is one), the client is the Nth address from the right of
    # X-Forwarded-For; what a client writes further left is ignored.
    if settings.trusted_proxy_count:
        n = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]

    @app.before_request
    def _identify() -> None:
        """Who is calling: remembered for the limiter's key; refusing is left to _authenticate,
        which runs after the limiter so that key guessing is rate limited too."""
        g.api_client = None
        keys = secret_store.current().api_keys
        presented = _presented_key()
        if keys and presented and matches_any(presented, keys):
            g.api_client = "key:" + hashlib.sha256(presented.encode()).hexdigest()[:16]

    limiter = _install_limiter(app, settings)

    @app.before_request
    def _authenticate() -> Optional[Response]:
        path = request.path
        if path in _OPEN_PATHS or request.method == "OPTIONS":  # CORS preflights carry no key
            return None
        if path == "/metrics":
            return _check_metrics(settings, secret_store)
        if path in _DOCS_PATHS:
            if settings.docs_access == "disabled":
                return error_response(404, "no such endpoint")
            if settings.docs_access == "public":
                return None
        if path.startswith("/api/") or (request.endpoint or "").startswith("api.") or path in _DOCS_PATHS:
            if secret_store.current().api_keys and not g.api_client:
                metrics.AUTH_FAILURES.labels("api").inc()
                return error_response(401, f"missing or invalid API key; send it in the {API_KEY_HEADER} header",
                                      headers={"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'})
        return None

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

    app.extensions["carbon_limiter"] = limiter


def _install_limiter(app: Flask, settings: Settings) -> Optional[Limiter]:
    if not settings.rate_limit_enabled:
        return None
    storage = settings.redis_url or "memory://"
    options = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5} if settings.redis_url else {}
    limiter = Limiter(
        key_func=_client_identity,
        application_limits=[settings.rate_limit_default],   # one budget per client across routes
        storage_uri=storage, storage_options=options,
        in_memory_fallback_enabled=bool(settings.redis_url),  # Redis down: per-worker limits, not errors
        headers_enabled=True, key_prefix=f"{settings.cache_key_prefix}ratelimit",
        strategy="fixed-window")
    limiter.request_filter(lambda: request.path in _UNLIMITED_PATHS)
    limiter.init_app(app)
    endpoint = "api.optimize"
    if endpoint in app.view_functions:
        app.view_functions[endpoint] = limiter.limit(
            settings.rate_limit_optimize, methods=["POST"])(app.view_functions[endpoint])

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        metrics.RATE_LIMITED.inc()
        # flask-limiter adds Retry-After and X-RateLimit-* to this answer after the handler.
        return error_response(429, f"rate limit exceeded ({exc.description}); retry later")

    return limiter


def _check_metrics(settings: Settings, secret_store: SecretStore) -> Optional[Response]:
    if settings.metrics_allow_cidrs:
        try:
            address = ipaddress.ip_address(request.remote_addr or "")
        except ValueError:
            address = None
        networks = [ipaddress.ip_network(c, strict=False) for c in settings.metrics_allow_cidrs]
        if address is None or not any(address in network for network in networks):
            metrics.AUTH_FAILURES.labels("metrics").inc()
            return error_response(403, "metrics are not served to this address")
    token = secret_store.current().metrics_token
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not matches_any(presented.strip(), [token]):
            metrics.AUTH_FAILURES.labels("metrics").inc()
            return error_response(401, "metrics need a bearer token",
                                  headers={"WWW-Authenticate": "Bearer"})
    return None


def health_checks() -> dict:
    """The secrets and rate-limit lines of /health, and whether either makes the service degraded."""
    checks = {"secrets": current_app.extensions["carbon_secrets"].status()}
    limiter: Optional[Limiter] = current_app.extensions.get("carbon_limiter")
    settings: Settings = current_app.extensions["carbon_settings"]
    if limiter is None:
        checks["rate_limit"] = {"status": "disabled"}
    elif not settings.redis_url:
        checks["rate_limit"] = {"status": "ok", "storage": "memory",
                                "detail": "no REDIS_URL: limits are per worker"}
    else:
        try:
            shared = bool(limiter.storage.check())
        except Exception:  # noqa: BLE001
            shared = False
        checks["rate_limit"] = {"status": "ok", "storage": "redis"} if shared else {
            "status": "fallback", "storage": "memory",
            "detail": "Redis unreachable: in-process limits per worker until it is back"}
    return checks


def degraded(checks: dict) -> bool:
    return (checks.get("secrets", {}).get("status") == "failing"
            or checks.get("rate_limit", {}).get("status") == "fallback")
