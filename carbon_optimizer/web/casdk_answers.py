"""What the Carbon Aware SDK WebAPI's routes answer (casdk_routes.py), from the engine's data: measured
points in a time range (bylocation, bylocations, best, average-carbon-intensity) and a forecast
scoped, averaged over `windowSize` and searched for its optimal window (forecasts/current, batch).

The optimal windows are the planner's (scheduling.planner.plan: the exact search over every
whole-minute start), not a second search; `forecastData`'s rolling means use the window module's
own mean. The semantics follow the SDK's handlers (Green-Software-Foundation/carbon-aware-sdk v1.8,
GSF.CarbonAware ForecastHandler and CarbonAwareParameters, CarbonAware.Aggregators EmissionsAggregator):
`dataStartAt` defaults to the forecast's first point, `dataEndAt` to its end, both must lie within
the forecast and in order; without `windowSize` forecastData is the forecast's own points; with it,
the mean of each window of that length starting at dataStartAt and every forecast step after it
that ends by dataEndAt. For measured data `time` defaults to now and `toTime` to `time`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Sequence

from carbon_optimizer.data.source import CarbonDataSource
from carbon_optimizer.scheduling import planner
from carbon_optimizer.scheduling.model import Job, Schedule, ZoneSeries
from carbon_optimizer.scheduling.window import window_mean
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, series_from_points, to_epoch
from carbon_optimizer.web.casdk_models import EmissionsData, EmissionsDataDTO, EmissionsForecastDTO
from carbon_optimizer.web.casdk_params import argument_error

# Measured history is read backwards from the end of the range asked, one provider answer at a
# time (the demo holds a day, a replay ten): at most this many answers per zone and request.
MAX_HISTORY_READS = 32


@dataclass(frozen=True)
class Point:
    start: int  # epoch seconds
    end: int
    value: float


def points_of(series: Optional[ForecastSeries], start: int, end: int) -> list[Point]:
    """A remote provider's history (read once, as of now, for every zone of the request at once)
    as the points overlapping [start, end] (the one holding `start` when start == end)."""
    if series is None:
        return []
    bounds = series.boundaries()
    points = [Point(int(bounds[i]), int(bounds[i + 1]), float(v)) for i, v in enumerate(series.values)]
    if start == end:
        return [p for p in points if p.start <= start < p.end]
    return [p for p in points if p.start < end and p.end > start]


def latest_of(series: Optional[ForecastSeries]) -> list[Point]:
    """The last point of a history read as of now."""
    if series is None:
        return []
    bounds = series.boundaries()
    return [Point(int(bounds[-2]), int(bounds[-1]), float(series.values[-1]))]


def measured(source: CarbonDataSource, zone: str, start: int, end: int, now: datetime) -> list[Point]:
    """The zone's measured points that overlap [start, end] (the one holding `start` when
    start == end), in order: the provider's history read as of the range's end (never after now),
    then again as of the earliest point read, until the range is covered or no older data comes.
    A remote provider's history is cached per zone as of now (shared with the estimates past its
    forecast), so it is read once, as of now: asking it as of another moment would cache that."""
    as_of = to_epoch(now) if source.remote else min(to_epoch(now), max(end, start) + 3600)
    found: dict[int, Point] = {}
    for _ in range(1 if source.remote else MAX_HISTORY_READS):
        series = source.history(zone, from_epoch(as_of))
        if series is None:
            break
        bounds = series.boundaries()
        for i, value in enumerate(series.values):
            t0 = int(bounds[i])
            found.setdefault(t0, Point(t0, int(bounds[i + 1]), float(value)))
        if series.start_epoch <= start or series.start_epoch >= as_of:
            break  # covered, or the provider answers the same whatever the moment
        as_of = series.start_epoch
    points = sorted(found.values(), key=lambda p: p.start)
    if start == end:
        return [p for p in points if p.start <= start < p.end]
    return [p for p in points if p.start < end and p.end > start]


def latest(source: CarbonDataSource, zone: str, now: datetime) -> list[Point]:
    """The last measured point (what the SDK answers when no `time` is given: its data sources'
    latest reading)."""
    series = source.history(zone, now)
    if series is None:
        return []
    bounds = series.boundaries()
    return [Point(int(bounds[-2]), int(bounds[-1]), float(series.values[-1]))]


def emissions_data(location: str, points: Sequence[Point]) -> list[EmissionsData]:
    return [EmissionsData(location=location, time=from_epoch(p.start), rating=p.value,
                          duration=p.end - p.start) for p in points]


def as_series(zone: str, points: Sequence[Point]) -> Optional[ForecastSeries]:
    if not points:
        return None
    return series_from_points(zone, "history", [(from_epoch(p.start), p.value) for p in points])


def best_measured(located: dict[str, tuple[str, list[Point]]], start: int, end: int,
                  minutes: int, now: datetime) -> list[EmissionsData]:
    """bylocations/best. With `durationMinutes` the planner's cleanest window of that length
    inside [start, end] (from `start` when end == start: no toTime) across the locations;
    without, as the SDK: every point with the least rating."""
    if minutes <= 0:
        every = [(location, p) for location, (_, points) in located.items() for p in points]
        if not every:
            return []
        least = min(p.value for _, p in every)
        return [d for location, p in every if p.value == least for d in emissions_data(location, [p])]
    duration = minutes * 60
    zones: dict[str, ZoneSeries] = {}
    named: dict[str, str] = {}
    for location, (zone, points) in located.items():
        series = as_series(zone, points)
        if series is not None and zone not in zones:
            zones[zone], named[zone] = ZoneSeries(forecast=series), location
    latest_start = end - duration if end > start else start
    if not zones or latest_start < start:
        return []
    job = Job(duration=duration, zones=tuple(zones), earliest_start=start,
              latest_start=latest_start, extend_horizon=False)
    found = planner.plan(job, zones, to_epoch(now))
    if not isinstance(found, Schedule):
        return []
    return [EmissionsData(location=named[found.zone], time=from_epoch(found.start),
                          rating=found.mean_intensity, duration=found.duration)]


def average(points: Sequence[Point], start: int, end: int) -> Optional[float]:
    """The time-weighted mean over the measured part of [start, end); None when nothing is measured."""
    weight = total = 0.0
    for p in points:
        seconds = min(p.end, end) - max(p.start, start)
        if seconds > 0:
            weight += seconds
            total += seconds * p.value
    return total / weight if weight else None


def _bound(name: str, moment: int, first: int, last: int) -> None:
    if not first <= moment <= last:
        raise argument_error(name, f"{name} must be within time range of the forecasted data, "
                                   f"'{from_epoch(first).isoformat()}' through '{from_epoch(last).isoformat()}'")


def forecast_answer(location: str, zone: ZoneSeries, requested_at: datetime,
                    data_start: Optional[datetime], data_end: Optional[datetime],
                    window_minutes: Optional[int], now: datetime) -> EmissionsForecastDTO:
    """One location's EmissionsForecastDTO. Raises casdk_params.Problem (400) for a scope
    outside the forecast or out of order, as the SDK does."""
    series = zone.forecast
    first, last, step = series.start_epoch, series.end_epoch, series.step_seconds
    start = to_epoch(data_start) if data_start is not None else first
    end = to_epoch(data_end) if data_end is not None else last
    if data_start is not None and data_end is not None and start >= end:
        raise argument_error("dataStartAt", "dataStartAt must be before dataEndAt")
    _bound("dataStartAt", start, first, last)
    _bound("dataEndAt", end, first, last)
    if start >= end:
        raise argument_error("dataStartAt", "dataStartAt must be earlier than dataEndAt")
    bounds, values = series.boundaries(), series.values
    integral = series.integral()
    window = (window_minutes or 0) * 60
    data: list[EmissionsDataDTO] = []
    if window == 0:
        for i, value in enumerate(values):
            if bounds[i] < end and bounds[i + 1] > start:
                data.append(EmissionsDataDTO(location=location, timestamp=from_epoch(bounds[i]),
                                             duration=step // 60, value=float(value)))
    elif window <= min(end, last) - start:
        for at in range(start, min(end, last) - window + 1, step):
            data.append(EmissionsDataDTO(location=location, timestamp=from_epoch(at), duration=window // 60,
                                         value=window_mean(bounds, values, at, window, integral)))
    duration = window or step
    optimal: list[EmissionsDataDTO] = []
    if duration <= end - start:
        job = Job(duration=duration, zones=(series.zone,), earliest_start=start,
                  latest_start=end - duration, extend_horizon=False)
        found = planner.plan(job, {series.zone: zone}, to_epoch(now))
        if isinstance(found, Schedule) and found.end <= end:
            optimal.append(EmissionsDataDTO(location=location, timestamp=from_epoch(found.start),
                                            duration=duration // 60, value=found.mean_intensity))
    generated = series.updated_at or (from_epoch(zone.fetched_at) if zone.fetched_at else requested_at)
    return EmissionsForecastDTO(
        generatedAt=generated, requestedAt=requested_at, location=location,
        dataStartAt=data_start if data_start is not None else from_epoch(start),
        # Unbounded, the SDK's DTO writes the last listed point's start, not the forecast's end.
        dataEndAt=data_end if data_end is not None else (data[-1].timestamp if data else from_epoch(end)),
        windowSize=duration // 60, optimalDataPoints=optimal, forecastData=data)

