"""The query parameters of GET /forecast: zone, hours and history, each checked and refused with
its own error."""

from __future__ import annotations

from typing import Optional

from flask import request
from pydantic import ValidationError

from carbon_optimizer.errors import FailureCode, RequestError
from carbon_optimizer.web import request_models


def zone_parameter() -> str:
    location = request.args.get("zone", "")
    try:
        request_models.LOCATION_ADAPTER.validate_python(location)
    except ValidationError:
        raise RequestError(FailureCode.INVALID_REQUEST,
                           "give one zone key or cloud region, e.g. ?zone=DE or ?zone=aws:eu-west-1",
                           details=[{"field": "zone", "message": "missing, or not a zone key or a cloud region"}]
                           ) from None
    return location


def hours_parameter() -> Optional[int]:
    text = request.args.get("hours")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 4) \
            or not 1 <= int(text) <= request_models.MAX_FORECAST_HOURS:
        raise RequestError(FailureCode.INVALID_REQUEST, "hours must be a whole number of hours from now",
                       details=[{"field": "hours", "message":
                                 f"a whole number from 1 to {request_models.MAX_FORECAST_HOURS}"}])
    return int(text)


def history_parameter() -> bool:
    text = request.args.get("history")
    if text is None or text == "false":
        return False
    if text == "true":
        return True
    raise RequestError(FailureCode.INVALID_REQUEST, "history must be true or false",
                       details=[{"field": "history", "message": "true or false"}])
