"""The JSON error envelope, and handlers so that no answer is an HTML page or a stack trace."""

from __future__ import annotations

import logging
from typing import Optional

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from carbon_optimizer.errors import CarbonOptimizerError, FailureCode, RequestError

log = logging.getLogger(__name__)

def error_response(status: int, message: str, code: Optional[FailureCode] = None,
                   details: Optional[list[dict]] = None, headers: Optional[dict] = None):
    """The JSON error envelope: {"error": {"code", "message", "details"?}}."""
    body = {"code": FailureCode(code).value if code else FailureCode.for_status(status).value,
            "message": message}
    if details:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RequestError)
    def _api_error(exc: RequestError):
        return error_response(exc.status, exc.message, exc.code, exc.details, exc.headers)

    @app.errorhandler(CarbonOptimizerError)
    def _service_error(exc: CarbonOptimizerError):
        # A failure raised below the web layer (e.g. a request over its solving budget).
        headers = {"Retry-After": "5"} if exc.code.transient else None
        return error_response(exc.code.status, exc.message, exc.code, headers=headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = {
            404: "no such endpoint",
            405: "method not allowed on this endpoint",
            413: f"request body larger than {app.config.get('MAX_CONTENT_LENGTH')} bytes",
        }.get(status, exc.description or exc.name)
        headers = {}
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return error_response(status, message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal error", FailureCode.INTERNAL_ERROR)
