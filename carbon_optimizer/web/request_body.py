"""The request's body, read whole (JSON only, its size checked even when it comes chunked), and
whether its client is still there while its work runs."""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from typing import Callable, Optional

from flask import current_app, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from carbon_optimizer.errors import FailureCode, RequestError
from carbon_optimizer.ops import metrics

log = logging.getLogger(__name__)

# How often a request's work looks whether its client is still there (a poll and a peek).
PEEK_INTERVAL_SECONDS = 0.005


def read_body() -> bytes:
    """The request body, or 413 when it is over MAX_CONTENT_LENGTH. Werkzeug refuses a too-large
    Content-Length up front, but a chunked body (no Content-Length) it only cuts at the limit and
    hands over the first part as if it were all: read one byte past the limit instead, to tell."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=False)  # without a terminated stream werkzeug reads nothing
    stream, parts, size = request.environ["wsgi.input"], [], 0
    while size <= limit:
        try:
            part = stream.read(min(65_536, limit + 1 - size))
        except RequestError:  # the server's read deadline (408): keep its answer
            raise
        except Exception:  # noqa: BLE001  (a malformed chunk or a dropped client: not our 500)
            raise ClientDisconnected() from None
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
    raise RequestEntityTooLarge()


def json_body() -> object:
    if request.mimetype != "application/json":
        raise RequestError(FailureCode.UNSUPPORTED_MEDIA_TYPE, "send the request body as application/json")
    raw = read_body()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestError(FailureCode.INVALID_REQUEST, "the request body is not valid JSON") from None


def client_gone() -> Optional[Callable[[], bool]]:
    """A check that the client has closed its connection, for the request's work to stop: the
    socket Gunicorn hands over, polled and peeked (nothing read) at most every
    PEEK_INTERVAL_SECONDS. A peek that reads b"" is the peer's close; bytes are a pipelined next
    request (the body was read whole before), not a close. A client that half-closes its side
    while it waits is taken as gone too, as Go's net/http does. None without a socket (in-process)."""
    # The worker may hand over a wrapper (its write deadline): any object with the socket's calls.
    sock = request.environ.get("gunicorn.socket")
    if not (callable(getattr(sock, "fileno", None)) and callable(getattr(sock, "recv", None))):
        return None
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    state = {"at": 0.0, "gone": False}

    def gone() -> bool:
        if state["gone"]:
            return True
        now = time.monotonic()
        if now - state["at"] < PEEK_INTERVAL_SECONDS:
            return False
        state["at"] = now
        try:
            if poller.poll(0):
                state["gone"] = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # reset by the peer
            state["gone"] = True
        return state["gone"]
    return gone


def stop_if_gone(gone: Optional[Callable[[], bool]], workloads: int, answered: int) -> None:
    """When the client has gone, end the request here: nobody reads its answer."""
    if gone is not None and gone():
        metrics.REQUESTS_ABANDONED.inc()
        log.info("client went away; the request's work stopped",
                 extra={"workloads": workloads, "answered": answered})
        raise ClientDisconnected()
