"""NESO Carbon Intensity API client (Great Britain, no key, CC BY 4.0): the national and regional
half-hourly forecasts, recent history, and a region found by short name, outward postcode or
coordinates.

Zone keys: "GB" for the national figures, "GB-1" .. "GB-17" for NESO's regions (REGIONS).
Wire format from NESO's API docs (carbon-intensity.github.io/api-definitions) and, where the live
API answers otherwise, from what it was seen to answer (named where it matters below).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Optional
from urllib.parse import quote

from carbon_optimizer.data.providers.base import G_CO2_PER_KWH
from carbon_optimizer.data.providers.upstream_http import CallObserver, UpstreamHttp
from carbon_optimizer.errors import UpstreamUnavailable, ZoneNotFound
from carbon_optimizer.timeseries import ForecastSeries, parse_utc, series_from_points

NATIONAL = "GB"

# NESO's region ids and short names, from the region list of its API docs
# (carbon-intensity.github.io/api-definitions/#region-list): 1-14 are the distribution (DNO)
# areas, 15-17 the nations. (The live API also answers an 18, GB, which its docs do not list.)
REGIONS: dict[int, str] = {
    1: "North Scotland",
    2: "South Scotland",
    3: "North West England",
    4: "North East England",
    5: "Yorkshire",
    6: "North Wales & Merseyside",
    7: "South Wales",
    8: "West Midlands",
    9: "East Midlands",
    10: "East England",
    11: "South West England",
    12: "South England",
    13: "London",
    14: "South East England",
    15: "England",
    16: "Scotland",
    17: "Wales",
}

# Where locate() looks: each DNO region's main city first, then one or two more where the main city
# alone would hand a large city to a neighbour (Plymouth to South Wales, Norwich to London...).
# City-centre coordinates as GeoNames and Wikipedia give them, rounded to 0.01 degree. The nations
# (15-17) are unions of these regions, so a point is always placed in the finer one.
REFERENCE_POINTS: dict[int, tuple[tuple[str, float, float], ...]] = {
    1: (("Inverness", 57.48, -4.22), ("Aberdeen", 57.15, -2.09), ("Perth", 56.40, -3.44)),
    2: (("Glasgow", 55.86, -4.25), ("Edinburgh", 55.95, -3.19), ("Dumfries", 55.07, -3.61)),
    3: (("Manchester", 53.48, -2.24), ("Preston", 53.76, -2.70), ("Carlisle", 54.89, -2.93)),
    4: (("Newcastle upon Tyne", 54.98, -1.62), ("Middlesbrough", 54.57, -1.23)),
    5: (("Leeds", 53.80, -1.55), ("Sheffield", 53.38, -1.47), ("Hull", 53.74, -0.33)),
    6: (("Liverpool", 53.41, -2.99), ("Bangor", 53.23, -4.13), ("Chester", 53.19, -2.89)),
    7: (("Cardiff", 51.48, -3.18), ("Swansea", 51.62, -3.94), ("Carmarthen", 51.86, -4.31)),
    8: (("Birmingham", 52.49, -1.89), ("Shrewsbury", 52.71, -2.75), ("Hereford", 52.06, -2.72)),
    9: (("Nottingham", 52.95, -1.16), ("Leicester", 52.64, -1.13), ("Lincoln", 53.23, -0.54)),
    10: (("Cambridge", 52.21, 0.12), ("Norwich", 52.63, 1.30), ("Chelmsford", 51.74, 0.47)),
    11: (("Exeter", 50.72, -3.53), ("Bristol", 51.45, -2.59), ("Plymouth", 50.38, -4.14),
         ("Truro", 50.26, -5.05)),
    12: (("Southampton", 50.91, -1.40), ("Reading", 51.45, -0.98), ("Oxford", 51.75, -1.26)),
    13: (("London", 51.51, -0.13),),
    14: (("Brighton", 50.82, -0.14), ("Maidstone", 51.27, 0.52), ("Canterbury", 51.28, 1.08)),
}

# Great Britain's bounding box (Scilly to Shetland, the Outer Hebrides to Lowestoft), less the
# parts of it that are not on GB's grid: the island of Ireland and the Isle of Man.
GB_BOX = (49.8, 60.9, -8.7, 1.8)  # latitude min, max; longitude min, max
NOT_GB_BOXES = (
    (51.4, 55.25, -8.7, -5.4),   # Ireland and Northern Ireland, south of Kintyre's tip
    (55.25, 55.45, -8.7, -6.6),  # Donegal's north coast, west of Islay
    (54.0, 54.45, -4.85, -4.3),  # the Isle of Man
)

# NESO's docs limit a {from}/{to} call to 14 days (the 2018 swagger said 30 for the national
# route; the current docs and its clients say 14 for both routes, so 14 is safe for each).
MAX_RANGE = timedelta(days=14)

# An outward postcode (the part before the space: "RG10", "SW1A", "M1"); a full one's inward part.
_OUTWARD = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")
_INWARD = re.compile(r"^[0-9][A-Z]{2}$")
_ZONE = re.compile(r"^GB-([0-9]{1,2})$")

POSTCODE_CACHE_SIZE = 4096


def half_hour_floor(moment: datetime) -> datetime:
    """`moment` in UTC, rounded down to the half hour: every request within one half hour asks
    the same URL, so the cache (and NESO's) can answer it."""
    moment = moment.astimezone(timezone.utc)
    return moment.replace(minute=moment.minute - moment.minute % 30, second=0, microsecond=0)


def iso_minute(moment: datetime) -> str:
    """NESO's path datetime: ISO 8601 to the minute, UTC, e.g. 2026-11-23T10:00Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _fold(name: str) -> str:
    return " ".join(name.lower().replace("&", " and ").split())


_BY_NAME = {_fold(name): region for region, name in REGIONS.items()}


class NesoProvider:
    name = "neso"
    # Combustion only, so "average_direct". NESO's Carbon Intensity Forecast Methodology (issue May
    # 2024; also its API docs' summary) counts only the CO2 of generating the electricity: metered
    # power stations, imports and losses, per kWh consumed; its factors (/intensity/factors) are 0
    # gCO2/kWh for nuclear, wind, solar, hydro and pumped storage, where life-cycle factors give
    # each a few to tens. (Biomass is the one exception: 120, far below its stack CO2, so it is
    # not a combustion factor either; imports use factors for their countries' mixes.)
    signal = "average_direct"
    units = G_CO2_PER_KWH  # CO2 alone, gCO2/kWh (carbonintensity.org.uk)
    shared_cache = True
    # The credit NESO's licence (CC BY 4.0) asks every answer built on its data to give.
    attribution = "Carbon intensity data: NESO Carbon Intensity API (carbonintensity.org.uk), CC BY 4.0"

    def __init__(self, base_url: str = "https://api.carbonintensity.org.uk", horizon_hours: int = 48,
                 connect_timeout: float = 1.5, read_timeout: float = 10.0, retries: int = 2,
                 call_seconds: float = 4.0, observer: Optional[CallObserver] = None,
                 history_days: int = 10):
        self._base_url = base_url.rstrip("/")
        # NESO forecasts 24 h or 48 h ahead (fw24h, fw48h): the shorter when that is all that is asked.
        self._window = "fw24h" if horizon_hours <= 24 else "fw48h"
        self._http = UpstreamHttp("NESO", connect_timeout, read_timeout, retries, call_seconds, observer)
        self._history_days = history_days
        # A postcode's region does not change: each is asked once per process, bounded (LRU).
        self._postcodes: OrderedDict[str, str] = OrderedDict()
        self._postcodes_lock = threading.Lock()

    # -- zones -----------------------------------------------------------------------------------

    def zones(self) -> list[str]:
        return sorted([NATIONAL] + [f"GB-{region}" for region in REGIONS])

    def region_key(self, name: str) -> str:
        """The zone key of a zone key ("GB-13"), a region's short name ("london", "North
        Scotland", case and spacing ignored) or a postcode ("RG10", "RG10 8AA": its outward part,
        asked of NESO once, then remembered). Raises ZoneNotFound for none of these,
        UpstreamUnavailable when NESO cannot be asked."""
        text = " ".join(str(name).split())
        upper = text.upper()
        if upper == NATIONAL or self._region_id(upper) is not None:
            return upper
        region = _BY_NAME.get(_fold(text))
        if region is not None:
            return f"GB-{region}"
        parts = upper.split(" ")
        if len(parts) == 1 and len(upper) >= 5 and _INWARD.match(upper[-3:]) and _OUTWARD.match(upper[:-3]):
            parts = [upper[:-3], upper[-3:]]  # a full postcode written without its space
        if len(parts) == 2 and _INWARD.match(parts[1]):
            parts = parts[:1]  # a full postcode: NESO takes the outward part only
        if len(parts) == 1 and _OUTWARD.match(parts[0]):
            return self._postcode_key(parts[0])
        raise ZoneNotFound(text, f"NESO has no region named {text!r} (a short name such as "
                                 f"'London', an outward postcode such as 'RG10', or GB-1 .. GB-17)")

    def zone_named(self, name: str) -> Optional[str]:
        """NamesZones: region_key's zone, or None when NESO knows no such name."""
        try:
            return self.region_key(name)
        except ZoneNotFound:
            return None

    def locate(self, latitude: float, longitude: float) -> str:
        """The region around these coordinates: the one whose reference point (REFERENCE_POINTS)
        is nearest, as NESO has no coordinate lookup. ZoneNotFound outside Great Britain."""
        lat_lo, lat_hi, lon_lo, lon_hi = GB_BOX
        outside = not (lat_lo <= latitude <= lat_hi and lon_lo <= longitude <= lon_hi) or any(
            a <= latitude <= b and c <= longitude <= d for a, b, c, d in NOT_GB_BOXES)
        if outside:
            raise ZoneNotFound(f"{latitude:g},{longitude:g}",
                               f"NESO covers Great Britain only; ({latitude:g}, {longitude:g}) is outside it")
        scale = math.cos(math.radians(latitude))  # degrees of longitude shrink away from the equator

        def distance(point: tuple[str, float, float]) -> float:
            return math.hypot(point[1] - latitude, (point[2] - longitude) * scale)

        region = min(REFERENCE_POINTS, key=lambda r: min(distance(p) for p in REFERENCE_POINTS[r]))
        return f"GB-{region}"

    # -- forecasts and history -------------------------------------------------------------------

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        """The forecast from the half hour before `now`'s (NESO's answer starts with the half hour
        that ends at {from}) for 24 or 48 hours, half-hourly."""
        start = iso_minute(half_hour_floor(now))
        if zone == NATIONAL:
            body = self._get(f"intensity/{start}/{self._window}", "intensity/forecast", zone)
            return self._series(zone, self._national_points(zone, body, actual_first=False), "forecast")
        region = self._known_region(zone)
        body = self._get(f"regional/intensity/{start}/{self._window}/regionid/{region}",
                         "regional/forecast", zone)
        return self._series(zone, self._regional_points(zone, body), "forecast")

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        """The last `history_days`, in calls of at most 14 days. Nationally NESO's estimated
        actual, or its forecast for a half hour with no actual yet; regionally the forecast only,
        as NESO publishes no regional actuals (its regional answers carry `forecast` and `index`)."""
        end = half_hour_floor(now)
        start = end - timedelta(days=self._history_days)
        region = None if zone == NATIONAL else self._known_region(zone)
        points: list[tuple[datetime, Optional[float]]] = []
        while start < end:
            stop = min(start + MAX_RANGE, end)
            span = f"{iso_minute(start)}/{iso_minute(stop)}"
            if region is None:
                body = self._get(f"intensity/{span}", "intensity/history", zone)
                points += self._national_points(zone, body, actual_first=True)
            else:
                body = self._get(f"regional/intensity/{span}/regionid/{region}", "regional/history", zone)
                points += self._regional_points(zone, body)
            start = stop
        return self._series(zone, points, "history")

    # -- wire format -----------------------------------------------------------------------------

    def _national_points(self, zone: str, body: object,
                         actual_first: bool) -> list[tuple[datetime, Optional[float]]]:
        """/intensity answers {"data": [{"from", "to", "intensity": {"forecast", "actual",
        "index"}}, ...]}; `actual` is null until NESO has estimated it."""
        rows = body.get("data") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise self._malformed(zone, body)
        points = []
        for row in rows:
            intensity = _field(zone, row, "intensity")
            value = _value(intensity.get("actual")) if actual_first else None
            if value is None:
                value = _value(intensity.get("forecast"))
            points.append((_stamp(zone, row), value))
        return points

    def _regional_points(self, zone: str, body: object) -> list[tuple[datetime, Optional[float]]]:
        """/regional/intensity/.../regionid/{id} answers one region: {"data": {"regionid",
        "shortname", "data": [{"from", "to", "intensity": {"forecast", "index"}, "generationmix"}]}}.
        NESO's docs show that region inside a one-item list instead; both are read."""
        region = _one_region(body)
        if region is None:
            raise self._malformed(zone, body)
        rows = region.get("data")
        if not isinstance(rows, list):
            raise self._malformed(zone, body)
        return [(_stamp(zone, row), _value(_field(zone, row, "intensity").get("forecast"))) for row in rows]

    def _series(self, zone: str, points: list, what: str) -> ForecastSeries:
        try:
            return series_from_points(zone, self.name, points)
        except ValueError:  # no value at all, or points no regular grid can hold
            raise UpstreamUnavailable(zone, f"NESO sent no usable {what} values for zone {zone}") from None

    @staticmethod
    def _malformed(zone: str, body: object) -> UpstreamUnavailable:
        # An outage has answered 200 with {} (api-definitions issue #20) and 500 with an error
        # object (issue #19): either way there is nothing to schedule on.
        error = body.get("error") if isinstance(body, dict) else None
        said = f" ({str(error.get('message'))[:120]})" if isinstance(error, dict) else ""
        return UpstreamUnavailable(zone, f"NESO sent an empty or malformed answer for zone {zone}{said}")

    def _known_region(self, zone: str) -> int:
        region = self._region_id(zone)
        if region is None:
            raise ZoneNotFound(zone, f"NESO has no zone {zone} (GB, or GB-1 .. GB-17)")
        return region

    @staticmethod
    def _region_id(zone: str) -> Optional[int]:
        match = _ZONE.match(zone)
        region = int(match.group(1)) if match else None
        return region if region in REGIONS else None

    def _get(self, path: str, endpoint: str, zone: str) -> object:
        """GET one path; `zone` is what failures name (a zone key, or a postcode asked)."""
        reply = self._http.get(f"{self._base_url}/{path}", endpoint=endpoint, zone=zone,
                               subject=f"zone {zone}", headers={"Accept": "application/json"})
        if reply.status in (400, 404):
            # NESO answers 400 to a region id or postcode it does not know ("No postcode match
            # can be found.", api-definitions issue #10).
            raise ZoneNotFound(zone, f"NESO does not know {zone} (HTTP {reply.status})")
        if reply.status >= 400:
            raise UpstreamUnavailable(zone, f"NESO answered HTTP {reply.status} for zone {zone}")
        try:
            return json.loads(reply.body)
        except ValueError:  # an HTML error page from a proxy, a truncated body
            raise UpstreamUnavailable(zone, f"NESO sent invalid JSON for zone {zone}") from None

    # -- postcodes -------------------------------------------------------------------------------

    def _postcode_key(self, outward: str) -> str:
        with self._postcodes_lock:
            if outward in self._postcodes:
                self._postcodes.move_to_end(outward)
                return self._postcodes[outward]
        body = self._get(f"regional/postcode/{quote(outward)}", "regional/postcode", outward)
        key = f"GB-{self._postcode_region(outward, body)}"
        with self._postcodes_lock:
            self._postcodes[outward] = key
            while len(self._postcodes) > POSTCODE_CACHE_SIZE:
                self._postcodes.popitem(last=False)
        return key

    def _postcode_region(self, outward: str, body: object) -> int:
        """The region of a /regional/postcode/{outward} answer. Its docs show {"data": [{"regionid",
        "dnoregion", "shortname", "postcode", "data": [...]}]}; the live API has also answered
        the region as an object ({"data": {...}}), and with a regionid one off from the region
        list's for the same short name (api-definitions issue #8: BN3 as 13, "South East
        England"). So the short name decides when it is one of REGIONS, the id otherwise."""
        region = _one_region(body)
        if region is None:
            raise self._malformed(outward, body)
        by_name = _BY_NAME.get(_fold(str(region.get("shortname") or "")))
        if by_name is not None:
            return by_name
        raw_id = region.get("regionid")
        if isinstance(raw_id, int) and raw_id in REGIONS:
            return raw_id
        raise ZoneNotFound(outward, f"NESO placed postcode {outward} in region "
                                    f"{str(raw_id)[:20]} {str(region.get('shortname'))[:40]!r}, "
                                    f"which is not one of GB-1 .. GB-17")


def _one_region(body: object) -> Optional[dict]:
    """The region object of a one-region answer, whether NESO sent it as `data` or as `data`'s
    only item; None when there is none."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    return data if isinstance(data, dict) and data else None


def _field(zone: str, row: object, key: str) -> dict:
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, dict):
        raise UpstreamUnavailable(zone, f"NESO sent a half hour without {key} for zone {zone}")
    return value


def _stamp(zone: str, row: dict) -> datetime:
    try:
        return parse_utc(row["from"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UpstreamUnavailable(zone, f"NESO sent a half hour without a valid 'from' for zone {zone}") from None


def _value(raw: object) -> Optional[float]:
    """A usable intensity or None (null, not a number, negative, absurd): series_from_points holds
    the previous value over a None and flags it estimated."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    value = float(raw)
    return value if 0.0 <= value < 1e5 else None  # NaN fails both comparisons


__all__ = ["NATIONAL", "NesoProvider", "REGIONS", "REFERENCE_POINTS", "half_hour_floor", "iso_minute"]
