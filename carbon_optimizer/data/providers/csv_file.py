"""Electricity Maps data-portal CSV exports as a provider, for air-gapped use and replay.

Every `*.csv` in a directory is read once; rows are grouped by zone. Without replay a "forecast" is
the recorded series itself (perfect knowledge). With replay (FILE_REPLAY) the provider answers as of
the moment it is asked about (a request's `as_of`): the recording from that moment up to
`forecast_hours` later is the forecast, what lies before it the history (ReplayProvider's rules).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Optional

from carbon_optimizer.data.providers.base import G_PER_KWH
from carbon_optimizer.errors import ZoneNotFound
from carbon_optimizer.data.providers.portal_csv import load_directory, read_portal_csv  # noqa: F401
from carbon_optimizer.data.providers.replay import ReplayProvider
from carbon_optimizer.timeseries import ForecastSeries


class CsvFileProvider:
    name = "file"
    signal = "average"  # data-portal exports' life-cycle column
    units = G_PER_KWH
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
                                              history_hours=self._history_hours, name=self.name)
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
