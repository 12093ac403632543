"""Past the forecast horizon: estimate a zone's intensity from its own recent data, state how
wrong such estimates may be, gate runs resting on them, and say when to ask again.

Pure functions, no I/O, no clock. What is known of a zone is its recent measured history followed by
the provider's forecast (one series, `known`). The estimator is chosen per zone and request among a
few candidates (estimators.py: the blend of persistence and the hour-of-day profile, a daily profile,
a weekly repeat when two weeks are known) by its replayed error from earlier origins inside `known`.

The error is measured, not assumed: the chosen estimator's replay (`ErrorReplay`) gives, per origin,
the signed error of a run's mean over the same leads as the run, and the stated error is its
conformal quantile at ERROR_COVERAGE (`run_error`). A run resting on estimates is taken only when its
advantage exceeds that error (`risk_gate`), or the higher NOW_COVERAGE quantile when the run it
replaces starts before anyone can ask again (declining it is final); `coverage_of` says what of a
chosen run rests on estimates and when to ask again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from carbon_optimizer.scheduling.estimators import (  # noqa: F401  (re-exported)
    LEVEL_DAYS, MIN_TRAINING_DAYS, ORIGIN_EVERY_HOURS, ErrorReplay, choose, estimate_after,
    origins, replay, slots,
)
from carbon_optimizer.scheduling.model import Coverage, Job, Run, ZoneSeries, Zones
from carbon_optimizer.timeseries import ForecastSeries

DAY = 86400
HOUR = 3600
# How far past the provider's forecast an estimate may reach: beyond two weeks it is a guess.
MAX_EXTENSION_SECONDS = 14 * DAY
# The stated error of a run's mean on estimates: the truth exceeds estimate + error in at most
# this share of the replayed origins (a one-sided conformal quantile).
ERROR_COVERAGE = 0.9
# Declining a run inside the forecast that starts before anyone can ask again is final: the run on
# estimates must then beat it by this higher quantile (1 in 20 rather than 1 in 10).
NOW_COVERAGE = 0.95


def mean_absolute(signed: np.ndarray, count: int) -> np.ndarray:
    """Mean absolute error at each of `count` leads from replayed signed errors: non-decreasing
    with the lead (a far estimate is never trusted more than a near one), held at its last measured
    value past the longest lead measured; infinite when nothing was measured."""
    if signed is None or not len(signed) or not np.isfinite(signed).any():
        return np.full(count, np.inf)
    seen = np.isfinite(signed).sum(axis=0)
    total = np.nansum(np.abs(signed), axis=0)
    error = np.where(seen > 0, total / np.maximum(seen, 1), np.nan)
    last = int(np.flatnonzero(seen)[-1])
    error[last + 1:] = error[last]
    return np.fmax.accumulate(np.nan_to_num(error, nan=0.0))


def measured_error(known: np.ndarray, first_epoch: int, step: int, count: int) -> np.ndarray:
    """Mean absolute error of the blend (`estimate_after`) at each of `count` leads, measured from
    origins inside `known` (mean_absolute's rules)."""
    known = np.asarray(known, dtype=np.float64)
    at = origins(len(known), step, MIN_TRAINING_DAYS)
    return mean_absolute(replay(estimate_after, known, first_epoch, step, count, at), count)


def reaches_past_forecast(job: Job, zone: ZoneSeries) -> bool:
    """Whether a search for `job` in this zone needs estimates past the provider's forecast."""
    return job.extend_horizon and job.latest_end > zone.forecast.end_epoch


@dataclass(frozen=True)
class Extension:
    series: ForecastSeries   # the forecast followed by estimates (flagged in `estimated`)
    error: np.ndarray        # measured mean absolute error of each estimated point, gCO2eq/kWh
    replay: Optional[ErrorReplay] = None  # the chosen estimator's replayed errors (None: too little known)


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
    chosen, signed, at = choose(known, first, step, count)
    estimates = chosen.estimate(known, first, step, count)
    extended = replace(series, values=np.concatenate((series.values, estimates)),
                       estimated=np.concatenate((series.estimated_mask(), np.ones(count, dtype=bool))))
    return Extension(extended, mean_absolute(signed, count),
                     None if signed is None else ErrorReplay(signed, chosen.name, known, at))


def _leads(intervals, forecast_end: int, step: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The leads (steps past `forecast_end`) the intervals spend time at, the seconds at each, and
    the intervals' total seconds."""
    leads: dict[int, int] = {}
    total = 0
    for a, b in intervals:
        total += b - a
        a = max(a, forecast_end)
        while a < b:
            index = (a - forecast_end) // step
            upto = min(b, forecast_end + (index + 1) * step)
            leads[index] = leads.get(index, 0) + upto - a
            a = upto
    return (np.fromiter(leads, dtype=np.int64, count=len(leads)),
            np.fromiter(leads.values(), dtype=np.float64, count=len(leads)), total)


def run_error(intervals, forecast_end: int, step: int, errors: Optional[ErrorReplay],
              coverage: float = ERROR_COVERAGE, window: Optional[tuple[int, int]] = None,
              pieces: bool = False, inside_points: int = 0, run_points: int = 0,
              strict: bool = False) -> float:
    """The stated error (gCO2eq/kWh) of the mean intensity over `intervals` from their part past
    `forecast_end`: the conformal quantile at `coverage` of the replayed errors of that mean,
    the choice replayed over the estimates of `window` (epoch seconds the search could choose
    from; `pieces`: chunks), counting the origins where the estimates beat the best of the last
    `inside_points` before them (the forecast's analogue). 0 when nothing is estimated; infinite
    when it could not be measured."""
    leads, seconds, total = _leads(intervals, forecast_end, step)
    if not len(leads) or total <= 0:
        return 0.0
    if errors is None:
        return float("inf")
    span = None
    if window is not None:
        first = max(0, (window[0] - forecast_end) // step)
        span = (first, max(first + 1, -(-(window[1] - forecast_end) // step)))
    return errors.run_error(leads, seconds, total, coverage, span, pieces, inside_points, run_points,
                            strict)


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
    """A job's run after the risk gate: the run kept, the stated error of its part on estimates
    (and that error's coverage, None when only a per-lead bound was known; the estimator), whether
    a run on estimates was turned down for it, and when to ask again (for a run on estimates: no
    later than the start of the best run inside the forecast, open until then)."""
    run: Run
    estimate_error: float = 0.0
    waited_for_forecast: bool = False
    ask_again_at: Optional[int] = None
    error_coverage: Optional[float] = None
    estimator: Optional[str] = None


def stated_error(job: Job, intervals, source: ZoneSeries, coverage: float = ERROR_COVERAGE,
                 strict: bool = False) -> tuple[float, Optional[float]]:
    """The error of the mean over `intervals` (a run of `job`) from their part on `source`'s
    estimates, and its coverage: the replay's conformal quantile when the zone has one; else (a
    zone given only per-lead errors) their time-weighted mean, a bound of unknown coverage."""
    forecast = source.forecast
    if source.error_replay is not None:
        searched = source.searched(job)
        window = (job.earliest_start, min(job.latest_end, searched.end_epoch))
        # What of the window the forecast covers: the replay's analogue of the inside run.
        inside = max(0, forecast.end_epoch - max(job.earliest_start, forecast.start_epoch))
        return (run_error(intervals, forecast.end_epoch, forecast.step_seconds, source.error_replay,
                          coverage, window, job.interruptible, inside // forecast.step_seconds,
                          -(-job.duration // forecast.step_seconds), strict),
                coverage)
    return window_error(intervals, forecast.end_epoch, forecast.step_seconds,
                        source.estimate_error), None


def revisitable(job: Job, zones: Zones, inside: Run, now: int) -> bool:
    """Whether declining `inside` leaves it open: the client is told to ask again before it
    starts. A run starting within MIN_REPLAN_SECONDS (or at the latest start) is gone once
    declined."""
    return ask_again(job, zones, inside.start, now) is not None


def gate(job: Job, zones: Zones, on_estimates: Run, source: ZoneSeries, inside: Optional[Run],
         now: int) -> Gated:
    """The risk gate for a run resting on `source`'s estimates against `inside`, the best run
    inside the forecasts (None when none fits): the margin is the stated error at ERROR_COVERAGE,
    or when declining `inside` is final (it starts before anyone can ask again: the gate cannot
    weigh it as revisitable) the quantile at NOW_COVERAGE over the origins where the estimates
    beat even the forecast's cleanest hours (`strict`: for chunks, the stricter test)."""
    error, coverage = stated_error(job, on_estimates.intervals, source)
    margin = error
    if inside is not None and not revisitable(job, zones, inside, now):
        margin = max(error, stated_error(job, on_estimates.intervals, source, NOW_COVERAGE,
                                         strict=True)[0])
    estimator = None if source.error_replay is None else source.error_replay.estimator
    return risk_gate(job, zones, on_estimates, error, inside, source.forecast, now, margin,
                     coverage, estimator)


def risk_gate(job: Job, zones: Zones, on_estimates: Run, error: float, inside: Optional[Run],
              forecast: ForecastSeries, now: int, margin: Optional[float] = None,
              coverage: Optional[float] = None, estimator: Optional[str] = None) -> Gated:
    """A run resting on estimates (`error`: its stated error) replaces the best run inside the
    forecasts (`inside`, None when none fits) only when it is expected to be cleaner by more than
    `margin` (default: `error`). `forecast`: the provider's forecast of its zone."""
    margin = error if margin is None else margin
    if inside is not None and inside.mean_intensity - on_estimates.mean_intensity <= margin:
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
                 ask_again_at=None if inside is None else ask_again(job, zones, inside.start, now),
                 error_coverage=coverage, estimator=estimator)


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
                           error_coverage=gated.error_coverage, estimator=gated.estimator,
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
