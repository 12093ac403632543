"""The JSON error envelope, and handlers so that no answer is an HTML page or a stack trace."""

from __future__ import annotations

import logging
from typing import Optional

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "unprocessable", 429: "rate_limited", 503: "service_unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: Optional[str] = None,
                 details: Optional[list[dict]] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(status: int, message: str, code: Optional[str] = None,
                   details: Optional[list[dict]] = None, headers: Optional[dict] = None):
    body = {"code": code or _CODES.get(status, "error"), "message": message}
    if details:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.message, exc.code, exc.details, exc.headers)

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
        return error_response(500, "internal error", "internal_error")
