"""Electricity Maps data-portal CSV exports as a provider, for air-gapped use and replay.

Every `*.csv` in a directory is read once; rows are grouped by zone. Without replay a "forecast" is
the recorded series itself (perfect knowledge). With replay (FILE_REPLAY) the provider answers as of
the moment it is asked about (a request's `as_of`): the recording from that moment up to
`forecast_hours` later is the forecast, what lies before it the history (ReplayProvider's rules).
"""

from __future__ import annotations

import csv
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from carbon_optimizer.data.providers.base import ZoneNotFound
from carbon_optimizer.data.providers.replay import ReplayProvider
from carbon_optimizer.timeseries import ForecastSeries, series_from_points

DATETIME_COLUMN = "Datetime (UTC)"
ZONE_COLUMN = "Zone Id"
# Electricity Maps' API answers with life-cycle intensities by default; the exports carry both.
INTENSITY_COLUMN = "Carbon Intensity gCO₂eq/kWh (LCA)"


def read_portal_csv(path: Path) -> Iterator[tuple[str, datetime, Optional[float]]]:
    """(zone, UTC time, intensity or None) for each row of one data-portal export."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {DATETIME_COLUMN, ZONE_COLUMN, INTENSITY_COLUMN} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path.name} is not a data-portal export: no column {sorted(missing)}")
        for row in reader:
            moment = datetime.fromisoformat(row[DATETIME_COLUMN]).replace(tzinfo=timezone.utc)
            text = (row[INTENSITY_COLUMN] or "").strip()
            yield row[ZONE_COLUMN], moment, float(text) if text else None


def load_directory(directory: Path) -> dict[str, ForecastSeries]:
    points: dict[str, list] = {}
    for path in sorted(directory.glob("*.csv")):
        for zone, moment, value in read_portal_csv(path):
            points.setdefault(zone, []).append((moment, value))
    return {zone: series_from_points(zone, CsvFileProvider.name, rows) for zone, rows in points.items()}


class CsvFileProvider:
    name = "file"
    shared_cache = False  # local files are cheaper to read than to share through Redis

    def __init__(self, directory: str, replay: bool = False, forecast_hours: float = 24,
                 history_hours: float = 240):
        self._directory = Path(directory)
        if not self._directory.is_dir():
            raise FileNotFoundError(f"CARBON_DATA_DIR {directory} is not a directory")
        self._lock = threading.Lock()
        self._series: Optional[dict[str, ForecastSeries]] = None
        self._loaded_mtime = 0.0
        self.replay = replay
        self._forecast_hours, self._history_hours = forecast_hours, history_hours
        self._replay: Optional[ReplayProvider] = None

    def _all(self) -> dict[str, ForecastSeries]:
        mtime = max((os.path.getmtime(p) for p in self._directory.glob("*.csv")), default=0.0)
        with self._lock:
            if self._series is None or mtime != self._loaded_mtime:  # pick up replaced exports
                self._series = load_directory(self._directory)
                self._loaded_mtime = mtime
                self._replay = ReplayProvider(self._series, forecast_hours=self._forecast_hours,
                                              history_hours=self._history_hours)
            return self._series

    def _replayed(self, zone: str) -> ReplayProvider:
        if zone not in self._all():
            raise ZoneNotFound(zone, f"no data-portal export for zone {zone} in CARBON_DATA_DIR")
        return self._replay  # type: ignore[return-value]

    def zones(self) -> list[str]:
        return sorted(self._all())

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        if self.replay:
            return self._replayed(zone).forecast(zone, now)
        series = self._all().get(zone)
        if series is None:
            raise ZoneNotFound(zone, f"no data-portal export for zone {zone} in CARBON_DATA_DIR")
        return series

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        if self.replay:
            return self._replayed(zone).history(zone, now)
        return self.forecast(zone, now)
