"""Electricity Maps API v3 client: carbon-intensity forecast, latest and history (past-range) for a zone."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import Timeout
from urllib3.util.retry import Retry

from carbon_optimizer.errors import InvalidToken, UpstreamUnavailable, ZoneNotEntitled, ZoneNotFound
from carbon_optimizer.timeseries import ForecastSeries, parse_utc, series_from_points

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


def _retrying_session(retries: int) -> requests.Session:
    retry = _DeadlineRetry(
        total=retries, connect=retries, read=retries, status=retries,
        backoff_factor=0.5, backoff_max=4.0,
        status_forcelist=(429, 500, 502, 503, 504),
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


class ElectricityMapsProvider:
    name = "electricitymaps"
    shared_cache = True

    def __init__(self, base_url: str, api_key: Callable[[], Optional[str]], horizon_hours: int = 72,
                 connect_timeout: float = 1.5, read_timeout: float = 10.0, retries: int = 2,
                 call_seconds: float = 4.0, observer: Optional[CallObserver] = None,
                 history_days: int = 10):
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key  # a callable, so a rotated key is used at once
        self._horizon_hours = horizon_hours
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._call_seconds = call_seconds  # one call, every attempt and backoff included
        self._session = _retrying_session(retries)
        self._observer = observer
        self._history_days = history_days

    # -- endpoints -------------------------------------------------------------------------------

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        body = self._get("carbon-intensity/forecast", zone, {"horizonHours": self._horizon_hours})
        return self._series(zone, body, "forecast")

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        """The last `history_days` of measurements, from past-range (one call: it answers at most
        10 days of hourly data); when the token may not use past-range, the last 24 h from history."""
        end = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=self._history_days)
        try:
            body = self._get("carbon-intensity/past-range", zone, {
                "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")})
            return self._series(zone, body, "data")
        except (ZoneNotEntitled, ZoneNotFound, UpstreamUnavailable) as exc:
            log.info("no past-range for zone %s (%s); the last 24 h instead", zone, type(exc).__name__)
        body = self._get("carbon-intensity/history", zone, {})
        return self._series(zone, body, "history")

    def latest(self, zone: str) -> dict:
        body = self._get("carbon-intensity/latest", zone, {})
        if not isinstance(body, dict) or "datetime" not in body:
            raise UpstreamUnavailable(zone, f"Electricity Maps sent a malformed latest answer for {zone}")
        return {"carbon_intensity": body.get("carbonIntensity"), "datetime": body["datetime"],
                "is_estimated": body.get("isEstimated")}

    def zones(self) -> list[str]:
        """The zone keys this service's token may use: /v3/zones answers, for a token, an object
        keyed by zone key ({"DE": {"zoneName": "Germany", ...}, ...})."""
        body = self._get("zones", None, {})
        if not isinstance(body, dict) or not body or not all(isinstance(k, str) for k in body):
            raise UpstreamUnavailable("", "Electricity Maps sent a malformed zone list")
        return sorted(body)

    # -- wire format -----------------------------------------------------------------------------

    def _series(self, zone: str, body: object, list_key: str) -> ForecastSeries:
        try:
            points = body[list_key]  # type: ignore[index]
            parsed = []
            for point in points:
                value = point.get("carbonIntensity")
                if value is not None:
                    value = float(value)
                    if not (0.0 <= value < 1e5):  # NaN fails both comparisons
                        value = None
                parsed.append((parse_utc(point["datetime"]), value))
            updated = body.get("updatedAt")  # type: ignore[union-attr]
            return series_from_points(zone, self.name, parsed, parse_utc(updated) if updated else None)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamUnavailable(
                zone, f"Electricity Maps sent a malformed or empty {list_key} for zone {zone}") from None

    def _get(self, path: str, zone: Optional[str], params: dict) -> object:
        """GET one endpoint; `zone` None for the endpoints about no one zone (the zone list)."""
        key = self._api_key()
        if not key:
            raise InvalidToken(zone or "", "no Electricity Maps API key is configured")
        query = {"zone": zone, "disableCallerLookup": "true", **params} if zone else params
        started = time.monotonic()
        deadline = started + self._call_seconds
        outcome = "error"
        _call_deadline.at = deadline
        _call_deadline.holder = holder = {}
        watchdog = threading.Timer(self._call_seconds, _cut, args=(holder,))
        watchdog.daemon = True
        watchdog.start()
        try:
            # Streamed, so that the body is read under the same deadline (and size cap) as the
            # rest of the call: a non-streamed read waits per socket read, however long in all.
            with self._session.get(
                    f"{self._base_url}/{path}", params=query, headers={"auth-token": key},
                    timeout=_DeadlineTimeout(deadline, self._connect_timeout, self._read_timeout),
                    stream=True) as response:
                outcome = str(response.status_code)
                body = self._read_body(zone or "", response, deadline)
            if body is None:
                outcome = "timeout"
                raise UpstreamUnavailable(
                    zone or "", f"Electricity Maps did not answer for {f'zone {zone}' if zone else path} "
                                f"within {self._call_seconds:g} s")
            if zone is None:
                return self._decode_list(response.status_code, body)
            return self._decode(zone, response.status_code, body)
        except requests.RequestException as exc:
            outcome = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            raise UpstreamUnavailable(
                zone or "", f"Electricity Maps could not be reached for "
                            f"{f'zone {zone}' if zone else path} ({type(exc).__name__})"
            ) from None
        finally:
            watchdog.cancel()
            del _call_deadline.at, _call_deadline.holder
            elapsed = time.monotonic() - started
            if self._observer:
                self._observer(path, outcome, elapsed)
            log.info("upstream call", extra={"endpoint": path, "zone": zone, "outcome": outcome,
                                             "seconds": round(elapsed, 3)})

    @staticmethod
    def _decode_list(status: int, body: bytes) -> object:
        if status in (401, 403):
            raise InvalidToken("", "Electricity Maps rejected the API token")
        if status >= 400:
            raise UpstreamUnavailable("", f"Electricity Maps answered HTTP {status} for its zone list")
        try:
            return json.loads(body)
        except ValueError:
            raise UpstreamUnavailable("", "Electricity Maps sent invalid JSON for its zone list") from None

    @staticmethod
    def _read_body(zone: str, response: requests.Response, deadline: float) -> Optional[bytes]:
        """The body, or None if the deadline passed while reading it. read1 returns what one
        socket read brings, so a body sent a byte at a time meets the deadline check between
        reads (iter_content would wait to fill each chunk)."""
        body = bytearray()
        try:
            while chunk := response.raw.read1(64 * 1024, decode_content=True):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise UpstreamUnavailable(
                        zone, f"Electricity Maps sent more than {MAX_BODY_BYTES} bytes for zone {zone}")
                if time.monotonic() > deadline:
                    return None
        except urllib3.exceptions.HTTPError:  # a read timeout or a connection cut mid-body
            return None
        return bytes(body)

    @staticmethod
    def _decode(zone: str, status: int, body: bytes) -> object:
        if status in (401, 403):
            # Both a bad token and a token without access to this zone answer 401; only the
            # body tells them apart, and the zone-scoped refusal mentions the zone.
            text = body[:500].decode("utf-8", "replace").lower()
            if "zone" in text:
                raise ZoneNotEntitled(zone, f"the Electricity Maps token is not entitled to zone {zone}")
            raise InvalidToken(zone, "Electricity Maps rejected the API token")
        if status == 404:
            raise ZoneNotFound(zone, f"Electricity Maps has no data for zone {zone}")
        if status == 400:
            raise ZoneNotFound(zone, f"Electricity Maps does not accept zone {zone}")
        if status >= 400:
            raise UpstreamUnavailable(zone, f"Electricity Maps answered HTTP {status} for zone {zone}")
        try:
            return json.loads(body)
        except ValueError:
            raise UpstreamUnavailable(zone, f"Electricity Maps sent invalid JSON for zone {zone}") from None


__all__ = ["ElectricityMapsProvider"]
