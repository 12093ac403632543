"""Electricity Maps API v3 client: carbon-intensity forecast, latest and history (past-range) for a zone."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from carbon_optimizer.data.providers.base import G_PER_KWH
from carbon_optimizer.data.providers.upstream_http import CallObserver, UpstreamHttp
from carbon_optimizer.errors import InvalidToken, UpstreamUnavailable, ZoneNotEntitled, ZoneNotFound
from carbon_optimizer.timeseries import ForecastSeries, parse_utc, series_from_points

log = logging.getLogger(__name__)


class ElectricityMapsProvider:
    name = "electricitymaps"
    signal = "average"
    units = G_PER_KWH
    shared_cache = True

    def __init__(self, base_url: str, api_key: Callable[[], Optional[str]], horizon_hours: int = 72,
                 connect_timeout: float = 1.5, read_timeout: float = 10.0, retries: int = 2,
                 call_seconds: float = 4.0, observer: Optional[CallObserver] = None,
                 history_days: int = 10):
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key  # a callable, so a rotated key is used at once
        self._horizon_hours = horizon_hours
        self._http = UpstreamHttp("Electricity Maps", connect_timeout, read_timeout, retries,
                                  call_seconds, observer)
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
        reply = self._http.get(f"{self._base_url}/{path}", endpoint=path, params=query,
                               headers={"auth-token": key}, zone=zone,
                               subject=f"zone {zone}" if zone else path)
        if zone is None:
            return self._decode_list(reply.status, reply.body)
        return self._decode(zone, reply.status, reply.body)

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
