"""One bounded HTTP GET to a carbon-data provider, shared by every remote provider: retries on
429/5xx and connection failures (urllib3's policy, bounded in time as well as count), the whole
call (every attempt, backoff, header and body read) inside one deadline enforced by a watchdog,
the body capped in size, and every call reported to an observer (metrics) and the log.

Providers keep only their wire formats: they call `UpstreamHttp.get` and decode its `Reply`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import Timeout
from urllib3.util.retry import Retry

from carbon_optimizer.errors import UpstreamUnavailable

log = logging.getLogger(__name__)

# Called after every upstream call with (endpoint, outcome, seconds); wired to metrics by the app.
CallObserver = Callable[[str, str, float], None]


# A 72 h forecast at 5-minute steps is ~100 KB; anything near this is not a forecast.
MAX_BODY_BYTES = 16 * 1024 * 1024

# The end (time.monotonic()) of the upstream call this thread is making: urllib3 runs the retries
# of one call in the calling thread, so the retry policy reads it here.
_call_deadline = threading.local()


def _remaining() -> float:
    return getattr(_call_deadline, "at", float("inf")) - time.monotonic()


class _DeadlineRetry(Retry):
    """urllib3's retry policy, bounded in time as well as in count: no attempt starts and no
    backoff sleeps past the deadline of the call it serves, so retries cannot stretch one call
    to several times its budget."""

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or _remaining() <= 0

    def get_backoff_time(self) -> float:
        return max(0.0, min(super().get_backoff_time(), _remaining()))


class _DeadlineTimeout(Timeout):
    """A urllib3 timeout whose every attempt gets what is left of one absolute deadline as its
    total (connect + reads), instead of a fresh read timeout per attempt: a server that answers
    slowly, or byte by byte, cannot hold a call past its budget. urllib3 clones the timeout for
    each attempt, so the clone is where the remaining time is worked out."""

    def __init__(self, deadline: float, connect: float, read: float) -> None:
        super().__init__(connect=connect, read=read)
        self._deadline = deadline

    def clone(self) -> Timeout:
        left = max(0.001, self._deadline - time.monotonic())  # urllib3 refuses 0
        return Timeout(connect=min(self._connect, left), read=self._read, total=left)  # type: ignore[arg-type]


class _Tracked:
    """Connections that note themselves as the one the current call uses, so a watchdog can cut
    the call at its deadline: urllib3's timeouts are per socket read, and a server sending its
    status line and headers a byte at a time passes every one of them."""

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        holder = getattr(_call_deadline, "holder", None)
        if holder is not None:
            holder["connection"] = self
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _TrackedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool,
                                                   "https": _TrackedHTTPSPool}


def _cut(holder: dict) -> None:
    """The watchdog: shut the call's socket, so whatever read it is blocked in ends now."""
    sock = getattr(holder.get("connection"), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _retrying_session(retries: int, statuses: tuple[int, ...]) -> requests.Session:
    retry = _DeadlineRetry(
        total=retries, connect=retries, read=retries, status=retries,
        backoff_factor=0.5, backoff_max=4.0,
        status_forcelist=statuses,
        allowed_methods=frozenset({"GET"}),
        # A long Retry-After would hold a request thread hostage; back off on our own terms.
        respect_retry_after_header=False,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = _TrackedAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@dataclass(frozen=True)
class Reply:
    """An upstream answer as read: status, the headers a provider may need, the whole body."""
    status: int
    body: bytes
    headers: Mapping[str, str]


class UpstreamHttp:
    """Bounded GETs to one provider (`label` names it in messages, e.g. "Electricity Maps")."""

    def __init__(self, label: str, connect_timeout: float = 1.5, read_timeout: float = 10.0,
                 retries: int = 2, call_seconds: float = 4.0,
                 observer: Optional[CallObserver] = None, retry_statuses=(429, 500, 502, 503, 504)):
        self.label = label
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self.call_seconds = call_seconds  # one call, every attempt and backoff included
        self._session = _retrying_session(retries, tuple(retry_statuses))
        self._observer = observer

    def get(self, url: str, *, endpoint: str, subject: str = "", params: Optional[Mapping] = None,
            headers: Optional[Mapping[str, str]] = None, auth: Optional[tuple[str, str]] = None,
            zone: Optional[str] = None) -> Reply:
        """GET `url` within `call_seconds` in all. `endpoint` labels the call in metrics and logs
        (never a secret or a full URL), `subject` names what was asked in messages ("zone DE"),
        `zone` is the zone a failure is about. Raises UpstreamUnavailable when the provider cannot
        be reached, or does not answer (headers and whole body) in time, or sends too much."""
        subject = subject or endpoint
        started = time.monotonic()
        deadline = started + self.call_seconds
        outcome = "error"
        _call_deadline.at = deadline
        _call_deadline.holder = holder = {}
        watchdog = threading.Timer(self.call_seconds, _cut, args=(holder,))
        watchdog.daemon = True
        watchdog.start()
        try:
            # Streamed, so that the body is read under the same deadline (and size cap) as the
            # rest of the call: a non-streamed read waits per socket read, however long in all.
            with self._session.get(
                    url, params=params, headers=dict(headers or {}), auth=auth,
                    timeout=_DeadlineTimeout(deadline, self._connect_timeout, self._read_timeout),
                    stream=True) as response:
                outcome = str(response.status_code)
                body = self._read_body(zone or "", subject, response, deadline)
                reply_headers = {k.lower(): v for k, v in response.headers.items()}
            if body is None:
                outcome = "timeout"
                raise UpstreamUnavailable(
                    zone or "", f"{self.label} did not answer for {subject} within {self.call_seconds:g} s")
            return Reply(response.status_code, body, reply_headers)
        except requests.RequestException as exc:
            outcome = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            raise UpstreamUnavailable(
                zone or "", f"{self.label} could not be reached for {subject} ({type(exc).__name__})"
            ) from None
        finally:
            watchdog.cancel()
            del _call_deadline.at, _call_deadline.holder
            elapsed = time.monotonic() - started
            if self._observer:
                self._observer(endpoint, outcome, elapsed)
            log.info("upstream call", extra={"endpoint": endpoint, "zone": zone, "outcome": outcome,
                                             "seconds": round(elapsed, 3)})

    def _read_body(self, zone: str, subject: str, response: requests.Response,
                   deadline: float) -> Optional[bytes]:
        """The body, or None if the deadline passed while reading it. read1 returns what one
        socket read brings, so a body sent a byte at a time meets the deadline check between
        reads (iter_content would wait to fill each chunk)."""
        body = bytearray()
        try:
            while chunk := response.raw.read1(64 * 1024, decode_content=True):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise UpstreamUnavailable(
                        zone, f"{self.label} sent more than {MAX_BODY_BYTES} bytes for {subject}")
                if time.monotonic() > deadline:
                    return None
        except urllib3.exceptions.HTTPError:  # a read timeout or a connection cut mid-body
            return None
        return bytes(body)


def retry_after_seconds(reply: Reply, default: float) -> float:
    """The wait a 429 or 503 asks for (Retry-After in seconds; an HTTP date counts as `default`)."""
    try:
        return max(0.0, float(reply.headers.get("retry-after", default)))
    except ValueError:
        return default


__all__ = ["CallObserver", "MAX_BODY_BYTES", "Reply", "UpstreamHttp", "retry_after_seconds"]
