"""The Carbon Aware SDK WebAPI's parameters (casdk_routes.py): query and body values parsed as its
ASP.NET Core model binding reads them, and every refusal written as its 400: a .NET
ValidationProblemDetails (`application/problem+json`) whose `errors` name the parameter.

Facts carried over from the SDK (Green-Software-Foundation/carbon-aware-sdk v1.8,
src/CarbonAware.WebApi): the parameter names, that a query's date-time is read leniently (the
SDK's own integration tests send `2022-1-1T04:05:06Z`) while a JSON body's must be ISO 8601
(its tests expect 400 for `2021-9-1T08:30:00Z` in a body), that an integer parameter is an Int32,
that empty `location` values are skipped, and the shape of its problem details (type, title,
status, detail, traceId, errors).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from flask import Response, request

from carbon_optimizer.errors import FailureCode, RequestError
from carbon_optimizer.web.app_state import app_state
from carbon_optimizer.web.request_body import json_body

# RFC 9110's section for each status, as ASP.NET Core names them in `type`.
_TYPES = {400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
          404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
          500: "https://tools.ietf.org/html/rfc9110#section-15.6.1",
          501: "https://tools.ietf.org/html/rfc9110#section-15.6.2",
          503: "https://tools.ietf.org/html/rfc9110#section-15.6.4"}
BINDING_TITLE = "One or more validation errors occurred."
PROBLEM_JSON = "application/problem+json"
INT32_MAX = 2 ** 31 - 1
# Locations per request: the SDK has no cap; ours keeps one request's fetches bounded.
MAX_LOCATIONS = 100
MAX_BATCH_ITEMS = 100


@dataclass(eq=False)
class Problem(Exception):
    """A refusal in the SDK's shape: `errors` maps each parameter to its messages."""
    status: int
    title: str
    errors: dict[str, list[str]] = field(default_factory=dict)
    detail: Optional[str] = None
    code: Optional[FailureCode] = None  # a transient one gets its Retry-After from the writer

    def response(self) -> Response:
        # traceId as ASP.NET Core writes a W3C trace context id: a new one per answer.
        body: dict[str, Any] = {"type": _TYPES.get(self.status, _TYPES[400] if self.status < 500 else _TYPES[500]),
                                "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        if self.errors:
            body["errors"] = self.errors
        body["traceId"] = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
        written = app_state().errors.problem(self.status, body, self.code)
        answer = Response(written.body, status=written.status, mimetype=PROBLEM_JSON)
        for name, value in written.headers:
            answer.headers[name] = value
        return answer


def invalid(name: str, message: str, title: str = BINDING_TITLE, detail: Optional[str] = None) -> Problem:
    """A 400 naming one parameter."""
    return Problem(400, title, {name: [message]}, detail)


def argument_error(name: str, message: str) -> Problem:
    """A 400 as the SDK's exception filter writes an ArgumentException from its handlers."""
    return Problem(400, "ArgumentException", {name: [message]}, "Invalid parameters")


# -- date-times -----------------------------------------------------------------------------------

# A query's date-time, as lenient as .NET's DateTimeOffset parsing for the forms clients send: one-
# or two-digit month, day and hour, optional seconds and fraction, an offset or none (then UTC: the
# SDK's container runs in UTC). A '+' sent unencoded arrives as a space, and is read as '+'.
_QUERY_TIME = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"\s?(Z|z|[+\- ]\d{2}(?::?\d{2})?)?")
# A JSON body's date-time: System.Text.Json's ISO 8601 profile (two-digit fields, T separator).
_BODY_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:\d{2})?)?")


def _build(match: re.Match) -> Optional[datetime]:
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        if offset in (None, "Z", "z"):
            zone = timezone.utc
        else:
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:] or 0)
            if hours > 14 or minutes > 59 or hours * 60 + minutes > 14 * 60:
                return None
            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        micro = int((fraction or "0").ljust(7, "0")[:6])
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                          int(second or 0), micro, tzinfo=zone)
        moment.astimezone(timezone.utc)  # out of range once in UTC (0001-01-01T00:00+01:00)
        return moment
    except (ValueError, OverflowError):
        return None


def query_time(name: str) -> Optional[datetime]:
    """An optional date-time query parameter (None when absent or empty, as .NET binds it)."""
    text = request.args.get(name)
    if text is None or text == "":
        return None
    match = _QUERY_TIME.fullmatch(text.strip()) if len(text) <= 64 else None
    moment = _build(match) if match else None
    if moment is None:
        raise invalid(name, f"The value '{text[:64]}' is not valid for {name}.")
    return moment


def required_query_time(name: str) -> datetime:
    moment = query_time(name)
    if moment is None:
        raise invalid(name, f"A value for the '{name}' parameter or property was not provided.")
    return moment


def body_time(item: dict, name: str, where: str, required: bool = False) -> Optional[datetime]:
    value = item.get(name)
    if value is None:
        if required:
            raise invalid(f"{where}.{name}", f"The {name} field is required.")
        return None
    match = _BODY_TIME.fullmatch(value) if isinstance(value, str) and len(value) <= 64 else None
    moment = _build(match) if match else None
    if moment is None:
        raise invalid(f"$[{where.strip('[]')}].{name}",
                      f"The JSON value could not be converted to System.Nullable`1[System.DateTimeOffset]. "
                      f"Path: $[{where.strip('[]')}].{name}")
    return moment


# -- the rest ---------------------------------------------------------------------------------------

def query_int(name: str) -> Optional[int]:
    """An optional Int32 query parameter; the SDK's parameters are minutes, so negative is refused."""
    text = request.args.get(name)
    if text is None or text == "":
        return None
    stripped = text.strip()
    if not re.fullmatch(r"[+-]?\d{1,10}", stripped) or abs(int(stripped)) > INT32_MAX:
        raise invalid(name, f"The value '{text[:64]}' is not valid for {name}.")
    value = int(stripped)
    if value < 0:
        raise argument_error(name, f"{name} must be a whole number of minutes, 0 or more")
    return value


def body_int(item: dict, name: str, where: str) -> Optional[int]:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > INT32_MAX:
        raise invalid(f"$[{where.strip('[]')}].{name}",
                      f"The JSON value could not be converted to System.Nullable`1[System.Int32]. "
                      f"Path: $[{where.strip('[]')}].{name}")
    if value < 0:
        raise argument_error(f"{where}.{name}", f"{name} must be a whole number of minutes, 0 or more")
    return value


def query_locations() -> list[str]:
    """`location`, repeated; empty values skipped (as the SDK does); at least one."""
    # Each distinct name once, in the order first asked (a repeated name is one location).
    names = list(dict.fromkeys(name for name in request.args.getlist("location") if name))
    if not names:
        raise invalid("location", "A value for the 'location' parameter or property was not provided.")
    if len(names) > MAX_LOCATIONS:
        raise argument_error("location", f"at most {MAX_LOCATIONS} locations per request (got {len(names)})")
    return names


def query_location() -> str:
    """A single required `location`."""
    name = request.args.get("location")
    if not name:
        raise invalid("location", "A value for the 'location' parameter or property was not provided.")
    return name


def body_items() -> list[dict]:
    """A JSON array of objects (the SDK's batch bodies)."""
    try:
        body = json_body()
    except RequestError as exc:  # a 415 or malformed JSON, in the SDK's shape
        if exc.code is FailureCode.UNSUPPORTED_MEDIA_TYPE:
            raise Problem(415, "Unsupported Media Type") from None
        raise invalid("$", "The JSON value could not be converted to a list of requests. Path: $") from None
    if not isinstance(body, list):
        raise invalid("$", "The JSON value could not be converted to a list of requests. Path: $")
    if len(body) > MAX_BATCH_ITEMS:
        raise argument_error("$", f"at most {MAX_BATCH_ITEMS} requests per batch (got {len(body)})")
    for index, item in enumerate(body):
        if not isinstance(item, dict):
            raise invalid(f"$[{index}]", f"The JSON value could not be converted to a request. Path: $[{index}]")
    return body


def require_fields(items: list[dict], names: tuple[str, ...]) -> None:
    """Refuse a batch naming every required field any item lacks, at once, as .NET's model
    validation does (one error per missing field, keyed `[i].name`)."""
    errors = {f"[{index}].{name}": [f"The {name} field is required."]
              for index, item in enumerate(items) for name in names
              if item.get(name) is None or item.get(name) == ""}
    if errors:
        raise Problem(400, BINDING_TITLE, errors)


def body_string(item: dict, name: str, where: str) -> str:
    value = item.get(name)
    if value is None or value == "":
        raise invalid(f"{where}.{name}", f"The {name} field is required.")
    if not isinstance(value, str):
        raise invalid(f"$[{where.strip('[]')}].{name}",
                      f"The JSON value could not be converted to System.String. Path: $[{where.strip('[]')}].{name}")
    return value
