"""Electricity Maps API client (v4, and v3 where a deployment still points at it): carbon-intensity
forecast, latest and history (past-range) for a zone, the zone list, and the zone at coordinates.

The base URL decides the version (its last path segment, `/v4` or `/v3`). What this client uses is
the same in both, as Electricity Maps documents them (app.electricitymaps.com/developer-hub/api/
reference; the v3 page static.electricitymaps.com/api/docs): the endpoint paths under the base
(`carbon-intensity/{forecast,past-range,history,latest}`, `zones`); the query parameters `zone`,
or `lat` and `lon` instead, `horizonHours`, `start`/`end`, `emissionFactorType`; and the answers'
`zone`, `forecast`/`data`/`history` lists of `{datetime, carbonIntensity}` in gCO2eq/kWh, and
`updatedAt`. The differences that matter here:

| | v3 | v4 |
|---|---|---|
| `zones` entries | `{zoneName, countryName, access}` | `{zoneKey, displayName, countryName, ...}` (only the keys are read) |
| forecast `horizonHours` | any hour count | 6, 24, 48 or 72 (we ask the next of these at or above the configured horizon) |
| answers | | also carry `temporalGranularity` |

`emissionFactorType` ("lifecycle", the API's default, or "direct") is a documented parameter of
every carbon-intensity endpoint in both versions, so it is always sent: the signal a provider
instance claims then does not rest on the API's default. A point or answer that says it was
computed with other factors than asked is refused.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional
from urllib.parse import urlsplit

from carbon_optimizer.data.providers.base import G_PER_KWH
from carbon_optimizer.data.providers.upstream_http import CallObserver, UpstreamHttp
from carbon_optimizer.errors import InvalidToken, UpstreamUnavailable, ZoneNotEntitled, ZoneNotFound
from carbon_optimizer.timeseries import ForecastSeries, parse_utc, series_from_points

log = logging.getLogger(__name__)

# Emission factor type (the API's `emissionFactorType`) -> the signal its intensities are (base.SIGNALS).
EMISSION_FACTOR_SIGNALS = {"lifecycle": "average", "direct": "average_direct"}

API_VERSIONS = ("v3", "v4")
DEFAULT_API_VERSION = "v4"

# The forecast horizons v4 accepts (`horizonHours`).
V4_HORIZONS = (6, 24, 48, 72)


def api_version(base_url: str) -> str:
    """The API version a base URL names (its last path segment); a base naming neither (a proxy
    at its own path) is taken to speak the default, v4."""
    last = urlsplit(base_url).path.rstrip("/").rpartition("/")[2].lower()
    return last if last in API_VERSIONS else DEFAULT_API_VERSION


class ElectricityMapsProvider:
    name = "electricitymaps"
    signal = "average"  # per instance: "average_direct" with emission_factor_type="direct"
    units = G_PER_KWH
    shared_cache = True

    def __init__(self, base_url: str, api_key: Callable[[], Optional[str]], horizon_hours: int = 72,
                 connect_timeout: float = 1.5, read_timeout: float = 10.0, retries: int = 2,
                 call_seconds: float = 4.0, observer: Optional[CallObserver] = None,
                 history_days: int = 10, emission_factor_type: str = "lifecycle"):
        if emission_factor_type not in EMISSION_FACTOR_SIGNALS:
            raise ValueError(f"emission_factor_type must be one of {sorted(EMISSION_FACTOR_SIGNALS)}, "
                             f"not {emission_factor_type!r}")
        self._base_url = base_url.rstrip("/")
        self.api_version = api_version(self._base_url)
        self.emission_factor_type = emission_factor_type
        self.signal = EMISSION_FACTOR_SIGNALS[emission_factor_type]
        self._api_key = api_key  # a callable, so a rotated key is used at once
        self._horizon_hours = horizon_hours
        self._http = UpstreamHttp("Electricity Maps", connect_timeout, read_timeout, retries,
                                  call_seconds, observer)
        self._history_days = history_days

    # -- endpoints -------------------------------------------------------------------------------

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        body = self._get("carbon-intensity/forecast", zone, {
            "horizonHours": self._forecast_horizon(), **self._factors()})
        return self._series(zone, body, "forecast")

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        """The last `history_days` of measurements, from past-range (one call: it answers at most
        10 days of hourly data); when the token may not use past-range, the last 24 h from history."""
        end = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=self._history_days)
        try:
            body = self._get("carbon-intensity/past-range", zone, {
                "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                **self._factors()})
            return self._series(zone, body, "data")
        except (ZoneNotEntitled, ZoneNotFound, UpstreamUnavailable) as exc:
            log.info("no past-range for zone %s (%s); the last 24 h instead", zone, type(exc).__name__)
        body = self._get("carbon-intensity/history", zone, self._factors())
        return self._series(zone, body, "history")

    def latest(self, zone: str) -> dict:
        body = self._get("carbon-intensity/latest", zone, self._factors())
        if not isinstance(body, dict) or "datetime" not in body:
            raise UpstreamUnavailable(zone, f"Electricity Maps sent a malformed latest answer for {zone}")
        self._check_factors(zone, body, "latest")
        return {"carbon_intensity": body.get("carbonIntensity"), "datetime": body["datetime"],
                "is_estimated": body.get("isEstimated")}

    def zones(self) -> list[str]:
        """The zone keys this service's token may use: `zones` answers, for a token, an object
        keyed by zone key ({"DE": {...}, ...}; the entries' fields differ between v3 and v4)."""
        body = self._get("zones", None, {})
        if not isinstance(body, dict) or not body or not all(isinstance(k, str) for k in body):
            raise UpstreamUnavailable("", "Electricity Maps sent a malformed zone list")
        return sorted(body)

    def locate(self, latitude: float, longitude: float) -> str:
        """The zone at these coordinates, as Electricity Maps resolves them: every endpoint takes
        `lat` and `lon` instead of `zone` and answers with the `zone` it chose. carbon-intensity/
        latest is the cheapest such call (one point, and on every plan, the free one included).
        The caller-IP fallback is turned off, so that coordinates outside every zone are a
        ZoneNotFound rather than the zone this service runs in."""
        if not (math.isfinite(latitude) and math.isfinite(longitude)
                and -90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ZoneNotFound("", f"({latitude}, {longitude}) are not coordinates "
                                   "(latitude -90..90, longitude -180..180)")
        where = f"({latitude:.4f}, {longitude:.4f})"
        key = self._key("")
        reply = self._http.get(
            f"{self._base_url}/carbon-intensity/latest", endpoint="carbon-intensity/latest",
            params={"lat": f"{latitude:.6f}", "lon": f"{longitude:.6f}",
                    # Both spellings of "no fallback to the caller's IP" that the docs have used.
                    "disableCallerLookup": "true", "shouldUseFallbackCallerLookup": "false"},
            headers={"auth-token": key}, subject=f"the zone at {where}")
        if reply.status in (400, 404):
            raise ZoneNotFound("", f"Electricity Maps has no zone at {where}")
        body = self._decode("", reply.status, reply.body, f"the zone at {where}")
        zone = body.get("zone") if isinstance(body, dict) else None
        if not isinstance(zone, str) or not zone:
            raise UpstreamUnavailable("", f"Electricity Maps named no zone for {where}")
        return zone

    # -- wire format -----------------------------------------------------------------------------

    def _factors(self) -> dict:
        return {"emissionFactorType": self.emission_factor_type}

    def _forecast_horizon(self) -> int:
        if self.api_version == "v3":
            return self._horizon_hours
        return next((h for h in V4_HORIZONS if h >= self._horizon_hours), V4_HORIZONS[-1])

    def _check_factors(self, zone: str, item: dict, what: str) -> None:
        """Refuse data computed with other emission factors than asked (a version or proxy that
        ignored the parameter): it would be served as the wrong signal."""
        said = item.get("emissionFactorType")
        if said is not None and said != self.emission_factor_type:
            raise UpstreamUnavailable(
                zone, f"Electricity Maps sent {said} emission factors for zone {zone} ({what}), "
                      f"asked for {self.emission_factor_type}")

    def _series(self, zone: str, body: object, list_key: str) -> ForecastSeries:
        try:
            self._check_factors(zone, body, list_key)  # type: ignore[arg-type]
            points = body[list_key]  # type: ignore[index]
            parsed = []
            for point in points:
                self._check_factors(zone, point, list_key)
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

    def _key(self, zone: str) -> str:
        key = self._api_key()
        if not key:
            raise InvalidToken(zone, "no Electricity Maps API key is configured")
        return key

    def _get(self, path: str, zone: Optional[str], params: dict) -> object:
        """GET one endpoint; `zone` None for the endpoints about no one zone (the zone list)."""
        key = self._key(zone or "")
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
    def _decode(zone: str, status: int, body: bytes, subject: str = "") -> object:
        subject = subject or f"zone {zone}"
        if status in (401, 403):
            # Both a bad token and a token without access to this zone answer 401; only the
            # body tells them apart, and the zone-scoped refusal mentions the zone.
            text = body[:500].decode("utf-8", "replace").lower()
            if "zone" in text:
                raise ZoneNotEntitled(zone, f"the Electricity Maps token is not entitled to {subject}")
            raise InvalidToken(zone, "Electricity Maps rejected the API token")
        if status == 404:
            raise ZoneNotFound(zone, f"Electricity Maps has no data for {subject}")
        if status == 400:
            raise ZoneNotFound(zone, f"Electricity Maps does not accept {subject}")
        if status >= 400:
            raise UpstreamUnavailable(zone, f"Electricity Maps answered HTTP {status} for {subject}")
        try:
            return json.loads(body)
        except ValueError:
            raise UpstreamUnavailable(zone, f"Electricity Maps sent invalid JSON for {subject}") from None


__all__ = ["API_VERSIONS", "EMISSION_FACTOR_SIGNALS", "ElectricityMapsProvider", "api_version"]
