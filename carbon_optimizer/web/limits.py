"""Rate limits (flask-limiter): RATE_LIMIT_DEFAULT is one budget per client across the API, and a
route may declare a limit of its own with `@limit(...)`, e.g. POST /optimize's RATE_LIMIT_OPTIMIZE.
Clients are told apart by `auth.client_identity` (a valid API key, else the client IP). Counters
live in Redis when REDIS_URL is set, so N per minute holds across Gunicorn workers; with Redis down
each worker falls back to in-memory counters, and /health says so. /health and /metrics are never
limited.

Why one Limiter per app, not the usual module-level instance: flask-limiter 4 keeps its storage,
its key prefix, its enabled flag and its registry of limits on the Limiter object, and `init_app`
overwrites them, so one instance shared by several apps (the tests build many, with different
settings) would give every app the last one's storage and switch. Each app's Limiter is
therefore built in `init_app` and kept in `app.extensions`; the `limit` decorator records the
declaration on the view function, and each app's Limiter enforces it, found by the view itself
rather than by endpoint name, so a renamed route keeps its limit.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from flask import Flask, current_app, request
from flask_limiter import Limiter, RateLimitExceeded

from carbon_optimizer.ops import metrics
from carbon_optimizer.settings import Settings
from carbon_optimizer.web.auth import client_identity
from carbon_optimizer.web.errors import error_response

EXTENSION = "carbon_limits"
UNLIMITED_PATHS = ("/health", "/metrics")
_DECLARED = "_carbon_rate_limit"


def optimize_limit() -> str:
    """POST /optimize's limit, RATE_LIMIT_OPTIMIZE of the app serving the request."""
    settings: Settings = current_app.extensions["carbon_settings"]
    return settings.rate_limit_optimize


@dataclass(frozen=True)
class _Declaration:
    view: Callable[..., Any]           # the undecorated view
    value: Callable[[], str]           # the limit, read per request (from the app's settings)
    methods: Optional[tuple[str, ...]]


@dataclass
class _AppLimits:
    limiter: Optional[Limiter]         # None: RATE_LIMIT_ENABLED=false
    # Each declared view, wrapped by this app's Limiter (which registers the limit on wrapping).
    enforced: dict[_Declaration, Callable[..., Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enforce(self, declaration: _Declaration) -> Callable[..., Any]:
        guarded = self.enforced.get(declaration)
        if guarded is None:
            with self.lock:  # wrap once, even when the first requests arrive together
                guarded = self.enforced.get(declaration)
                if guarded is None:
                    if self.limiter is None:
                        raise RuntimeError("rate limits are disabled for this app")
                    methods = list(declaration.methods) if declaration.methods else None
                    guarded = self.limiter.limit(declaration.value, methods=methods)(declaration.view)
                    self.enforced[declaration] = guarded
        return guarded


def limit(value: Callable[[], str], *, methods: Optional[list[str]] = None):
    """Declare a rate limit on a view, below its route decorator:

        @api.post("/optimize")
        @limit(optimize_limit, methods=["POST"])
        def optimize(): ...

    `value` is called per request and returns a limit string ("20 per minute"). Where limits are
    disabled (RATE_LIMIT_ENABLED=false) the view runs unlimited.
    """
    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        if hasattr(view, _DECLARED):
            raise TypeError(f"{view.__qualname__} already declares a rate limit")
        declaration = _Declaration(view, value, tuple(methods) if methods else None)

        # functools.wraps keeps the view's qualified name, which is how flask-limiter knows the
        # view is limited before it runs (it then leaves the check to this wrapper).
        @functools.wraps(view)
        def limited(*args: Any, **kwargs: Any) -> Any:
            state: Optional[_AppLimits] = current_app.extensions.get(EXTENSION)
            if state is None:  # fail closed: a limited view never runs unlimited by oversight
                raise RuntimeError("rate limits are not set up for this app: call limits.init_app")
            if state.limiter is None:
                return current_app.ensure_sync(view)(*args, **kwargs)
            return state.enforce(declaration)(*args, **kwargs)

        setattr(limited, _DECLARED, declaration)
        return limited
    return decorate


def init_app(app: Flask, settings: Settings) -> None:
    """Build this app's Limiter from its settings. Install after the blueprints (so the declared
    limits are registered up front) and after `auth.identify_clients` (the key function needs it)."""
    if not settings.rate_limit_enabled:
        app.extensions[EXTENSION] = _AppLimits(limiter=None)
        return
    storage = settings.redis_url or "memory://"
    options = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5} if settings.redis_url else {}
    limiter = Limiter(
        key_func=client_identity,
        application_limits=[settings.rate_limit_default],   # one budget per client across routes
        storage_uri=storage, storage_options=options,
        in_memory_fallback_enabled=bool(settings.redis_url),  # Redis down: per-worker limits, not errors
        headers_enabled=True, key_prefix=f"{settings.cache_key_prefix}ratelimit",
        strategy="fixed-window")
    limiter.request_filter(lambda: request.path in UNLIMITED_PATHS)
    limiter.init_app(app)
    state = _AppLimits(limiter=limiter)
    app.extensions[EXTENSION] = state
    # Register every declared limit now, so that flask-limiter knows them from the first request;
    # a view added later is registered on its first call.
    for view in app.view_functions.values():
        declaration = getattr(view, _DECLARED, None)
        if declaration is not None:
            state.enforce(declaration)

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        metrics.RATE_LIMITED.inc()
        # flask-limiter adds Retry-After and X-RateLimit-* to this answer after the handler.
        return error_response(429, f"rate limit exceeded ({exc.description}); retry later")


def health_check() -> dict:
    """The rate-limit line of /health; "fallback" (Redis unreachable) makes the service degraded."""
    state: _AppLimits = current_app.extensions[EXTENSION]
    settings: Settings = current_app.extensions["carbon_settings"]
    if state.limiter is None:
        return {"status": "disabled"}
    if not settings.redis_url:
        return {"status": "ok", "storage": "memory", "detail": "no REDIS_URL: limits are per worker"}
    try:
        shared = bool(state.limiter.storage.check())
    except Exception:  # noqa: BLE001
        shared = False
    return {"status": "ok", "storage": "redis"} if shared else {
        "status": "fallback", "storage": "memory",
        "detail": "Redis unreachable: in-process limits per worker until it is back"}
