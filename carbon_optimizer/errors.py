"""The one error hierarchy, and the one writer of error answers.

Every failure the service can name has a FailureCode; the code carries its HTTP status (one per
code) and, for a passing fault, how long a client should wait, so no layer maps bare strings to
statuses or picks a Retry-After. Layers raise these exceptions (or return a code inside an
Unschedulable); `ErrorWriter.answer` turns a code into an answer's status, headers and JSON body,
for the web layer (web/errors.py) and the Gunicorn worker alike. Messages name fields, zones and
values, never a secret. Import every name below from here only.

    Exception
    ├── CarbonOptimizerError          base; its `code` gives the status (500 internal_error)
    │   ├── ConfigError               the environment describes no runnable service (start-up)
    │   ├── SecretError               a secret unreadable or malformed (never its value)
    │   ├── SchedulingError           a solver refused the request: 422 too_large
    │   │   ├── TooLarge              over the work or memory cap: 422 too_large
    │   │   └── DeadlineExceeded      the solving time ran out: 503 deadline_exceeded
    │   ├── Busy                      the worker's solving memory is lent out: 503 service_unavailable
    │   ├── CarbonDataError           no carbon data for a zone (any provider's failure): 503 upstream_error
    │   │   ├── UpstreamUnavailable   timeout, refusal, 5xx, 429, garbage: 503 upstream_unavailable
    │   │   ├── InvalidToken          the provider refused our credentials: 503 upstream_auth_failed
    │   │   ├── NotRecorded           a replay asked outside its recording: 422 window_not_covered
    │   │   ├── ZoneNotEntitled       the data plan does not cover the zone: 422 zone_not_entitled
    │   │   └── ZoneNotFound          the provider has no such zone: 400 zone_not_found
    │   │                             (GET /forecast answers it 404 forecast_not_found)
    │   ├── UnknownLocation           a zone or cloud region nobody serves: 400 zone_not_found
    │   └── RequestError              a request the web layer refuses, with any code and details
    │       └── ReadTimeout           the request did not arrive in time: 408 request_timeout
    └── ValueError
        └── FieldError                a request model's inconsistency, naming the field to change
                                      (a ValueError, so that pydantic reports it as a field error)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Optional

#: Seconds a client is asked to wait when this machine is busy (its solving time or memory taken
#: by other requests): a few seconds frees a thread or a share of memory.
BUSY_RETRY_SECONDS = 5
#: Seconds a client is asked to wait when the carbon-data provider fails: the default of the
#: service's own back-off (UPSTREAM_FAILURE_BACKOFF_SECONDS) before it asks the provider again.
UPSTREAM_RETRY_SECONDS = 30


class FailureCode(str, Enum):
    """A failure's stable name in answers (`error.code`) and its HTTP status (one per code). A
    transient code (503: the same request may succeed later) carries `retry_after`, the seconds its
    answer asks a client to wait; `upstream` marks the codes whose wait follows the configured
    upstream back-off. A final code has no `retry_after`: the client changes the request."""

    status: int
    retry_after: Optional[int]
    upstream: bool
    transient: bool

    def __new__(cls, code: str, status: int, retry_after: Optional[int] = None,
                upstream: bool = False) -> "FailureCode":
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        member.retry_after = retry_after
        member.upstream = upstream
        member.transient = retry_after is not None
        return member

    # The request itself
    INVALID_REQUEST = "invalid_request", 400
    UNAUTHORIZED = "unauthorized", 401
    FORBIDDEN = "forbidden", 403
    NOT_FOUND = "not_found", 404
    METHOD_NOT_ALLOWED = "method_not_allowed", 405
    REQUEST_TIMEOUT = "request_timeout", 408
    PAYLOAD_TOO_LARGE = "payload_too_large", 413
    URI_TOO_LONG = "uri_too_long", 414
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable", 416
    EXPECTATION_FAILED = "expectation_failed", 417
    UNPROCESSABLE = "unprocessable", 422
    RATE_LIMITED = "rate_limited", 429
    HEADERS_TOO_LARGE = "headers_too_large", 431
    # Scheduling: the request is valid, but no plan satisfies it; the client changes the request.
    WINDOW_NOT_COVERED = "window_not_covered", 422
    CAPACITY_EXCEEDED = "capacity_exceeded", 422
    TOO_LARGE = "too_large", 422
    # The request's time budget ran out while solving (the machine was busy): try again shortly.
    DEADLINE_EXCEEDED = "deadline_exceeded", 503, BUSY_RETRY_SECONDS
    # Carbon data. Final for the zone (client error: choose another zone) ...
    ZONE_NOT_FOUND = "zone_not_found", 400
    ZONE_NOT_ENTITLED = "zone_not_entitled", 422
    # GET /forecast of a zone the provider lists but has no data for: a missing resource.
    FORECAST_NOT_FOUND = "forecast_not_found", 404
    # ... or passing: the same request may work once the provider answers again.
    UPSTREAM_UNAVAILABLE = "upstream_unavailable", 503, UPSTREAM_RETRY_SECONDS, True
    UPSTREAM_AUTH_FAILED = "upstream_auth_failed", 503, UPSTREAM_RETRY_SECONDS, True
    UPSTREAM_ERROR = "upstream_error", 503, UPSTREAM_RETRY_SECONDS, True
    # This worker cannot take the request just now (its memory or threads are taken).
    SERVICE_UNAVAILABLE = "service_unavailable", 503, BUSY_RETRY_SECONDS
    INTERNAL_ERROR = "internal_error", 500
    NOT_IMPLEMENTED = "not_implemented", 501

    @classmethod
    def for_status(cls, status: int) -> "FailureCode":
        """The generic code of an HTTP status, for answers Werkzeug or Gunicorn chose the status
        of; a status without one gets invalid_request (4xx) or internal_error (5xx), and so
        that code's status."""
        return _GENERIC.get(status, cls.INTERNAL_ERROR if status >= 500 else cls.INVALID_REQUEST)


_GENERIC = {code.status: code for code in (
    FailureCode.INVALID_REQUEST, FailureCode.UNAUTHORIZED, FailureCode.FORBIDDEN,
    FailureCode.NOT_FOUND, FailureCode.METHOD_NOT_ALLOWED, FailureCode.REQUEST_TIMEOUT,
    FailureCode.PAYLOAD_TOO_LARGE, FailureCode.URI_TOO_LONG, FailureCode.UNSUPPORTED_MEDIA_TYPE,
    FailureCode.RANGE_NOT_SATISFIABLE, FailureCode.EXPECTATION_FAILED, FailureCode.UNPROCESSABLE,
    FailureCode.RATE_LIMITED, FailureCode.HEADERS_TOO_LARGE, FailureCode.SERVICE_UNAVAILABLE,
    FailureCode.INTERNAL_ERROR, FailureCode.NOT_IMPLEMENTED)}


# -- the writer ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErrorAnswer:
    """One error answer, ready for any HTTP writer: its status, the headers it needs beyond
    Content-Type and Content-Length, and the JSON body
    `{"error": {"code": ..., "message": ..., "details": [...]?}}` (compact, ASCII)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class ErrorWriter:
    """Writes every error answer of the service. Built once per app with the configured
    UPSTREAM_FAILURE_BACKOFF_SECONDS (0: none, the upstream codes keep their default); the Gunicorn
    worker's writer has none (it answers no upstream code)."""

    upstream_backoff_seconds: int = 0

    def retry_after(self, code: FailureCode, override: Optional[int] = None) -> Optional[int]:
        """The Retry-After of an answer with `code`, in whole seconds, or None for none: the one
        place it is decided. A transient code gets its own delay (an upstream one the configured
        back-off, when there is one); a final code none. `override` is a delay computed for this
        answer alone: a 429's (the seconds left in the client's rate-limit window) and /health's
        (the worker's busy grace); at least 1, so a client that sleeps it never asks at once."""
        if override is not None:
            return max(1, override)
        if code.retry_after is None:
            return None
        if code.upstream and self.upstream_backoff_seconds > 0:
            return self.upstream_backoff_seconds
        return code.retry_after

    def answer(self, code: FailureCode, message: str, details: Optional[list[dict]] = None, *,
               retry_after: Optional[int] = None,
               headers: Iterable[tuple[str, str]] = ()) -> ErrorAnswer:
        """The answer for a failure: `code`'s status, Retry-After from `retry_after(code,
        override)`, `headers` (e.g. Allow, WWW-Authenticate: never Retry-After) and the envelope
        with `message` and, when there are any, `details`."""
        extra = tuple(headers)
        if any(name.lower() == "retry-after" for name, _ in extra):
            raise ValueError("Retry-After is decided by ErrorWriter.retry_after; pass retry_after")
        error: dict = {"code": code.value, "message": message}
        if details:
            error["details"] = details
        delay = self.retry_after(code, retry_after)
        if delay is not None:
            extra += (("Retry-After", str(delay)),)
        body = json.dumps({"error": error}, separators=(",", ":"), ensure_ascii=True)
        return ErrorAnswer(code.status, extra, body.encode("ascii"))

    def problem(self, status: int, fields: dict, code: Optional[FailureCode] = None) -> ErrorAnswer:
        """An answer in the problem-details shape the Carbon Aware SDK's routes speak (RFC 9457,
        as .NET writes it): `fields` is the body; Retry-After as for any answer with `code`."""
        delay = self.retry_after(code) if code is not None else None
        extra = (("Retry-After", str(delay)),) if delay is not None else ()
        return ErrorAnswer(status, extra, json.dumps(fields, ensure_ascii=True).encode("ascii"))


# -- the hierarchy ---------------------------------------------------------------------------------

class CarbonOptimizerError(Exception):
    """Base of every error the service raises on purpose."""

    code: FailureCode = FailureCode.INTERNAL_ERROR

    def __init__(self, message: str, code: Optional[FailureCode] = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(CarbonOptimizerError):
    """The environment does not describe a runnable service (raised at start-up)."""


class SecretError(CarbonOptimizerError):
    """A secret could not be read or is malformed. The message never holds a secret value."""


class SchedulingError(CarbonOptimizerError):
    """A solver refused a request (e.g. too large for an exact search)."""

    code = FailureCode.TOO_LARGE


class TooLarge(SchedulingError):
    """The exact search for this request would need more work or memory than allowed."""

    code = FailureCode.TOO_LARGE


class DeadlineExceeded(SchedulingError):
    """A solver stopped at the request's deadline."""

    code = FailureCode.DEADLINE_EXCEEDED


class Busy(CarbonOptimizerError):
    """The worker cannot take this request's solving just now (its memory is lent to others):
    the same request may succeed shortly (503, Retry-After)."""

    code = FailureCode.SERVICE_UNAVAILABLE


class CarbonDataError(CarbonOptimizerError):
    """No carbon data for a zone: the base of every provider's failures. Messages name the zone,
    never a secret."""

    code = FailureCode.UPSTREAM_ERROR

    def __init__(self, zone: str, message: str):
        super().__init__(message)
        self.zone = zone

    @property
    def transient(self) -> bool:
        """Whether a stale copy may be served instead (a passing fault) or the failure is final
        for this zone (unknown zone, token not entitled)."""
        return self.code.transient


class UpstreamUnavailable(CarbonDataError):
    """Timeouts, refused connections, 5xx, 429, malformed answers: try again later."""

    code = FailureCode.UPSTREAM_UNAVAILABLE


class NotRecorded(CarbonDataError):
    """A replay asked about a moment its recording does not cover: asking again will not help."""

    code = FailureCode.WINDOW_NOT_COVERED


class InvalidToken(CarbonDataError):
    """The provider rejected the service's own credentials: an operator's problem, not the client's."""

    code = FailureCode.UPSTREAM_AUTH_FAILED


class ZoneNotEntitled(CarbonDataError):
    """The credentials are valid but not entitled to this zone."""

    code = FailureCode.ZONE_NOT_ENTITLED


class ZoneNotFound(CarbonDataError):
    """The provider has no data for this zone."""

    code = FailureCode.ZONE_NOT_FOUND


class RequestError(CarbonOptimizerError):
    """A request the web layer refuses; `details` name the fields and values involved.
    `retry_after` is a delay computed for this answer alone (see ErrorWriter.retry_after); without
    it the code's own applies."""

    def __init__(self, code: FailureCode, message: str, details: Optional[list[dict]] = None,
                 *, retry_after: Optional[int] = None):
        super().__init__(message, code)
        self.details = details
        self.retry_after = retry_after


class ReadTimeout(RequestError):
    """A client did not send its request (head or body) before the connection's read deadline.

    A RequestError, so that when the application is the one reading (a body), its error handlers
    answer 408 in the envelope; when Gunicorn is (a head), the worker does."""

    def __init__(self, seconds: float):
        super().__init__(FailureCode.REQUEST_TIMEOUT, f"request not received within {seconds:g} s")

class UnknownLocation(CarbonOptimizerError):
    """A location asked for (a zone key or a cloud region) that the service cannot serve: not in
    the cloud-region table, or a zone the configured provider does not have. `suggestions` are
    the closest names it does know."""

    code = FailureCode.ZONE_NOT_FOUND

    def __init__(self, location: str, message: str, suggestions: tuple[str, ...] = ()):
        super().__init__(message)
        self.location = location
        self.suggestions = suggestions


class SignalNotServed(CarbonOptimizerError):
    """A request asked for a signal (average, marginal, ...) that no configured provider serves,
    or for several in one request. `available` names those this deployment serves."""

    code = FailureCode.INVALID_REQUEST

    def __init__(self, message: str, available: tuple[str, ...] = ()):
        super().__init__(message)
        self.available = available


class FieldError(ValueError):
    """A workload's inconsistency, with the field a client must change to fix it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
