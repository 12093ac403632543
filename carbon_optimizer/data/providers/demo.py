"""The built-in `demo` provider: deterministic, typical per-zone profiles, no network.

It serves the zones listed in demo_zones.csv (every zone the cloud-region table uses, and more)
and no other: an unknown zone is ZoneNotFound, as from a real provider. Zones with a derived
hour-of-week table (demo_profiles.json, from Electricity Maps data-portal exports, ODbL) follow it;
the others get a synthetic daily and weekly shape around the zone's rough annual level, with its
timing seeded by the zone's name.
A small deterministic wobble per zone and hour keeps forecasts from repeating exactly every week.
The same zone and hour always give the same value, in every worker and replica.
"""

from __future__ import annotations

import csv
import hashlib
import json
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from carbon_optimizer.data.providers.base import G_PER_KWH
from carbon_optimizer.errors import ZoneNotFound
from carbon_optimizer.timeseries import ForecastSeries, to_epoch

_PROFILES_PATH = Path(__file__).with_name("demo_profiles.json")
_ZONES_PATH = Path(__file__).with_name("demo_zones.csv")
HOUR = 3600
_SERIES_CACHE_SIZE = 2048


def _digest(*parts: object) -> int:
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def demo_zones() -> dict[str, float]:
    """The demo's zones and their rough annual life-cycle levels (gCO2eq/kWh), so answers look
    plausible: zone -> level."""
    with open(_ZONES_PATH, newline="", encoding="utf-8") as handle:
        return {row["zone"]: float(row["typical_gco2eq_kwh"]) for row in csv.DictReader(handle)}


@lru_cache(maxsize=None)  # bounded: one per zone of demo_zones.csv
def _synthetic_week(zone: str, base: float) -> np.ndarray:
    seed = _digest("profile", zone)
    depth = 0.15 + (seed >> 12) % 30 / 100         # how much the midday solar dip takes off
    noon_utc = (seed >> 20) % 24                   # where the zone's midday falls in UTC
    hours = np.arange(168)
    hour_of_day = hours % 24
    distance = np.minimum((hour_of_day - noon_utc) % 24, (noon_utc - hour_of_day) % 24)
    solar = np.clip(1 - distance / 6.0, 0, None)   # a triangle six hours either side of noon
    weekend = (hours // 24) >= 5
    evening_peak = np.clip(1 - np.abs(distance - 7) / 2.0, 0, None)
    week = base * (1 - depth * solar) * np.where(weekend, 0.92, 1.0) * (1 + 0.08 * evening_peak)
    week.flags.writeable = False  # shared through the cache
    return week


class DemoProvider:
    name = "demo"
    signal = "average"  # its profiles follow data-portal life-cycle figures
    units = G_PER_KWH
    shared_cache = False  # computing a profile is cheaper than a Redis round trip

    def __init__(self, horizon_hours: int = 72):
        self._horizon_hours = horizon_hours
        table = json.loads(_PROFILES_PATH.read_text())
        self._tables = {zone: np.asarray(v, dtype=np.float64) for zone, v in table["profiles"].items()}
        self._levels = demo_zones()
        self._zone_list = sorted(self._levels.keys() | self._tables.keys())
        # Each (zone, hour, length) series is computed once and then shared, read-only: a request
        # otherwise spends most of its time hashing 72 hours of wobble. Bounded: the zones in
        # use times the few hours a worker sees between restarts (LRU beyond that).
        self._cached_series = lru_cache(maxsize=_SERIES_CACHE_SIZE)(self._compute_series)

    def zones(self) -> list[str]:
        # Fixed at start-up, so listed once; the same list each time (callers only read it) lets
        # the data source keep the set it checks requests against instead of rebuilding it per request.
        return self._zone_list

    def _week(self, zone: str) -> np.ndarray:
        table = self._tables.get(zone)
        if table is not None:
            return table
        if zone not in self._levels:
            raise ZoneNotFound(zone, f"the demo provider has no zone {zone}; GET /api/v1/zones lists its zones")
        return _synthetic_week(zone, self._levels[zone])

    def _series(self, zone: str, first_hour: int, hours: int) -> ForecastSeries:
        """Hourly values from `first_hour` (epoch hours) on."""
        self._week(zone)  # an unknown zone is refused here, never cached
        return self._cached_series(zone, first_hour, hours)

    def _compute_series(self, zone: str, first_hour: int, hours: int) -> ForecastSeries:
        week = self._week(zone)
        # 1970-01-01 was a Thursday: hour-of-week with Monday 00:00 first is shifted by 3 days.
        epoch_hours = np.arange(first_hour, first_hour + hours)
        slots = (epoch_hours + 72) % 168
        wobble = np.array([(_digest(zone, h) % 1000) / 1000 - 0.5 for h in epoch_hours])
        values = np.round(week[slots] * (1 + 0.1 * wobble), 1)
        values.flags.writeable = False  # shared through the cache
        start = datetime.fromtimestamp(first_hour * HOUR, tz=timezone.utc)
        return ForecastSeries(zone=zone, provider=self.name, start=start, step_seconds=HOUR,
                              values=values, updated_at=start)

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        return self._series(zone, to_epoch(now) // HOUR, self._horizon_hours)

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        return self._series(zone, to_epoch(now - timedelta(hours=24)) // HOUR, 24)
