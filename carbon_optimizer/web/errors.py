"""Error answers as Flask responses, and handlers so that no answer is an HTML page or a stack
trace. The status, Retry-After and JSON body come from errors.py's ErrorWriter; this module only
makes a Flask response of them."""

from __future__ import annotations

import logging
from typing import Iterable, Optional

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from carbon_optimizer.errors import CarbonOptimizerError, FailureCode, RequestError, SignalNotServed
from carbon_optimizer.web.app_state import app_state

log = logging.getLogger(__name__)

def error_response(code: FailureCode, message: str, details: Optional[list[dict]] = None, *,
                   retry_after: Optional[int] = None,
                   headers: Iterable[tuple[str, str]] = ()) -> Response:
    """The answer for a failure, written by the app's ErrorWriter. `retry_after` only for a delay
    computed for this answer (see ErrorWriter.retry_after); `headers` never carry Retry-After."""
    answer = app_state().errors.answer(code, message, details, retry_after=retry_after, headers=headers)
    # Flask's JSON answers end in a newline (jsonify's habit); error answers kept it.
    response = Response(answer.body + b"\n", status=answer.status, mimetype="application/json")
    for name, value in answer.headers:
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:

    @app.errorhandler(RequestError)
    def _api_error(exc: RequestError):
        return error_response(exc.code, exc.message, exc.details, retry_after=exc.retry_after)

    @app.errorhandler(SignalNotServed)
    def _signal_error(exc: SignalNotServed):
        return error_response(exc.code, exc.message, [{
            "field": "signal", "message": f"one of {', '.join(exc.available)}" if exc.available
            else exc.message}])

    @app.errorhandler(CarbonOptimizerError)
    def _service_error(exc: CarbonOptimizerError):
        # A failure raised below the web layer (e.g. a request over its solving budget).
        return error_response(exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = {
            404: "no such endpoint",
            405: "method not allowed on this endpoint",
            413: f"request body larger than {app.config.get('MAX_CONTENT_LENGTH')} bytes",
        }.get(status, exc.description or exc.name)
        headers = []
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers.append(("Allow", ", ".join(exc.valid_methods)))  # type: ignore[attr-defined]
        response = error_response(FailureCode.for_status(status), message, headers=headers)
        # A status with no code of its own (none the service raises; abort(409) in a future view)
        # keeps its status, with its class's generic code: a conflict must not read as a 400.
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(FailureCode.INTERNAL_ERROR, "internal error")
