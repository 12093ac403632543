"""Past the forecast horizon: estimate a zone's intensity from its own recent data, measure how
wrong such estimates have been, and say when to ask again.

Pure functions, no I/O, no clock. What is known of a zone is its recent measured history followed by
the provider's forecast (one series, `known`). The estimate for a point k steps past its end blends:
- persistence: the value one whole number of days earlier inside the last known day (it carries the
  current weather and demand);
- the zone's hour-of-day profile over everything known (its daily shape), scaled to a level that
  moves from the last known day's mean towards the mean of everything known as k grows (a level
  seen for one day fades; the recent weeks' typical level does not).
The weight on persistence decays over a day, the weight on the last day's level over LEVEL_DAYS.
Both constants were chosen by design, not fitted to any replayed year.

The error is measured, not assumed: the same estimator is run from earlier origins inside `known`
(each seeing only what lay before it) and its absolute error kept per lead time. A run resting on
estimates is taken only when its expected advantage exceeds that error (`window_error`, the risk
gate `risk_gate`); `coverage_of` says what of a chosen run rests on estimates and when to ask again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from carbon_optimizer.scheduling.model import Coverage, Job, Run, ZoneSeries, Zones
from carbon_optimizer.timeseries import ForecastSeries

DAY = 86400
HOUR = 3600
# How far past the provider's forecast an estimate may reach: beyond two weeks it is a guess.
MAX_EXTENSION_SECONDS = 14 * DAY
LEVEL_DAYS = 2.0
# An origin for measuring the error needs this much before it (to have a profile at all) ...
MIN_TRAINING_DAYS = 2
# ... and origins are taken every this many hours (errors of nearby origins are nearly the same).
ORIGIN_EVERY_HOURS = 6


def slots(epochs: np.ndarray, step: int) -> np.ndarray:
    """The point's slot in its UTC day (0 .. points per day - 1)."""
    per_day = max(1, DAY // step)
    return (np.asarray(epochs) % DAY) // step % per_day


def estimate_after(known: np.ndarray, first_epoch: int, step: int, count: int) -> np.ndarray:
    """`count` estimates following `known` (equally spaced points, the first starting at
    `first_epoch`): persistence of the last day blended with the hour-of-day profile."""
    known = np.asarray(known, dtype=np.float64)
    per_day = max(1, DAY // step)
    ahead = np.arange(count)
    tail = known[-per_day:]
    tail = tail[np.arange(per_day) % len(tail)] if len(tail) < per_day else tail
    persistence = tail[ahead % per_day]
    known_slots = slots(first_epoch + step * np.arange(len(known)), step)
    sums = np.bincount(known_slots, weights=known, minlength=per_day)
    counts = np.bincount(known_slots, minlength=per_day)
    overall = float(np.mean(known))
    if overall <= 0:
        return persistence
    profile = np.where(counts > 0, sums / np.maximum(counts, 1), overall) / overall  # mean ~1
    end = first_epoch + step * len(known)
    future_shape = profile[slots(end + step * ahead, step)]
    tail_shape = float(np.mean(profile[slots(end - step * np.arange(per_day, 0, -1), step)]))
    last_level = float(np.mean(tail)) / tail_shape if tail_shape > 0 else overall
    fade = np.exp(-(ahead + 1) / (LEVEL_DAYS * per_day))
    level = fade * last_level + (1 - fade) * overall
    weight = np.exp(-(ahead + 1) / per_day)
    return weight * persistence + (1 - weight) * level * future_shape


def measured_error(known: np.ndarray, first_epoch: int, step: int, count: int) -> np.ndarray:
    """Mean absolute error of `estimate_after` at each of `count` leads, measured from origins
    inside `known`: non-decreasing with the lead (a far estimate is never trusted more than a near
    one), held at its last measured value past the longest lead measured; infinite when `known` is
    too short to measure anything."""
    known = np.asarray(known, dtype=np.float64)
    per_day = max(1, DAY // step)
    every = max(1, ORIGIN_EVERY_HOURS * HOUR // step)
    total = np.zeros(count)
    seen = np.zeros(count)
    for origin in range(MIN_TRAINING_DAYS * per_day, len(known), every):
        reach = min(count, len(known) - origin)
        guess = estimate_after(known[:origin], first_epoch, step, reach)
        total[:reach] += np.abs(guess - known[origin:origin + reach])
        seen[:reach] += 1
    if not seen.any():
        return np.full(count, np.inf)
    error = np.where(seen > 0, total / np.maximum(seen, 1), np.nan)
    last = int(np.flatnonzero(seen)[-1])
    error[last + 1:] = error[last]
    return np.fmax.accumulate(np.nan_to_num(error, nan=0.0))


def reaches_past_forecast(job: Job, zone: ZoneSeries) -> bool:
    """Whether a search for `job` in this zone needs estimates past the provider's forecast."""
    return job.extend_horizon and job.latest_end > zone.forecast.end_epoch


@dataclass(frozen=True)
class Extension:
    series: ForecastSeries   # the forecast followed by estimates (flagged in `estimated`)
    error: np.ndarray        # measured absolute error of each estimated point, gCO2eq/kWh


def _known(series: ForecastSeries, history: Optional[ForecastSeries]) -> tuple[np.ndarray, int]:
    """History before the forecast, then the forecast: values and the first point's epoch."""
    if history is None or history.step_seconds != series.step_seconds:
        return series.values, series.start_epoch
    step = series.step_seconds
    before = history.boundaries()[:-1] < series.start_epoch
    earlier = history.values[before]
    if not len(earlier):
        return series.values, series.start_epoch
    # Contiguous only: a gap between history and forecast would shift every slot.
    last_end = int(history.boundaries()[:-1][before][-1]) + step
    if last_end != series.start_epoch:
        return series.values, series.start_epoch
    return (np.concatenate((earlier, series.values)),
            series.start_epoch - step * len(earlier))


def extend_series(series: ForecastSeries, until: int,
                  history: Optional[ForecastSeries] = None) -> Extension:
    """`series` extended to cover at least up to epoch second `until`, the new points estimated
    from the zone's own history and forecast, with their measured error by lead."""
    step = series.step_seconds
    if until <= series.end_epoch:
        return Extension(series, np.zeros(0))
    count = -(-(until - series.end_epoch) // step)
    known, first = _known(series, history)
    estimates = estimate_after(known, first, step, count)
    extended = replace(series, values=np.concatenate((series.values, estimates)),
                       estimated=np.concatenate((series.estimated_mask(), np.ones(count, dtype=bool))))
    return Extension(extended, measured_error(known, first, step, count))


def window_error(intervals, forecast_end: int, step: int, error: Optional[np.ndarray]) -> float:
    """The expected absolute error (gCO2eq/kWh) of the mean intensity over `intervals` that comes
    from their part past `forecast_end`: each estimated second weighted by the measured error at
    its lead. 0 when nothing is estimated; infinite when the error could not be measured."""
    seconds = sum(b - a for a, b in intervals)
    if seconds <= 0:
        return 0.0
    total = 0.0
    for a, b in intervals:
        a = max(a, forecast_end)
        while a < b:
            index = (a - forecast_end) // step
            upto = min(b, forecast_end + (index + 1) * step)
            if error is None or not len(error):
                return float("inf")
            total += (upto - a) * float(error[min(index, len(error) - 1)])
            a = upto
    return total / seconds


@dataclass(frozen=True)
class EstimatedSpan:
    """The part of a run past the real forecast: its first moment (epoch seconds) and length."""
    start: int
    seconds: int


def estimated_span(series: ForecastSeries, intervals: list[tuple[int, int]],
                   forecast_end: int) -> Optional[EstimatedSpan]:
    """The part of the chosen intervals that lies past the real forecast; None when every
    interval is inside the forecast."""
    past = [(max(a, forecast_end), b) for a, b in intervals if b > forecast_end]
    if not past:
        return None
    return EstimatedSpan(start=min(a for a, _ in past), seconds=sum(b - a for a, b in past))


# Asking again sooner than this after an answer finds no newer forecast (providers publish hourly
# or so), and a client would only be kept busy: a run starting sooner is simply run.
MIN_REPLAN_SECONDS = 15 * 60


def ask_again_at(start: int, now: int, latest_start: int, latest_end: int, forecast_end: int,
                 step: int) -> Optional[int]:
    """When to ask again about a run chosen inside the forecast that starts at `start`: at that
    start, when the allowed window runs past the forecast. A forecast published by then covers
    more of the window, and asking any earlier would miss the one published at the start. The run
    in hand is still allowed then (at the next whole minute when the question arrives a moment
    late), so with an accurate forecast the answer is never worse than it started a minute later,
    and often cleaner: this is how a 24 h forecast finds the cleanest hours of a 72 h window. None
    when there is nothing to learn (the forecast, the shortest of a job's zones', covers the whole
    window, or the run starts at the latest start), or the run starts sooner than a newer forecast
    can come.
    """
    if latest_end <= forecast_end or start >= latest_start or start - now < max(step, MIN_REPLAN_SECONDS):
        return None
    return int(start)


def replan_at(window_end: int, now: int, forecast_end: int, step: int) -> Optional[int]:
    """When asking again finds a window ending at `window_end` inside a real forecast, assuming
    the provider keeps publishing the same horizon (forecast_end - now); None when it already is.
    For a window longer than that horizon this is after the window starts: the planner then asks
    at the start instead (ask_again_at), as a question after the start cannot move the run."""
    if window_end <= forecast_end:
        return None
    horizon = max(0, forecast_end - now)
    moment = window_end - horizon
    return int(-(-moment // step) * step)


@dataclass(frozen=True)
class Gated:
    """A job's run after the risk gate: the run kept, the measured error of its part on estimates,
    whether a run on estimates was turned down for it, and when to ask again (for a run on
    estimates: no later than the start of the best run inside the forecast, open until then)."""
    run: Run
    estimate_error: float = 0.0
    waited_for_forecast: bool = False
    ask_again_at: Optional[int] = None


def risk_gate(job: Job, zones: Zones, on_estimates: Run, error: float, inside: Optional[Run],
              forecast: ForecastSeries, now: int) -> Gated:
    """A run resting on estimates (`error`: window_error's, > 0) replaces the best run inside the
    forecasts (`inside`, None when none fits) only when it is expected to be cleaner by more than
    the estimates' measured error. `forecast`: the provider's forecast of its zone."""
    if inside is not None and inside.mean_intensity - on_estimates.mean_intensity <= error:
        waited = replan_at(on_estimates.end, now, forecast.end_epoch, forecast.step_seconds)
        # Ask again when a forecast covers the run turned down, if that is before this run
        # starts (the client's `wait` re-asks at replan_at when it comes before the start);
        # else at this run's start, when a newer forecast may show a cleaner one.
        ask = waited if waited is not None and now < waited < inside.start else None
        if ask is None:
            ask = ask_again(job, zones, inside.start, now)
        return Gated(inside, waited_for_forecast=True, ask_again_at=ask)
    # The run on estimates wins, but the best run inside the forecast is still open until it
    # starts: ask again by then, so that a newer forecast can still choose it.
    return Gated(on_estimates, error,
                 ask_again_at=None if inside is None else ask_again(job, zones, inside.start, now))


def coverage_of(job: Job, zones: Zones, source: ZoneSeries, gated: Gated, now: int,
                use_estimates: bool = True) -> Coverage:
    """What the provider's forecast covers of the allowed window, what of the chosen run rests on
    estimates, and when to ask again. `use_estimates` False: a batch under capacity, placed
    jointly over the forecasts and not replanned job by job."""
    run = gated.run
    searched = source.searched(job) if use_estimates else source.forecast
    # A run reaching past the forecast is replanned when a forecast covers it (_covered).
    inside = run.end <= source.forecast.end_epoch
    coverage = _covered(job, source.forecast, searched, run.intervals, now,
                        ask_again(job, zones, run.start, now) if use_estimates and inside else None)
    ask = gated.ask_again_at
    if gated.waited_for_forecast:
        coverage = replace(coverage, waited_for_forecast=True, replan_at=ask)
    elif coverage.estimated_start is not None:
        sooner = ask is not None and (coverage.replan_at is None or ask < coverage.replan_at)
        coverage = replace(coverage, estimate_error=gated.estimate_error,
                           replan_at=ask if sooner else coverage.replan_at)
    if coverage.replan_at is not None and coverage.replan_at > run.start:
        # Every path above may land after the start (a run longer than the forecast is never
        # covered before it starts; the best run inside the forecast, kept open, may start after
        # the run on estimates): a question then comes too late to move the run. Ask at its
        # start instead, the last moment a newer forecast can move it, unless that is too soon.
        coverage = replace(coverage, replan_at=ask_again(job, zones, run.start, now)
                           if use_estimates else None)
    return coverage


def _covered(job: Job, forecast: ForecastSeries, searched: ForecastSeries,
             intervals: tuple[tuple[int, int], ...], now: int,
             ask_at: Optional[int] = None) -> Coverage:
    """What the provider's forecast covers of the allowed window, what of the choice rests on
    estimates (points flagged estimated, or anything past the forecast), and when to ask again:
    when a forecast covers the estimated part, else `ask_at` (ask_again's answer)."""
    allowed_start, allowed_end = job.earliest_start, job.latest_end
    real_end = forecast.end_epoch
    covered = max(0, min(allowed_end, real_end) - max(allowed_start, forecast.start_epoch))
    end = intervals[-1][1]
    estimated = False
    if searched.estimated is not None:  # most series have no estimated point: skip the arrays
        boundaries = searched.boundaries()
        for a, b in intervals:  # the chosen intervals only, not the gaps between chunks
            overlaps = (boundaries[:-1] < b) & (boundaries[1:] > a)
            estimated = estimated or bool((overlaps & searched.estimated).any())
    span = estimated_span(searched, list(intervals), real_end)
    return Coverage(
        window_coverage=min(1.0, covered / max(1, allowed_end - allowed_start)),
        search_limited_by_horizon=allowed_end > searched.end_epoch,
        estimated=estimated or span is not None,
        estimated_start=None if span is None else span.start,
        estimated_seconds=None if span is None else span.seconds,
        replan_at=(replan_at(end, now, real_end, forecast.step_seconds) if end > real_end
                   else ask_at))


def ask_again(job: Job, zones: Zones, start: int, now: int) -> Optional[int]:
    """horizon.ask_again_at for a run of `job` inside the forecasts starting at `start`: a newer
    forecast of any of the job's zones may show a cleaner run, so the shortest of them counts."""
    if start - now < MIN_REPLAN_SECONDS:  # ask_again_at's cheapest test, before any zone: most
        return None                       # runs of a batch start at once
    end = step = None
    for z in job.zones:  # a loop, not min() over generators: this runs for every answer
        one = zones[z]
        if isinstance(one, ZoneSeries):
            forecast = one.forecast
            end = forecast.end_epoch if end is None else min(end, forecast.end_epoch)
            step = forecast.step_seconds if step is None else min(step, forecast.step_seconds)
    return ask_again_at(start, now, job.latest_start, job.latest_end, end, step)
