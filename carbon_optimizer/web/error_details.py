"""The details of a refused request as a client reads them: a field path (workloads[3].duration)
and a plain message each, the first MAX_ERROR_DETAILS listed and the rest counted, so that an
error's size does not grow with the request's."""

from __future__ import annotations

from pydantic import ValidationError

from carbon_optimizer.errors import FailureCode, FieldError, RequestError, UnknownLocation

MAX_ERROR_DETAILS = 20
_FIELD_CHARS, _MESSAGE_CHARS = 200, 600  # a field path holds client-chosen keys: cut, not echoed whole


def field_path(location: tuple) -> str:
    """pydantic's error location as a client reads it: workloads[3].duration."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


# Plainer words than pydantic's for the errors clients meet most.
_MESSAGES = {
    "string_pattern_mismatch": "must be an Electricity Maps zone key such as DE or US-CAL-CISO "
                               "(in zones, also a cloud region such as aws:eu-west-1)",
    "extra_forbidden": "unknown field",
    "model_type": "must be a JSON object",
    "timezone_aware": "must be an RFC 3339 timestamp with an offset, e.g. 2026-11-23T08:00:00Z",
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


class Details:
    """An error's details: the first MAX_ERROR_DETAILS kept, the rest only counted."""

    def __init__(self) -> None:
        self.kept: list[dict] = []
        self.more = 0

    def add(self, detail: dict) -> None:
        if len(self.kept) < MAX_ERROR_DETAILS:
            self.kept.append(detail)
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.kept)

    def listed(self, field: str) -> list[dict]:
        """The details kept, and one that says how many more there are."""
        if not self.more:
            return self.kept
        return self.kept + [{"field": field, "message": f"and {self.more} more like these, not listed"}]


def validation_error(exc: ValidationError) -> RequestError:
    details = Details()
    for error in exc.errors(include_input=False, include_url=False):
        if len(details.kept) >= MAX_ERROR_DETAILS:
            details.more += 1
            continue
        cause = (error.get("ctx") or {}).get("error")
        location = tuple(error["loc"]) + ((cause.field,) if isinstance(cause, FieldError) else ())
        details.add({"field": _cut(field_path(location), _FIELD_CHARS),
                     "message": _cut(_MESSAGES.get(error["type"], error["msg"].removeprefix("Value error, ")),
                                     _MESSAGE_CHARS)})
    return RequestError(FailureCode.INVALID_REQUEST, "the request is not valid; see details",
                        details=details.listed("body"))


def unknown_location(field: str, exc: UnknownLocation) -> dict:
    """One error detail for a location the service cannot serve, with the close matches."""
    if exc.suggestions:
        hint = "; did you mean " + ", ".join(exc.suggestions) + "?"
    else:
        hint = "; GET /api/v1/zones lists the zones and cloud regions served"
    detail: dict = {"field": field, "message": exc.message + hint}
    if exc.suggestions:
        detail["suggestions"] = list(exc.suggestions)
    return detail
