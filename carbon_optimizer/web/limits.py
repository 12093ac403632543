"""Rate limits (flask-limiter): RATE_LIMIT_DEFAULT is one budget per client across the API, and a
route may declare a limit of its own with `@limit(...)`, e.g. POST /optimize's RATE_LIMIT_OPTIMIZE.
Clients are told apart by `auth.client_identity` (a valid API key, else the client IP). Counters
live in Redis when REDIS_URL is set, so N per minute holds across Gunicorn workers; with Redis down
each worker falls back to in-memory counters, and /health says so. /health and /metrics are never
limited.

Only requests that no limit refused are charged: a 429 gives back what it took from every budget
(so a client hammering one limit does not keep its other budgets spent). A Redis error or timeout
never turns into an error answer: the request is checked against the in-process fallback or, when
the fallback is already on, served unchecked (fail open); each such error is logged and counted in
carbon_rate_limit_storage_errors_total.

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
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from flask import Flask, current_app, g, has_request_context, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import RateLimitItem
from limits.strategies import STRATEGIES, FixedWindowRateLimiter

from carbon_optimizer.ops import metrics
from carbon_optimizer.settings import Settings
from carbon_optimizer.web.auth import client_identity
from carbon_optimizer.web.errors import error_response
from carbon_optimizer.web.pages import STATIC_PREFIX

EXTENSION = "carbon_limits"
UNLIMITED_PATHS = ("/health", "/metrics")
_DECLARED = "_carbon_rate_limit"
_HITS = "_carbon_rate_limit_hits"
_STRATEGY = "carbon-fixed-window"

log = logging.getLogger(__name__)


def _storage_error(exc: Exception) -> None:
    # The exception's type only: its text could one day carry a storage key (the client's identity).
    metrics.RATE_LIMIT_STORAGE_ERRORS.inc()
    log.warning("rate-limit storage error (%s): request checked in-process or served unchecked",
                type(exc).__name__)


class _ChargedFixedWindow(FixedWindowRateLimiter):
    """flask-limiter's fixed window, plus: each hit of this request is remembered, so that a
    refused request can give it back (`refund_hits`), and each storage error is counted before
    flask-limiter handles it (fallback to memory, or with swallow_errors, fail open).

    Why hit-then-refund rather than flask-limiter's `deduct_when`: deduct_when tests first and
    charges after the response, so concurrent requests all pass the test and more than N per
    window get through; an atomic increment, given back on refusal, never admits more than N."""

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        try:
            allowed = super().hit(item, *identifiers, cost=cost)
        except Exception as exc:
            _storage_error(exc)
            raise
        if has_request_context():
            g.setdefault(_HITS, []).append((self, item, identifiers, cost))
        return allowed

    def test(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        try:
            return super().test(item, *identifiers, cost=cost)
        except Exception as exc:
            _storage_error(exc)
            raise

    def get_window_stats(self, item: RateLimitItem, *identifiers: str):
        try:
            return super().get_window_stats(item, *identifiers)
        except Exception as exc:
            _storage_error(exc)
            raise


STRATEGIES[_STRATEGY] = _ChargedFixedWindow  # type: ignore[assignment]  (how flask-limiter finds it)


def refund_hits() -> None:
    """Give back every hit this request made: it was refused, so it uses up no budget."""
    for strategy, item, identifiers, cost in g.pop(_HITS, ()):
        key = item.key_for(*identifiers)
        try:
            if strategy.storage.incr(key, item.get_expiry(), amount=-cost) < 0:
                strategy.storage.clear(key)  # the window ended meanwhile: no credit in the next one
        except Exception as exc:  # noqa: BLE001
            _storage_error(exc)


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
    # The Redis keys start with CACHE_KEY_PREFIX, as every key of the service does (a Redis ACL
    # key pattern on it then covers the limiter): `limits` puts its own "LIMITS:" first otherwise.
    options = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5,
               "key_prefix": f"{settings.cache_key_prefix}ratelimit"} if settings.redis_url else {}
    limiter = Limiter(
        key_func=client_identity,
        application_limits=[settings.rate_limit_default],   # one budget per client across routes
        storage_uri=storage, storage_options=options,
        in_memory_fallback_enabled=bool(settings.redis_url),  # Redis down: per-worker limits, not errors
        headers_enabled=True,
        # A storage error after the fallback is on (a Redis call already in flight when it froze)
        # serves the request unchecked rather than answering 500.
        swallow_errors=True,
        strategy=_STRATEGY)
    # The pages' static files are not API calls: loading /docs must not spend a client's budget.
    limiter.request_filter(lambda: request.path in UNLIMITED_PATHS
                           or request.path.startswith(STATIC_PREFIX))
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
        refund_hits()
        # flask-limiter adds Retry-After and X-RateLimit-* to this answer after the handler.
        return error_response(429, f"rate limit exceeded ({exc.description}); retry later")


def health_check(redis_reachable: bool) -> dict:
    """The rate-limit line of /health; "fallback" (Redis unreachable) makes the service degraded.
    The counters live in the cache's Redis (REDIS_URL), so /health's one probe of it
    (`redis_reachable`) answers for both: a second PING would double /health's time when Redis
    hangs."""
    state: _AppLimits = current_app.extensions[EXTENSION]
    settings: Settings = current_app.extensions["carbon_settings"]
    if state.limiter is None:
        return {"status": "disabled"}
    if not settings.redis_url:
        return {"status": "ok", "storage": "memory", "detail": "no REDIS_URL: limits are per worker"}
    return {"status": "ok", "storage": "redis"} if redis_reachable else {
        "status": "fallback", "storage": "memory",
        "detail": "Redis unreachable: in-process limits per worker until it is back"}
