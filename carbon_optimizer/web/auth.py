"""Who may call what: client API keys on the API (and on the docs when DOCS_ACCESS=api_key), and
access to /metrics (a network allowlist and a bearer token).

`Auth` is the Flask extension: one request hook, installed after the rate limiter's (see
create_app), so that requests with a wrong key are counted too and key guessing is rate limited.
Who is calling (`api_client`: a valid key's position in the key list; `client_name`: its name) is
worked out once per request, when first asked: by the limiter, which keys its budgets on it, or by the hook. Secrets
are read from the store on every request, so a rotated key applies as soon as the store
refreshes; no key, token or hash of one is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Iterable, Optional, Sequence

from flask import Flask, Response, request

from carbon_optimizer.errors import FailureCode
from carbon_optimizer.ops import metrics
from carbon_optimizer.secret_store import BaseSecretStore
from carbon_optimizer.settings import Settings
from carbon_optimizer.web.app_state import app_state
from carbon_optimizer.web.errors import error_response

API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = ("/health", "/health/live")            # never authenticated (the load balancer's probe)
DOCS_PATHS = ("/docs", "/api/v1/openapi.json")
# Need a key when keys are configured: our API, and the Carbon Aware SDK's routes (casdk_routes.py),
# matched by path too so that a wrong key sent to a path no route serves is refused all the same.
KEYED_PREFIXES = ("/api/", "/emissions/", "/locations")
KEYED_ENDPOINTS = ("api.", "casdk.")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def matching_index(given: Optional[str], valid: Iterable[str]) -> Optional[int]:
    """The position of `given` among `valid` (None when absent), in time that depends on neither
    which one nor how much of it matched: every key is compared, as equal-length digests, with
    hmac.compare_digest."""
    return _matching_digest(given, [_digest(key) for key in valid])


def _matching_digest(given: Optional[str], digests: Sequence[bytes]) -> Optional[int]:
    if not given:
        return None
    probe = _digest(given)
    found = None
    for index, digest in enumerate(digests):
        if hmac.compare_digest(probe, digest) and found is None:
            found = index
    return found


class _KeyDigests:
    """The configured keys' digests, made once per key list the secret store hands out (a new
    tuple on each refresh), not once per key on every request."""

    def __init__(self) -> None:
        self._held: tuple[tuple[str, ...], list[bytes]] = ((), [])

    def of(self, keys: tuple[str, ...]) -> list[bytes]:
        held = self._held
        if held[0] is not keys:
            held = (keys, [_digest(key) for key in keys])
            self._held = held  # one assignment: a racing thread sees the old pair or the new one
        return held[1]


def matches_any(given: Optional[str], valid: Iterable[str]) -> bool:
    return matching_index(given, valid) is not None


def _presented_key() -> Optional[str]:
    # Leading and trailing blanks are not part of an HTTP field value (RFC 9110 5.5): strip them,
    # as every HTTP server in front of us does; anything else must match a key exactly.
    value = request.headers.get(API_KEY_HEADER)
    return value.strip(" \t") or None if value is not None else None


_DIGESTS = _KeyDigests()
# Where a request keeps who is calling once known: its WSGI environ, which lives exactly as long as
# the request (flask.g may outlive it, when an app context is already pushed).
_CLIENT_KEY = "carbon_optimizer.api_client"
_NAME_KEY = "carbon_optimizer.client_name"


def _identify() -> None:
    environ = request.environ
    secrets = app_state().secrets.current()  # one snapshot: keys and names of the same refresh
    keys = secrets.api_keys
    presented = _presented_key()
    index = _matching_digest(presented, _DIGESTS.of(keys)) if keys and presented else None
    # The position names the client for the limiter (its Redis keys and log lines): no key,
    # and no hash of one, leaves the process.
    environ[_CLIENT_KEY] = None if index is None else f"key:{index}"
    environ[_NAME_KEY] = None if index is None else secrets.client_name(index)


def api_client() -> Optional[str]:
    """The client of a valid API key, named by the key's position in the configured list
    ("key:0"), or None."""
    if _CLIENT_KEY not in request.environ:
        _identify()
    return request.environ[_CLIENT_KEY]


def client_name() -> Optional[str]:
    """The name of the client whose valid API key came with this request (`ci` for an API_KEYS
    entry `ci=...`, `key-2` for an unnamed second key), for what the ledger records; None when no
    valid key came (an open API). Never the key. The limiter keeps keying on the position
    (api_client), so renaming a client does not reset its rate-limit budget."""
    if _NAME_KEY not in request.environ:
        _identify()
    return request.environ[_NAME_KEY]


def client_identity() -> str:
    """Who is calling, for rate limits: a valid API key (as its position in the key list), else
    the client IP (behind trusted proxies, the one headers.TrustedProxies found)."""
    return api_client() or f"ip:{request.remote_addr or 'unknown'}"


class Auth:
    """The API-key and /metrics checks as a Flask extension. Install after `limits.init_app`: its
    one hook then runs after the limiter has counted the request."""

    def __init__(self, app: Optional[Flask] = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.before_request(self._authenticate)

    @staticmethod
    def _authenticate() -> Optional[Response]:
        state = app_state()
        settings, secret_store = state.settings, state.secrets
        path = request.path
        if path in OPEN_PATHS or request.method == "OPTIONS":  # CORS preflights carry no key
            return None
        if path == "/metrics":
            return _check_metrics(settings, secret_store)
        if path in DOCS_PATHS:
            if settings.docs_access == "disabled":
                return error_response(FailureCode.NOT_FOUND, "no such endpoint")
            if settings.docs_access == "public":
                return None
        if (path.startswith(KEYED_PREFIXES) or (request.endpoint or "").startswith(KEYED_ENDPOINTS)
                or path in DOCS_PATHS):
            if secret_store.current().api_keys and not api_client():
                metrics.AUTH_FAILURES.labels("api").inc()
                return error_response(FailureCode.UNAUTHORIZED,
                                      f"missing or invalid API key; send it in the {API_KEY_HEADER} header",
                                      headers=[("WWW-Authenticate", f'ApiKey header="{API_KEY_HEADER}"')])
        return None


def _check_metrics(settings: Settings, secret_store: BaseSecretStore) -> Optional[Response]:
    if settings.metrics_allow_cidrs:
        try:
            address = ipaddress.ip_address(request.remote_addr or "")
        except ValueError:
            address = None
        networks = [ipaddress.ip_network(c, strict=False) for c in settings.metrics_allow_cidrs]
        if address is None or not any(address in network for network in networks):
            metrics.AUTH_FAILURES.labels("metrics").inc()
            return error_response(FailureCode.FORBIDDEN, "metrics are not served to this address")
    token = secret_store.current().metrics_token
    if token:
        # An address out of failures is refused before its token is compared: with or without the
        # right one, the same 429, so guessing on tells nothing. Successes are not counted.
        # Kept by limits.init_app (in the limiter's storage), so that this module, below limits,
        # needs no import of it.
        guard = app_state().rate_limiting.metrics_token_failures
        address = request.remote_addr or "unknown"
        wait = guard.refused_for(address)
        if wait is not None:
            metrics.AUTH_FAILURES.labels("metrics").inc()
            return error_response(FailureCode.RATE_LIMITED,
                                  "too many wrong metrics tokens from this address; retry later",
                                  retry_after=wait)  # the seconds left in the address's window
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not matches_any(presented.strip(), [token]):
            guard.failed(address)
            metrics.AUTH_FAILURES.labels("metrics").inc()
            return error_response(FailureCode.UNAUTHORIZED, "metrics need a bearer token",
                                  headers=[("WWW-Authenticate", "Bearer")])
    return None
