"""WattTime API v3 client: the marginal operating emissions rate (signal `co2_moer`) of a grid
region: its forecast, recent history, the regions this account may use, and the region at given
coordinates.

The wire format, from WattTime's documentation (docs.watttime.org and its v2-to-v3 transition
guide) and its Python SDK (github.com/WattTime/watttime-python-client):

| call                     | query                                               | answer                                |
|--------------------------|-----------------------------------------------------|---------------------------------------|
| GET /login (HTTP Basic)  |                                                     | {"token": ...} (lives ~30 min)        |
| GET /v3/forecast         | region, signal_type, horizon_hours (0-72)           | {"data": [{point_time, value}], "meta"} |
| GET /v3/historical       | region, signal_type, start, end (<= 32 days a call) | same shape                            |
| GET /v3/my-access        |                                                     | {"signal_types": [{signal_type, regions: [{region, endpoints: [{endpoint}]}]}]} |
| GET /v3/region-from-loc  | latitude, longitude, signal_type                    | {"region", "region_full_name", "signal_type"} |

Every call but /login carries `Authorization: Bearer <token>`. Values are in `meta.units`,
lbs_co2_per_mwh, on a `meta.data_point_period_seconds` (300 s) grid; this client answers g/kWh.
Limits: 3,000 calls in 5 minutes an account, 100 of them logins; a 429 past that. The token,
the login lock and a 429's pause are shared by every worker (watttime_token.py).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from carbon_optimizer.data.providers.base import G_CO2_PER_KWH
from carbon_optimizer.data.providers.upstream_http import (CallObserver, Reply, UpstreamHttp,
                                                           retry_after_seconds)
from carbon_optimizer.data.providers.watttime_token import TOKEN_SECONDS, WattTimeTokens
from carbon_optimizer.errors import InvalidToken, UpstreamUnavailable, ZoneNotEntitled, ZoneNotFound
from carbon_optimizer.timeseries import ForecastSeries, parse_utc, rfc3339, series_from_points

log = logging.getLogger(__name__)

SIGNAL_TYPE = "co2_moer"
WIRE_UNITS = "lbs_co2_per_mwh"
# lbs/MWh to g/kWh: 453.59237 g a pound, 1,000 kWh a MWh.
G_PER_KWH_PER_LBS_PER_MWH = 0.45359237
MAX_HORIZON_HOURS = 72  # what /v3/forecast serves at most
MAX_HISTORY_SPAN = timedelta(days=32)  # /v3/historical answers at most this much a call
STEP = timedelta(minutes=5)
# The pause after a 429 that names none (WattTime's limits are counted over 5 minutes).
DEFAULT_RETRY_AFTER = 60.0


class WattTimeProvider:
    name = "watttime"
    signal = "marginal"
    units = G_CO2_PER_KWH
    shared_cache = True

    def __init__(self, base_url: str, username: Callable[[], Optional[str]],
                 password: Callable[[], Optional[str]], horizon_hours: int = 72,
                 connect_timeout: float = 1.5, read_timeout: float = 10.0, retries: int = 2,
                 call_seconds: float = 4.0, observer: Optional[CallObserver] = None,
                 history_days: int = 10, redis_url: Optional[str] = None,
                 key_prefix: str = "carbon-optimizer:", token_seconds: float = TOKEN_SECONDS,
                 default_retry_after: float = DEFAULT_RETRY_AFTER,
                 tokens: Optional[WattTimeTokens] = None):
        self._base_url = base_url.rstrip("/")
        # Callables, so that a rotated login is used at once.
        self._username, self._password = username, password
        self._horizon_hours = max(0, min(MAX_HORIZON_HOURS, horizon_hours))
        # 429 is not retried here: WattTime's Retry-After is honoured by pausing every worker.
        self._http = UpstreamHttp("WattTime", connect_timeout, read_timeout, retries, call_seconds,
                                  observer, retry_statuses=(500, 502, 503, 504))
        self._history_days = history_days
        self._default_retry_after = default_retry_after
        self.tokens = tokens or WattTimeTokens(redis_url, key_prefix, token_seconds=token_seconds)

    # -- endpoints -------------------------------------------------------------------------------

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        body = self._call("v3/forecast", zone, {"region": zone, "signal_type": SIGNAL_TYPE,
                                                "horizon_hours": self._horizon_hours})
        return self._series(zone, body, "forecast")

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        """The last `history_days` of the measured rate, in calls of at most 32 days; None when
        the account's plan covers this region's forecast but not its history."""
        end = _floor_step(now)
        start = end - timedelta(days=self._history_days)
        points: list[tuple[datetime, Optional[float]]] = []
        while start < end:
            until = min(end, start + MAX_HISTORY_SPAN)
            try:
                body = self._call("v3/historical", zone, {
                    "region": zone, "signal_type": SIGNAL_TYPE,
                    "start": start.isoformat(), "end": until.isoformat()})
            except ZoneNotEntitled:
                log.info("no WattTime history for region %s (not in the plan)", zone)
                return None
            points += self._points(zone, body, "history")[0]
            start = until  # both ends are inclusive: the shared point is counted once
        return self._grid(zone, points, None, "history")

    def zones(self) -> list[str]:
        """The regions whose co2_moer forecast this account may use (from /v3/my-access)."""
        body = self._call("v3/my-access", None, {})
        try:
            regions = {region["region"]
                       for signal in body["signal_types"] if signal.get("signal_type") == SIGNAL_TYPE  # type: ignore[index]
                       for region in signal["regions"]
                       if any(e.get("endpoint") == "v3/forecast" for e in region.get("endpoints", ()))}
            if not all(isinstance(r, str) and r for r in regions):
                raise ValueError
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamUnavailable("", "WattTime sent a malformed my-access answer") from None
        if not regions:
            raise InvalidToken("", f"the WattTime account may use no region's {SIGNAL_TYPE} forecast")
        return sorted(regions)

    def locate(self, latitude: float, longitude: float) -> str:
        where = f"latitude {latitude:g}, longitude {longitude:g}"
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ZoneNotFound("", f"{where} is not a place on Earth")
        body = self._call("v3/region-from-loc", None, {
            "latitude": f"{latitude:g}", "longitude": f"{longitude:g}", "signal_type": SIGNAL_TYPE},
            subject=where, not_found=f"WattTime covers no region at {where}")
        region = body.get("region") if isinstance(body, dict) else None
        if not isinstance(region, str) or not region:
            raise UpstreamUnavailable("", f"WattTime sent a malformed region-from-loc answer for {where}")
        return region

    # -- calls: the token, one login again on a 401, the pause after a 429 ---------------------

    def _call(self, path: str, zone: Optional[str], params: dict, subject: str = "",
              not_found: Optional[str] = None) -> object:
        """GET `{base}/{path}` with the shared token and decode its JSON. `zone` is the region the
        call is about (None for the calls about no one region); `subject` names the call in
        messages; `not_found` is the ZoneNotFound message of a 400 or 404 to a call about no
        region (a region's own is built here). A 401 logs in again once and retries once."""
        subject = subject or (f"region {zone}" if zone else path)
        user, password = self._username(), self._password()
        if not user or not password:
            raise InvalidToken(zone or "", "no WattTime username and password are configured")

        def login() -> str:
            return self._login(user, password, zone)

        self._check_pause(zone, subject)
        token = self.tokens.current(user) or self.tokens.obtain(user, login)
        reply = self._send(path, zone, params, token, subject)
        if reply.status == 401:
            log.info("WattTime refused its token; logging in again once", extra={"endpoint": path})
            token = self.tokens.obtain(user, login, stale=token)
            reply = self._send(path, zone, params, token, subject)
            if reply.status == 401:
                raise InvalidToken(zone or "", f"WattTime refused a new login token for {subject}")
        return self._decode(zone, subject, reply, not_found)

    def _send(self, path: str, zone: Optional[str], params: dict, token: str, subject: str) -> Reply:
        self._check_pause(zone, subject)  # a login may have been told to wait
        reply = self._http.get(f"{self._base_url}/{path}", endpoint=path, params=params,
                               headers={"Authorization": f"Bearer {token}"}, zone=zone, subject=subject)
        self._note_429(zone, subject, reply)
        return reply

    def _login(self, user: str, password: str, zone: Optional[str]) -> str:
        reply = self._http.get(f"{self._base_url}/login", endpoint="login", auth=(user, password),
                               zone=zone, subject="login")
        self._note_429(zone, "login", reply)
        if reply.status in (401, 403):
            raise InvalidToken(zone or "", "WattTime refused the configured username and password")
        if reply.status >= 400:
            raise UpstreamUnavailable(zone or "", f"WattTime answered HTTP {reply.status} to login")
        try:
            token = json.loads(reply.body)["token"]
            if not isinstance(token, str) or not token:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise UpstreamUnavailable(zone or "", "WattTime sent no token on login") from None
        log.info("logged in to WattTime")
        return token

    def _check_pause(self, zone: Optional[str], subject: str) -> None:
        until = self.tokens.paused_until()
        if until is not None:
            raise UpstreamUnavailable(zone or "", _paused_message(subject, until, self.tokens.clock()))

    def _note_429(self, zone: Optional[str], subject: str, reply: Reply) -> None:
        if reply.status != 429:
            return
        until = self.tokens.pause(retry_after_seconds(reply, self._default_retry_after))
        log.warning("WattTime rate limit (HTTP 429): no calls until %s", rfc3339(_utc(until)))
        raise UpstreamUnavailable(zone or "", _paused_message(subject, until, self.tokens.clock()))

    # -- wire format -----------------------------------------------------------------------------

    @staticmethod
    def _decode(zone: Optional[str], subject: str, reply: Reply, not_found: Optional[str]) -> object:
        status = reply.status
        if zone is not None:
            if status == 403:
                raise ZoneNotEntitled(zone, f"the WattTime account's plan does not cover region {zone} "
                                            f"({SIGNAL_TYPE})")
            not_found = f"WattTime has no {SIGNAL_TYPE} region {zone} (HTTP {status})"
        if status in (400, 404) and not_found:
            raise ZoneNotFound(zone or "", not_found)
        if status == 403:
            raise InvalidToken(zone or "", f"WattTime refused the account access to {subject}")
        if status >= 400:
            raise UpstreamUnavailable(zone or "", f"WattTime answered HTTP {status} for {subject}")
        try:
            return json.loads(reply.body)
        except ValueError:
            raise UpstreamUnavailable(zone or "", f"WattTime sent invalid JSON for {subject}") from None

    def _series(self, zone: str, body: object, kind: str) -> ForecastSeries:
        points, generated = self._points(zone, body, kind)
        return self._grid(zone, points, generated, kind, _period(body))

    def _points(self, zone: str, body: object, kind: str
                ) -> tuple[list[tuple[datetime, Optional[float]]], Optional[datetime]]:
        """The points of a forecast or history answer in g/kWh, and when it was generated."""
        try:
            meta = body["meta"]  # type: ignore[index]
            units = meta.get("units")
            signal = meta.get("signal_type", SIGNAL_TYPE)
            data = body["data"]  # type: ignore[index]
            if not isinstance(data, list):
                raise TypeError
        except (KeyError, TypeError, AttributeError):
            raise UpstreamUnavailable(zone, f"WattTime sent a malformed {kind} for region {zone}") from None
        if units != WIRE_UNITS:
            raise UpstreamUnavailable(zone, f"WattTime sent the {kind} for region {zone} in {units!r}; "
                                            f"only {WIRE_UNITS} is understood")
        if signal != SIGNAL_TYPE:
            raise UpstreamUnavailable(zone, f"WattTime sent a {signal!r} {kind} for region {zone}, "
                                            f"not {SIGNAL_TYPE}")
        try:
            parsed: list[tuple[datetime, Optional[float]]] = []
            for point in data:
                value = point.get("value")
                if value is not None:
                    value = float(value) * G_PER_KWH_PER_LBS_PER_MWH
                    if not math.isfinite(value) or not (0.0 <= value < 1e5):
                        value = None
                parsed.append((parse_utc(point["point_time"]), value))
            generated = meta.get("generated_at")
            return parsed, (parse_utc(generated) if generated else None)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamUnavailable(zone, f"WattTime sent a malformed {kind} for region {zone}") from None

    def _grid(self, zone: str, points: list[tuple[datetime, Optional[float]]],
              generated: Optional[datetime], kind: str, period: Optional[int] = None) -> ForecastSeries:
        try:
            series = series_from_points(zone, self.name, points, generated)
        except ValueError:
            raise UpstreamUnavailable(zone, f"WattTime sent an empty {kind} for region {zone}") from None
        period = period or int(STEP.total_seconds())
        if len(series.values) == 1:  # one point gives no gap to measure: its period is the step
            return replace(series, step_seconds=period)
        if series.step_seconds != period:
            raise UpstreamUnavailable(zone, f"WattTime sent a {kind} for region {zone} with points "
                                            f"{series.step_seconds} s apart; its meta says {period} s")
        return series


def _period(body: object) -> Optional[int]:
    try:
        period = int(body["meta"]["data_point_period_seconds"])  # type: ignore[index]
        return period if period > 0 else None
    except (KeyError, TypeError, ValueError):
        return None


def _floor_step(moment: datetime) -> datetime:
    moment = moment.astimezone(timezone.utc).replace(second=0, microsecond=0)
    return moment - timedelta(minutes=moment.minute % 5)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc)


def _paused_message(subject: str, until: float, now: float) -> str:
    return (f"WattTime asked for a pause (HTTP 429); {subject} not asked, the next call is at "
            f"{rfc3339(_utc(until))} (in {max(1, math.ceil(until - now))} s)")


__all__ = ["G_PER_KWH_PER_LBS_PER_MWH", "SIGNAL_TYPE", "WattTimeProvider"]
