"""Rate limits (flask-limiter): one budget per client and route. A route may declare a limit of its
own with `@limit(...)`, e.g. POST /optimize's RATE_LIMIT_OPTIMIZE, and is then checked against
that limit only; every other API route spends RATE_LIMIT_DEFAULT, one budget shared by all of
them. Clients are told apart by `auth.client_identity` (a valid API key, else the client IP).
Counters live in Redis when REDIS_URL is set, so N per window holds across Gunicorn workers; with
Redis down each worker falls back to in-memory counters, and /health says so; each worker asks
Redis again every STORAGE_RECHECK_SECONDS and counts there as soon as it answers. /health, /metrics
(whose wrong tokens have a limit of their own, _FailureGuard), the page, /docs, their static files
and the OpenAPI document are never limited (the docs behind a key only with a valid one).

One Redis round trip per limited request, allowed or refused: the request's one limit is a
single flask-limiter application limit whose value and scope are chosen per request (the
route's own limit, else the default), checked before the API-key check so that wrong keys
count too; the hit is one Lua call that returns the count and the window's remaining time
together, and the X-RateLimit-* headers (and, on a 429 only, Retry-After) are computed from that
answer instead of asking Redis again. A refused hit stays counted, which costs nothing: it only adds to the budget
that refused it, which stays spent until its window ends anyway.

A Redis error or timeout never turns into an error answer: the request is checked against the
in-process fallback or, when the fallback is already on, served unchecked (fail open); each such
error is logged and counted in carbon_rate_limit_storage_errors_total.

Why one Limiter per app, not the usual module-level instance: flask-limiter 4 keeps its storage,
its key prefix, its enabled flag and its registry of limits on the Limiter object, and `init_app`
overwrites them, so one instance shared by several apps (the tests build many, with different
settings) would give every app the last one's storage and switch. Each app's Limiter is
therefore built in `init_app` and kept in the app's state (app_state.py). The `limit` decorator
records the declaration on the view function, found through the view itself rather than by
endpoint name, so a renamed route keeps its limit.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from flask import Flask, Response, current_app, g, has_request_context, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import STRATEGIES, FixedWindowRateLimiter
from limits.util import WindowStats

from carbon_optimizer.errors import FailureCode
from carbon_optimizer.ops import metrics
from carbon_optimizer.settings import Settings
from carbon_optimizer.web.app_state import RateLimiting, app_state
from carbon_optimizer.web.auth import DOCS_PATHS, api_client, client_identity
from carbon_optimizer.web.errors import error_response
from carbon_optimizer.web.pages import STATIC_PREFIX

_UNROUTED = "unrouted"
UNLIMITED_PATHS = ("/health", "/health/live", "/metrics")
PAGE_PATHS = ("/",)  # the page (pages.py); /docs is in auth.DOCS_PATHS, whose access DOCS_ACCESS sets
_DECLARED = "_carbon_rate_limit"
_WINDOWS = "_carbon_rate_limit_windows"
_WINDOW_READ = "_carbon_rate_limit_window"  # g: this request's window, read once (see _window)
_STRATEGY = "carbon-fixed-window"
_SCHEME = "carbon+"         # storage URI prefix that selects _CountingRedisStorage
_DEFAULT_SCOPE = "global"   # the budget every route without a limit of its own shares
# While Redis is marked down, how often a worker asks it again (a PING, within the 0.5 s socket
# timeout, by one request at a time): its own in-process counts stand in for no longer than this
# after Redis answers again.
STORAGE_RECHECK_SECONDS = 0.5
# Wrong /metrics bearer tokens per client IP and window; past it, 429 until the window ends.
METRICS_AUTH_FAILURES = "10 per 5 minutes"

log = logging.getLogger(__name__)


def _storage_error(exc: Exception) -> None:
    # The exception's type only: its text could one day carry a storage key (the client's identity).
    metrics.RATE_LIMIT_STORAGE_ERRORS.inc()
    log.warning("rate-limit storage error (%s): request checked in-process or served unchecked",
                type(exc).__name__)


class _CountingRedisStorage(RedisStorage):
    """`limits`' Redis storage, plus `incr_with_expiry`: the increment and the window's remaining
    time in one atomic call, so that the headers need no second and third command (GET, TTL).
    Chosen by the URI scheme "carbon+redis://" (or carbon+rediss://, carbon+redis+unix://)."""

    STORAGE_SCHEME = [f"{_SCHEME}redis", f"{_SCHEME}rediss", f"{_SCHEME}redis+unix"]

    # Sets the expiry whenever the key has none (not only when the count equals this hit's cost,
    # as `limits`' script does), so a key left without one can never block a client for good.
    SCRIPT_INCR_WITH_EXPIRY = """
local count = redis.call("incrby", KEYS[1], ARGV[2])
local ttl = redis.call("pttl", KEYS[1])
if ttl < 0 then
    redis.call("expire", KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1]) * 1000
end
return {count, ttl}
"""

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix(_SCHEME), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_with_expiry = self.get_connection().register_script(self.SCRIPT_INCR_WITH_EXPIRY)

    def incr_with_expiry(self, key: str, expiry: int, amount: int = 1) -> tuple[int, float]:
        """Add `amount` to the counter; its new value and when its window ends (epoch seconds)."""
        count, ttl_ms = self.lua_incr_with_expiry([self.prefixed_key(key)], [expiry, amount])
        return int(count), time.time() + int(ttl_ms) / 1000


class _OneCallFixedWindow(FixedWindowRateLimiter):
    """flask-limiter's fixed window, plus: on storage that can (`incr_with_expiry`), the hit
    remembers for this request the count and window end it got back, and the window stats for the
    headers are read from there rather than from Redis; each storage error is counted before
    flask-limiter handles it (fallback to memory, or with swallow_errors, fail open).

    Why hit-then-check rather than flask-limiter's `deduct_when`: deduct_when tests first and
    charges after the response, so concurrent requests all pass the test and more than N per
    window get through; an atomic increment compared with N never admits more than N."""

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        counting = getattr(self.storage, "incr_with_expiry", None)
        try:
            if counting is None:  # the in-memory fallback: no round trip to save
                return super().hit(item, *identifiers, cost=cost)
            key = item.key_for(*identifiers)
            count, window_end = counting(key, item.get_expiry(), amount=cost)
        except Exception as exc:
            _storage_error(exc)
            raise
        if has_request_context():
            g.setdefault(_WINDOWS, {})[key] = (count, window_end)
        return count <= item.amount

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        # Popped, not read: a later request sharing this app context (tests do) must not see it.
        known = g.get(_WINDOWS, {}).pop(item.key_for(*identifiers), None) if has_request_context() else None
        if known is not None:
            count, window_end = known
            return WindowStats(window_end, max(0, item.amount - count))
        try:
            return super().get_window_stats(item, *identifiers)
        except Exception as exc:
            _storage_error(exc)
            raise


STRATEGIES[_STRATEGY] = _OneCallFixedWindow  # type: ignore[assignment]  (how flask-limiter finds it)


class _Limiter(Limiter):
    """flask-limiter's Limiter with one change: while its storage is marked down, it asks Redis
    again every STORAGE_RECHECK_SECONDS, not after 1, 2, 4, ... 32 s as flask-limiter does. Its
    back-off kept each worker on its own fresh in-process counts for up to half a minute after
    Redis had come back: one key got 38 requests through a 20-per-minute window after a 10 s
    stall (issue 23.9)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recheck_lock = threading.Lock()
        self._recheck_at = 0.0

    # flask-limiter calls `self.__should_check_backend()`, which Python names this way.
    def _Limiter__should_check_backend(self) -> bool:
        now = time.monotonic()
        with self._recheck_lock:  # one thread per worker pays for the check, the others go on
            if now < self._recheck_at:
                return False
            self._recheck_at = now + STORAGE_RECHECK_SECONDS
            return True


def retry_after(window_end: float, now: float) -> int:
    """Whole seconds to wait until `window_end`, rounded up and at least 1: a client that sleeps
    what it is told arrives after the window, never at once (flask-limiter's truncation said 0 in
    a window's last second, and clients that slept 0 flooded the service)."""
    return max(1, math.ceil(window_end - now))


def _window(limiter: Limiter) -> Optional[tuple[float, int]]:
    """This request's window (its end, the hits left), or None (no limit, or the storage failed
    between the hit and now). Read once per request, from the hit's own answer: the 429 handler
    and the headers share it, so a refusal costs no second Redis call."""
    if _WINDOW_READ in g:
        return g.get(_WINDOW_READ)
    window = None
    current = limiter.current_limit
    if current is not None:
        try:
            window = current.window
        except Exception as exc:  # no headers, no error
            _storage_error(exc)
    setattr(g, _WINDOW_READ, window)
    return window


def _rate_limit_headers(limiter: Limiter, response: Response) -> Response:
    """X-RateLimit-* of the request's budget on every limited answer (flask-limiter's own headers
    put a Retry-After on successes, and truncated it to 0 in the last second; a 429's is the
    error writer's, from the same window)."""
    window = _window(limiter)
    g.pop(_WINDOW_READ, None)  # a later request sharing this app context (tests do) reads its own
    current = limiter.current_limit
    if current is None or window is None:
        return response
    window_end, remaining = window
    response.headers["X-RateLimit-Limit"] = str(current.limit.amount)
    response.headers["X-RateLimit-Remaining"] = str(remaining)
    # The window's end as flask-limiter states it (the next whole second); Retry-After counts to
    # the end itself, so it never exceeds the window's length, and now + Retry-After >= the end.
    response.headers["X-RateLimit-Reset"] = str(int(window_end + 1))
    return response


class _FailureGuard:
    """Counts failed /metrics token checks per client IP (auth.py asks it): after METRICS_AUTH_FAILURES
    in a window the address is refused until the window ends, whatever token it sends, so a guess
    is worth nothing once the budget is spent; an address that never fails (Prometheus) is never
    counted. In the limiter's Redis when there is one (shared by workers), in memory otherwise or
    while Redis fails."""

    def __init__(self, storage: Any) -> None:
        self._item = parse(METRICS_AUTH_FAILURES)
        self._primary = FixedWindowRateLimiter(storage)
        self._fallback = FixedWindowRateLimiter(MemoryStorage())

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._primary, method)(self._item, *args)
        except Exception as exc:  # Redis down: this worker counts on its own meanwhile
            _storage_error(exc)
            return getattr(self._fallback, method)(self._item, *args)

    def refused_for(self, address: str) -> Optional[int]:
        """Seconds to wait when `address` has no failures left, else None."""
        stats = self._call("get_window_stats", "metrics-auth", address)
        return None if stats.remaining > 0 else retry_after(stats.reset_time, time.time())

    def failed(self, address: str) -> None:
        self._call("hit", "metrics-auth", address)


def optimize_limit() -> str:
    """POST /optimize's limit, RATE_LIMIT_OPTIMIZE of the app serving the request."""
    return app_state().settings.rate_limit_optimize


@dataclass(frozen=True)
class _Declaration:
    value: Callable[[], str]           # the limit, read per request (from the app's settings)
    methods: Optional[frozenset[str]]  # None: every method


def _declared() -> Optional[_Declaration]:
    """The limit the requested view declares for this request's method, if any."""
    view = current_app.view_functions.get(request.endpoint or "")
    declaration: Optional[_Declaration] = getattr(view, _DECLARED, None)
    if declaration is None or (declaration.methods is not None and request.method not in declaration.methods):
        return None
    return declaration


def _request_limit() -> str:
    """The one limit of this request: the route's own, else RATE_LIMIT_DEFAULT."""
    declaration = _declared()
    if declaration is not None:
        return declaration.value()
    return app_state().settings.rate_limit_default


def _request_scope(endpoint: str) -> str:
    """Which budget the request spends: its route's own (named by endpoint), else the shared one."""
    return endpoint if _declared() is not None else _DEFAULT_SCOPE


def limit(value: Callable[[], str], *, methods: Optional[list[str]] = None):
    """Declare a rate limit on a view, below its route decorator:

        @api.post("/optimize")
        @limit(optimize_limit, methods=["POST"])
        def optimize(): ...

    `value` is called per request and returns a limit string ("20 per minute"). Requests to the
    view (with one of `methods`) spend this budget only, not RATE_LIMIT_DEFAULT. Where limits are
    disabled (RATE_LIMIT_ENABLED=false) the view runs unlimited.
    """
    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        if hasattr(view, _DECLARED):
            raise TypeError(f"{view.__qualname__} already declares a rate limit")

        @functools.wraps(view)
        def limited(*args: Any, **kwargs: Any) -> Any:
            # Fail closed: a limited view never runs unlimited because its app has no limiter.
            if app_state().rate_limiting is None:
                raise RuntimeError("rate limits are not set up for this app: call limits.init_app")
            return view(*args, **kwargs)

        setattr(limited, _DECLARED, _Declaration(
            value, frozenset(m.upper() for m in methods) if methods else None))
        return limited
    return decorate


def _unlimited(settings: Settings) -> bool:
    """Requests that spend no budget: /health, /metrics (its token failures have their own limit,
    auth.py), and the fixed documents a person loads: the page, /docs, their static files and the
    OpenAPI document. The documents that need an API key (DOCS_ACCESS=api_key) are unlimited only
    with a valid one: without, they spend the shared budget, or keys could be guessed through them
    without limit. The page's own API calls (optimize, forecast) are API calls like any other."""
    path = request.path
    if path in UNLIMITED_PATHS or path in PAGE_PATHS or path.startswith(STATIC_PREFIX):
        return True
    if path in DOCS_PATHS:
        return settings.docs_access != "api_key" or bool(api_client())
    return False


def init_app(app: Flask) -> None:
    """Build this app's Limiter from its settings. Install before `auth.Auth` (so that wrong keys
    are counted)."""
    state = app_state(app)
    settings = state.settings
    if not settings.rate_limit_enabled:
        state.rate_limiting = RateLimiting(limiter=None,
                                           metrics_token_failures=_FailureGuard(MemoryStorage()))
        return
    # The Redis keys start with CACHE_KEY_PREFIX, as every key of the service does (a Redis ACL
    # key pattern on it then covers the limiter): `limits` puts its own "LIMITS:" first otherwise.
    storage = f"{_SCHEME}{settings.redis_url}" if settings.redis_url else "memory://"
    options = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5,
               "key_prefix": f"{settings.cache_key_prefix}ratelimit"} if settings.redis_url else {}
    limiter = _Limiter(
        key_func=client_identity,
        # One limit per request, checked before the view (and the API-key check) runs: an
        # application limit, whose value and budget are picked per request.
        application_limits=[ApplicationLimit(_request_limit, scope=_request_scope)],
        storage_uri=storage, storage_options=options,
        in_memory_fallback_enabled=bool(settings.redis_url),  # Redis down: per-worker limits, not errors
        headers_enabled=False,  # written by _rate_limit_headers, from the same answer
        # A storage error after the fallback is on (a Redis call already in flight when it froze)
        # serves the request unchecked rather than answering 500.
        swallow_errors=True,
        strategy=_STRATEGY,
        # flask-limiter skips a request without an endpoint, i.e. one Flask could not route (404,
        # 405); the API-key check still answers those, so a wrong key sent to /api/v1/nope would be
        # guessed unlimited. Naming them keeps them on the shared budget.
        request_identifier=lambda: request.endpoint or _UNROUTED)
    limiter.request_filter(functools.partial(_unlimited, settings))
    limiter.init_app(app)
    state.rate_limiting = RateLimiting(limiter=limiter,
                                       metrics_token_failures=_FailureGuard(limiter.storage))
    app.after_request(functools.partial(_rate_limit_headers, limiter))

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        metrics.RATE_LIMITED.inc()
        # Retry-After: the seconds left in the client's window; _rate_limit_headers adds X-RateLimit-*.
        window = _window(limiter)
        return error_response(FailureCode.RATE_LIMITED, f"rate limit exceeded ({exc.description}); retry later",
                              retry_after=retry_after(window[0], time.time()) if window else None)


def health_check(redis_reachable: bool) -> dict:
    """The rate-limit line of /health; "fallback" (Redis unreachable) makes the service degraded.
    The counters live in the cache's Redis (REDIS_URL), so /health's one probe of it
    (`redis_reachable`) answers for both: a second PING would double /health's time when Redis
    hangs."""
    state = app_state()
    limiter, settings = state.rate_limiting.limiter, state.settings
    if limiter is None:
        return {"status": "disabled"}
    if not settings.redis_url:
        return {"status": "ok", "storage": "memory", "detail": "no REDIS_URL: limits are per worker"}
    return {"status": "ok", "storage": "redis"} if redis_reachable else {
        "status": "fallback", "storage": "memory",
        "detail": "Redis unreachable: in-process limits per worker until it is back"}
