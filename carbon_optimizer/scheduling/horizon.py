"""Past the forecast horizon: extend a series with an estimate, and say when to ask again.

Pure functions, no I/O, no clock. The estimate for a point k steps past the end of the known series
blends two readings of what is known:
- persistence: the value one whole number of days earlier inside the last known day (the forecast's
  own last day carries the current weather and demand level);
- the zone's hour-of-week profile, scaled to the level of that last day (it carries the weekly shape
  and, far out, regresses to what is typical for the hour).
The weight on persistence decays with distance, exp(-k / points per day): close to the horizon the
forecast's last day is the better guide, days out the profile is. The backtest (tools/backtest.py)
measures this, through the engine, against searching inside the horizon only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from carbon_optimizer.timeseries import ForecastSeries

DAY = 86400
# How far past the provider's forecast an estimate may reach: beyond two weeks it is a guess.
MAX_EXTENSION_SECONDS = 14 * DAY
HOUR = 3600
WEEK_HOURS = 168


def hour_of_week(epoch_seconds: np.ndarray) -> np.ndarray:
    """0 = Monday 00:00 UTC (1970-01-01 was a Thursday, 72 hours after a Monday's start)."""
    return ((np.asarray(epoch_seconds) // HOUR) + 72) % WEEK_HOURS


def estimate_values(tail: np.ndarray, count: int, tail_profile: Optional[np.ndarray] = None,
                    future_profile: Optional[np.ndarray] = None) -> np.ndarray:
    """`count` estimates following `tail`, the last known day (..., S points); leading axes
    broadcast, so the backtest estimates every arrival at once.

    With profiles (the hour-of-week profile at the tail's points and at the future points), the
    estimate blends persistence with the profile scaled to the tail's level; without, persistence.
    """
    tail = np.asarray(tail, dtype=np.float64)
    per_day = tail.shape[-1]
    ahead = np.arange(count)
    persistence = tail[..., ahead % per_day]
    if tail_profile is None or future_profile is None:
        return persistence
    typical = np.mean(tail_profile, axis=-1, keepdims=True)
    level = np.where(typical > 0,
                     np.mean(tail, axis=-1, keepdims=True) / np.where(typical > 0, typical, 1.0), 1.0)
    weight = np.exp(-(ahead + 1) / per_day)
    return weight * persistence + (1 - weight) * level * np.asarray(future_profile, dtype=np.float64)


def extend_series(series: ForecastSeries, until: int, profile: Optional[np.ndarray] = None,
                  history: Optional[ForecastSeries] = None) -> ForecastSeries:
    """`series` extended to cover at least up to epoch second `until`, the new points estimated.

    `profile` is an hour-of-week table (168 values, Monday 00:00 UTC first). `history` (recent
    measurements) fills the last known day when the forecast itself is shorter than a day.
    Returns `series` unchanged when it already reaches `until`.
    """
    step = series.step_seconds
    if until <= series.end_epoch:
        return series
    count = -(-(until - series.end_epoch) // step)
    per_day = max(1, DAY // step)
    known_values = series.values
    if len(known_values) < per_day and history is not None and history.step_seconds == step:
        earlier = history.values[history.boundaries()[:-1] < series.start_epoch]
        known_values = np.concatenate((earlier, known_values))
    tail = known_values[-per_day:]
    tail = tail[np.arange(per_day) % len(tail)] if len(tail) < per_day else tail
    tail_times = series.end_epoch - step * np.arange(per_day, 0, -1)
    future_times = series.end_epoch + step * np.arange(count)
    tail_profile = future_profile = None
    if profile is not None:
        table = np.asarray(profile, dtype=np.float64)
        tail_profile, future_profile = table[hour_of_week(tail_times)], table[hour_of_week(future_times)]
    estimates = estimate_values(tail, count, tail_profile, future_profile)
    return replace(series,
                   values=np.concatenate((series.values, estimates)),
                   estimated=np.concatenate((series.estimated_mask(), np.ones(count, dtype=bool))))


def estimated_span(series: ForecastSeries, intervals: list[tuple[int, int]],
                   forecast_end: int) -> Optional[dict]:
    """The part of the chosen intervals that lies past the real forecast (epoch seconds):
    its first moment and its length; None when every interval is inside the forecast."""
    past = [(max(a, forecast_end), b) for a, b in intervals if b > forecast_end]
    if not past:
        return None
    return {"start": min(a for a, _ in past), "seconds": sum(b - a for a, b in past)}


def replan_at(window_end: int, now: int, forecast_end: int, step: int) -> Optional[int]:
    """When asking again finds a window ending at `window_end` inside a real forecast, assuming
    the provider keeps publishing the same horizon (forecast_end - now); None when it already is."""
    if window_end <= forecast_end:
        return None
    horizon = max(0, forecast_end - now)
    moment = window_end - horizon
    return int(-(-moment // step) * step)
