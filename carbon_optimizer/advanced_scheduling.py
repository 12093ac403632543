"""The engine's glue for interruptible workloads, windows past the forecast, and fleet capacity.

CarbonEngine calls in here only for requests that use these features, so the common path stays as it
was. The maths lives in pure modules (optimizer_chunks, horizon_extension, fleet); this module turns
engine forecasts into their arrays and their answers into the engine's result dicts.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from functools import reduce
from pathlib import Path

import numpy as np

from carbon_optimizer.scheduling import window as optimizer
from carbon_optimizer.scheduling.fleet import Capacity, FleetJob, schedule_fleet
from carbon_optimizer.scheduling.horizon import estimated_span, extend_series, replan_at
from carbon_optimizer.scheduling.chunks import TooLarge, best_chunks
from carbon_optimizer.timeseries import from_epoch, rfc3339

log = logging.getLogger(__name__)

# How far past the provider's forecast an estimate may reach: beyond two weeks it is a guess.
MAX_EXTENSION_SECONDS = 14 * 86400
_PROFILES = {zone: np.asarray(v, dtype=np.float64) for zone, v in json.loads(
    (Path(__file__).parent / "data" / "providers" / "demo_profiles.json").read_text())["profiles"].items()}


def _history(engine, zone: str, now):
    """Recent measurements (cached like forecasts when the provider is remote); None on failure."""
    try:
        if not engine.provider.shared_cache:
            return engine.provider.history(zone, now)

        def fetch():
            found = engine.provider.history(zone, now)
            if found is None:
                raise LookupError("no history")
            return found
        return engine.cache.get("history", zone, fetch).series
    except Exception as exc:  # history only refines the estimate; its absence must not fail a request
        log.info("no history for zone %s: %s", zone, exc)
        return None


def extended_to(engine, forecast, until: int, now):
    """The zone's forecast, extended with estimates to `until` (epoch seconds; at most 14 days past
    the forecast). The estimates do not depend on `until`: a longer extension only adds points."""
    series = forecast.series
    if until <= series.end_epoch:
        return forecast
    until = min(until, series.end_epoch + MAX_EXTENSION_SECONDS)
    extended = extend_series(series, until, _PROFILES.get(series.zone),
                             _history(engine, series.zone, now))
    return replace(forecast, series=extended)


def extended_forecast(engine, forecast, job, now):
    """The zone's forecast, extended with estimates when the job's window runs past it."""
    return extended_to(engine, forecast, job.latest_start + job.duration, now)


def schedule_one(engine, job, forecasts: dict, arrays: dict, now, outcome, usable, failures):
    """Fill `outcome` for an interruptible job or one allowed past the horizon."""
    zone_forecasts = dict(forecasts)
    zone_arrays = dict(arrays)
    if job.extend_horizon:
        for zone in usable:
            zone_forecasts[zone] = extended_forecast(engine, forecasts[zone], job, from_epoch(now))
            zone_arrays[zone] = (zone_forecasts[zone].series.boundaries(), zone_forecasts[zone].series.values)
    chunks = None
    if job.interruptible:
        best = None
        for zone in usable:
            try:
                plan = best_chunks(*zone_arrays[zone], job.duration, job.earliest_start,
                                   job.latest_start + job.duration, job.min_chunk, job.max_chunks)
            except TooLarge as exc:
                outcome.failure_code, outcome.failure_message = "too_large", str(exc)
                return outcome
            if plan is not None and (best is None or plan.mean_intensity < best[1].mean_intensity - 1e-9):
                best = (zone, plan)
        if best is not None:
            zone, plan = best
            chunks = [(c.start, c.end) for c in plan.chunks]
            window = optimizer.Window(plan.start, plan.end, plan.mean_intensity)
    else:
        found = optimizer.best_window_across([zone_arrays[z] for z in usable], job.duration,
                                             job.earliest_start, job.latest_start)
        if found is not None:
            zone, window = usable[found.zone_index], found.window
            chunks = [(window.start, window.end)]
    if chunks is None:
        outcome.failure_code = "window_not_covered"
        outcome.failure_message = ("no forecast covers a run of this workload inside its allowed "
                                   "window (estimates reach at most 14 days past a forecast)")
        return outcome
    result = engine._describe(job, zone, window, zone_forecasts, zone_arrays, now, failures)
    if job.interruptible:
        result["chunks"] = [{"start": rfc3339(from_epoch(a)), "end": rfc3339(from_epoch(b)),
                             "duration_minutes": (b - a) // 60} for a, b in chunks]
        result["duration_minutes"] = job.duration // 60
    _horizon_provenance(result, forecasts[zone], zone_forecasts[zone], job, chunks, now)
    outcome.result = result
    return outcome


def _horizon_provenance(result, real, served, job, chunks, now) -> None:
    """Provenance against the provider's real forecast, with the estimated part and replan_at."""
    provenance = result["provenance"]
    real_end = real.series.end_epoch
    provenance["forecast_end"] = rfc3339(real.series.end)
    allowed_start, allowed_end = job.earliest_start, job.latest_start + job.duration
    searched_end = min(allowed_end, served.series.end_epoch)
    provenance["search_limited_by_horizon"] = searched_end < allowed_end
    span = estimated_span(served.series, chunks, real_end)
    provenance["estimated_part"] = None if span is None else {
        "start": rfc3339(from_epoch(span["start"])), "minutes": span["seconds"] // 60}
    provenance["estimated"] = bool(provenance["estimated"] or span is not None)
    moment = replan_at(chunks[-1][1], now, real_end, real.series.step_seconds)
    provenance["replan_at"] = rfc3339(from_epoch(moment)) if moment is not None else None
    covered = max(0, min(allowed_end, real_end) - max(allowed_start, real.series.start_epoch))
    provenance["window_coverage"] = round(min(1.0, covered / max(1, allowed_end - allowed_start)), 4)


def schedule_batch(engine, jobs, forecasts: dict, arrays: dict, capacity: dict, now, outcomes):
    """Jointly place the batch's jobs under `capacity`; fills the outcomes the engine prepared
    (those with a usable zone and no failure yet). Chunks are not split under capacity."""
    live = [i for i, o in enumerate(outcomes) if o.failure_code is None
            and any(z in arrays for z in jobs[i].zones)]
    if not live:
        return
    zones = list(dict.fromkeys(z for i in live for z in jobs[i].zones if z in arrays))
    series = [forecasts[z].series for z in zones]
    unit = reduce(math.gcd, [s.step_seconds for s in series] + [jobs[i].duration for i in live])
    origin = max(s.start_epoch for s in series)
    origin = -(-origin // unit) * unit
    units = (min(s.end_epoch for s in series) - origin) // unit
    if units <= 0:
        for i in live:
            outcomes[i].failure_code = "window_not_covered"
            outcomes[i].failure_message = "the batch's zones share no forecast period"
        return
    times = origin + unit * np.arange(units)
    intensity = np.stack([s.values[np.searchsorted(s.boundaries(), times, side="right") - 1]
                          for s in series])
    fleet_jobs = [FleetJob(length=jobs[i].duration // unit,
                           earliest=-(-(jobs[i].earliest_start - origin) // unit),
                           latest=(jobs[i].latest_start - origin) // unit,
                           zones=tuple(zones.index(z) for z in jobs[i].zones if z in arrays),
                           power_kw=jobs[i].power_kw)
                  for i in live]
    per_zone = capacity.get("max_concurrent_per_zone") or {}
    power = capacity.get("max_power_kw") or {}
    plan = schedule_fleet(intensity, fleet_jobs, Capacity(
        max_concurrent=capacity.get("max_concurrent"),
        zone_concurrent=[per_zone.get(z) for z in zones],
        zone_power_kw=[power.get(z) for z in zones]))
    messages = {"window_not_covered": "no start inside the allowed window is covered by the "
                                      "forecasts of every zone in the batch",
                "capacity_exceeded": "the batch's capacity (concurrency or power) leaves no room "
                                     "for this workload inside its allowed window"}
    for i, place, reason in zip(live, plan.placements, plan.reasons):
        outcome = outcomes[i]
        if place is None:
            outcome.failure_code, outcome.failure_message = reason, messages[reason]
            continue
        zone = zones[place.zone]
        start = origin + place.start * unit
        boundaries, values = arrays[zone]
        mean = optimizer.window_mean(boundaries, values, start, jobs[i].duration)
        window = optimizer.Window(start, start + jobs[i].duration, mean)
        outcome.result = engine._describe(jobs[i], zone, window, forecasts, arrays, now,
                                          outcome.zone_failures)
