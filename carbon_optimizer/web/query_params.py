"""GET /forecast's query: zone (resolved to its zone by the engine), hours and history, each
checked and refused with its own error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from flask import request
from pydantic import ValidationError

from carbon_optimizer.data.providers.base import SIGNALS
from carbon_optimizer.errors import FailureCode, RequestError
from carbon_optimizer.web.app_state import app_state
from carbon_optimizer.web.error_details import unknown_location
from carbon_optimizer.web.request_models import LOCATION_ADAPTER, MAX_FORECAST_HOURS


@dataclass(frozen=True)
class ForecastQuery:
    location: str           # as asked: a zone key or a cloud region
    zone: str               # the zone it resolved to
    hours: Optional[int]    # how far from now to show (None: the forecast as it is)
    with_history: bool
    signal: Optional[str] = None  # None: the deployment's default


def forecast_query() -> ForecastQuery:
    """The query, checked in the order its errors are answered: zone, hours, history, then
    whether the service serves the zone."""
    location = _zone_parameter()
    hours = _hours_parameter()
    with_history = _history_parameter()
    signal = signal_parameter()
    # One location: its close matches, when unknown, are worth their search.
    resolved = app_state().engine.resolve_locations([location], suggested=1, signal=signal)
    if location in resolved.unknown:
        exc = resolved.unknown[location]
        raise RequestError(exc.code, exc.message, details=[unknown_location("zone", exc)])
    return ForecastQuery(location, resolved.zones[location], hours, with_history, signal)


def signal_parameter() -> Optional[str]:
    """?signal=: one of SIGNALS (whether this deployment serves it is the engine's to say)."""
    text = request.args.get("signal")
    if text is None:
        return None
    if text not in SIGNALS:
        raise RequestError(FailureCode.INVALID_REQUEST, "unknown signal", details=[
            {"field": "signal", "message": f"one of {', '.join(SIGNALS)} (got {text[:40]!r})"}])
    app_state().engine.feeds.get(text)  # SignalNotServed names those this deployment serves
    return text


def _zone_parameter() -> str:
    location = request.args.get("zone", "")
    try:
        LOCATION_ADAPTER.validate_python(location)
    except ValidationError:
        raise RequestError(FailureCode.INVALID_REQUEST,
                           "give one zone key or cloud region, e.g. ?zone=DE or ?zone=aws:eu-west-1",
                           details=[{"field": "zone", "message": "missing, or not a zone key or a cloud region"}]
                           ) from None
    return location


def _hours_parameter() -> Optional[int]:
    text = request.args.get("hours")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 4) \
            or not 1 <= int(text) <= MAX_FORECAST_HOURS:
        raise RequestError(FailureCode.INVALID_REQUEST, "hours must be a whole number of hours from now",
                           details=[{"field": "hours", "message":
                                     f"a whole number from 1 to {MAX_FORECAST_HOURS}"}])
    return int(text)


def _history_parameter() -> bool:
    text = request.args.get("history")
    if text is None or text == "false":
        return False
    if text == "true":
        return True
    raise RequestError(FailureCode.INVALID_REQUEST, "history must be true or false",
                       details=[{"field": "history", "message": "true or false"}])
