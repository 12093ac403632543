"""Replay recorded carbon intensity as a provider that knows only what was known at each moment.

For the backtest (tools/backtest.py) and for reproducing an answer after the fact. Built from recorded
series per zone (for example the data-portal exports read by `portal_csv.load_directory`):
- `forecast(zone, now)` is a perfect forecast of a limited horizon: the recorded points from the one
  holding `now` up to `now + forecast_hours`. A point that would still hold past that moment is left
  out: an hourly value is the hour's average, so it carries knowledge of the part past the horizon.
- `history(zone, now)` is what was measured before `now`: points that ended at or before `now`, at
  most `history_hours` of them (the point holding `now` is not over yet).
- `noise` > 0 adds Gaussian error to the forecast with a standard deviation of that share of the
  zone's mean, drawn from a generator seeded by (seed, zone, issue hour): the same question asked
  twice gets the same answer, in any process; forecasts issued at different hours err independently.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from carbon_optimizer.data.providers.base import G_PER_KWH
from carbon_optimizer.errors import NotRecorded, ZoneNotFound
from carbon_optimizer.data.providers.portal_csv import load_directory
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, rfc3339, to_epoch

HOUR = 3600


class ReplayProvider:
    name = "replay"
    signal = "average"
    units = G_PER_KWH
    shared_cache = False  # slicing arrays in memory costs less than any cache round trip

    def __init__(self, series: Mapping[str, ForecastSeries], forecast_hours: float = 24,
                 history_hours: float = 240, noise: float = 0.0, seed: int = 0,
                 name: str = "replay"):
        if forecast_hours <= 0 or history_hours < 0 or noise < 0:
            raise ValueError("forecast_hours must be positive; history_hours and noise not negative")
        self._series = dict(series)
        self.name = name  # the file provider replays under its own name
        self.forecast_hours = forecast_hours
        self.history_hours = history_hours
        self.noise = noise
        self.seed = seed
        # The noise scale: the zone's mean over everything recorded (a scale, not a forecast input).
        self._scale = {zone: float(np.mean(s.values)) for zone, s in self._series.items()}

    @classmethod
    def from_directory(cls, directory: str | Path, **options) -> "ReplayProvider":
        """Every data-portal export (`*.csv`) in `directory`, grouped by zone."""
        return cls(load_directory(Path(directory)), **options)

    def with_options(self, **options) -> "ReplayProvider":
        """The same recordings with other options (horizon, noise, seed), without reloading."""
        current = {"forecast_hours": self.forecast_hours, "history_hours": self.history_hours,
                   "noise": self.noise, "seed": self.seed}
        return ReplayProvider(self._series, **{**current, **options})

    def zones(self) -> list[str]:
        return sorted(self._series)

    def recorded(self, zone: str) -> ForecastSeries:
        """The whole recording for `zone`: the truth a backtest measures choices against."""
        series = self._series.get(zone)
        if series is None:
            raise ZoneNotFound(zone, f"no recorded carbon data for zone {zone}")
        return series

    def _slice(self, series: ForecastSeries, first: int, stop: int, now: datetime) -> ForecastSeries:
        estimated = None if series.estimated is None else series.estimated[first:stop]
        return ForecastSeries(
            zone=series.zone, provider=self.name,
            start=from_epoch(series.start_epoch + first * series.step_seconds),
            step_seconds=series.step_seconds, values=series.values[first:stop], updated_at=now,
            estimated=estimated if estimated is not None and estimated.any() else None)

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        series = self.recorded(zone)
        moment, step = to_epoch(now), series.step_seconds
        if not series.start_epoch <= moment < series.end_epoch:
            raise NotRecorded(
                zone, f"the recording for zone {zone} covers {rfc3339(series.start)} to "
                      f"{rfc3339(series.end)}, not {rfc3339(now)} (as_of)")
        first = (moment - series.start_epoch) // step                  # the point holding `now`
        horizon_end = moment + int(self.forecast_hours * HOUR)
        # Points whose end is at or before the horizon; at least the one holding `now`.
        stop = min(len(series.values), max(first + 1, (horizon_end - series.start_epoch) // step))
        revealed = self._slice(series, first, stop, now)
        if self.noise <= 0:
            return revealed
        issue_hour = moment // HOUR
        rng = np.random.default_rng([self.seed, zlib.crc32(zone.encode()), issue_hour])
        error = rng.normal(0.0, self.noise * self._scale[zone], size=len(revealed.values))
        # Intensity cannot be negative; clipping only bites when the error exceeds the value itself.
        noisy = np.clip(revealed.values + error, 0.0, None)
        return ForecastSeries(zone=zone, provider=self.name, start=revealed.start,
                              step_seconds=step, values=noisy, updated_at=now,
                              estimated=revealed.estimated)

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        series = self.recorded(zone)
        moment, step = to_epoch(now), series.step_seconds
        # Points that ended at or before `now`.
        stop = min(len(series.values), max(0, (moment - series.start_epoch) // step))
        first = max(0, stop - int(self.history_hours * HOUR) // step)
        if stop <= first:
            return None
        return self._slice(series, first, stop, now)
