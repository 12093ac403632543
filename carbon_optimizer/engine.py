"""CarbonEngine: forecasts for the zones asked (cache, then provider), the optimizer, the answer.

The engine knows nothing of HTTP or Flask; the app hands it validated Jobs and a "now".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Optional

from carbon_optimizer import advanced_scheduling
from carbon_optimizer.ops import metrics
from carbon_optimizer.scheduling import window as optimizer
from carbon_optimizer.data.cache import CachedForecast, ForecastCache
from carbon_optimizer.data.providers.base import Provider, ProviderError
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, rfc3339, to_epoch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One workload, in epoch seconds, defaults already applied."""
    duration: int
    zones: tuple[str, ...]
    earliest_start: int
    latest_start: int
    id: Optional[str] = None
    power_kw: Optional[float] = None
    energy_kwh: Optional[float] = None
    interruptible: bool = False        # may run in chunks (advanced_scheduling)
    min_chunk: Optional[int] = None    # seconds; None: the forecast step
    max_chunks: Optional[int] = None
    extend_horizon: bool = True        # past the forecast, search on estimates

    @property
    def energy(self) -> Optional[float]:
        """kWh for the whole job, when power or energy was given."""
        if self.energy_kwh is not None:
            return self.energy_kwh
        if self.power_kw is not None:
            return self.power_kw * self.duration / 3600
        return None


@dataclass(frozen=True)
class ZoneForecast:
    """A zone's series as served, with where it came from."""
    series: ForecastSeries
    stale: bool
    fetched_at: Optional[float]

    @cached_property
    def _provenance(self) -> dict:
        return {
            "provider": self.series.provider,
            "updated_at": rfc3339(self.series.updated_at),
            "fetched_at": rfc3339(from_epoch(self.fetched_at)) if self.fetched_at else None,
            "stale": self.stale,
            "forecast_start": rfc3339(self.series.start),
            "forecast_end": rfc3339(self.series.end),
        }

    def provenance(self) -> dict:
        """Where the series came from; formatted once per zone and request, a copy per caller."""
        return dict(self._provenance)


@dataclass
class ZoneFailure:
    zone: str
    error: ProviderError


@dataclass
class Outcome:
    """The answer for one workload: a schedule, or why there is none."""
    job: Job
    result: Optional[dict] = None
    failure_code: Optional[str] = None
    failure_message: Optional[str] = None
    zone_failures: list[ZoneFailure] = field(default_factory=list)

    @property
    def scheduled(self) -> bool:
        return self.result is not None


class CarbonEngine:
    def __init__(self, provider: Provider, cache: ForecastCache):
        self.provider = provider
        self.cache = cache

    # -- forecasts -------------------------------------------------------------------------------

    def forecast(self, zone: str, now: datetime) -> ZoneForecast:
        """The zone's forecast, from the cache when the provider is remote. Raises ProviderError."""
        if not self.provider.shared_cache:
            return ZoneForecast(series=self.provider.forecast(zone, now), stale=False, fetched_at=None)
        cached: CachedForecast = self.cache.get(
            "forecast", zone, lambda: self.provider.forecast(zone, now))
        return ZoneForecast(series=cached.series, stale=cached.stale, fetched_at=cached.fetched_at)

    def _forecasts(self, zones: list[str], now: datetime) -> dict[str, ZoneForecast | ZoneFailure]:
        found: dict[str, ZoneForecast | ZoneFailure] = {}
        for zone in zones:
            try:
                found[zone] = self.forecast(zone, now)
            except ProviderError as exc:
                log.warning("no carbon data for zone %s: %s", zone, exc.message)
                found[zone] = ZoneFailure(zone, exc)
        return found

    def health(self) -> dict:
        """Dependency checks for /health; never calls the provider."""
        last_success, last_failure = self.cache.fetch_times()
        if not self.provider.shared_cache:
            provider_status = "ok"
        elif last_failure is not None and (last_success is None or last_failure > last_success):
            provider_status = "failing"
        else:
            provider_status = "ok"
        return {
            "redis": self.cache.status(),
            "provider": {"status": provider_status, "name": self.provider.name,
                         "last_failure": rfc3339(from_epoch(last_failure)) if last_failure else None},
            "last_successful_fetch": {
                "status": "ok" if last_success or not self.provider.shared_cache else "none_yet",
                "at": rfc3339(from_epoch(last_success)) if last_success else None},
        }

    # -- optimisation ----------------------------------------------------------------------------

    def optimize(self, jobs: list[Job], now: datetime,
                 capacity: Optional[dict] = None) -> list[Outcome]:
        zones = list(dict.fromkeys(zone for job in jobs for zone in job.zones))
        forecasts = self._forecasts(zones, now)
        arrays = {zone: (f.series.boundaries(), f.series.values)
                  for zone, f in forecasts.items() if isinstance(f, ZoneForecast)}
        outcomes = [self._schedule(job, forecasts, arrays, to_epoch(now)) for job in jobs]
        if capacity:  # the batch shares a fleet: place it jointly (advanced_scheduling)
            for outcome in outcomes:
                if outcome.scheduled:
                    outcome.result = None
            advanced_scheduling.schedule_batch(self, jobs, forecasts, arrays, capacity,
                                               to_epoch(now), outcomes)
        avoided = sum(o.result.get("saving_grams") or 0.0 for o in outcomes if o.scheduled)
        if avoided > 0:
            metrics.GRAMS_AVOIDED.inc(avoided)
        scheduled = sum(1 for outcome in outcomes if outcome.scheduled)
        if scheduled:
            metrics.WORKLOADS_SCHEDULED.labels("scheduled").inc(scheduled)
        if len(outcomes) > scheduled:
            metrics.WORKLOADS_SCHEDULED.labels("unschedulable").inc(len(outcomes) - scheduled)
        return outcomes

    def _schedule(self, job: Job, forecasts: dict, arrays: dict, now: int) -> Outcome:
        failures = [f for z in job.zones if isinstance(f := forecasts[z], ZoneFailure)]
        usable = [z for z in job.zones if isinstance(forecasts[z], ZoneForecast)]
        outcome = Outcome(job=job, zone_failures=failures)
        if not usable:
            outcome.failure_code = failures[0].error.code
            outcome.failure_message = "; ".join(f.error.message for f in failures)
            return outcome
        runs_past = job.extend_horizon and any(
            job.latest_start + job.duration > forecasts[z].series.end_epoch for z in usable)
        if job.interruptible or runs_past:
            return advanced_scheduling.schedule_one(self, job, forecasts, arrays, now, outcome,
                                                    usable, failures)
        chosen = optimizer.best_window_across(
            [arrays[z] for z in usable], job.duration, job.earliest_start, job.latest_start,
            integrals=[forecasts[z].series.integral() for z in usable])
        if chosen is None:
            outcome.failure_code = "window_not_covered"
            outcome.failure_message = (
                "no forecast covers a whole run of this workload between its earliest and latest "
                "start; " + "; ".join(
                    f"{z} is covered from {rfc3339(forecasts[z].series.start)} to "
                    f"{rfc3339(forecasts[z].series.end)}" for z in usable))
            return outcome
        zone = usable[chosen.zone_index]
        outcome.result = self._describe(job, zone, chosen.window, forecasts, arrays, now, failures)
        return outcome

    def _describe(self, job: Job, zone: str, window: optimizer.Window, forecasts: dict,
                  arrays: dict, now: int, failures: list[ZoneFailure]) -> dict:
        forecast: ZoneForecast = forecasts[zone]
        baseline = self._baseline(job, forecasts, arrays)
        energy = job.energy
        result = {
            "id": job.id,
            "status": "scheduled",
            "zone": zone,
            "start": rfc3339(from_epoch(window.start)),
            "end": rfc3339(from_epoch(window.end)),
            "start_in_seconds": max(0, window.start - now),
            "duration_minutes": job.duration // 60,
            "carbon_intensity": round(window.mean_intensity, 3),
            "baseline": baseline,
            "saving_percent": None,
            "emissions_grams": None,
            "baseline_emissions_grams": None,
            "saving_grams": None,
            "provenance": {**forecast._provenance, **self._coverage(job, forecast.series, window)},
        }
        if baseline is not None and baseline["carbon_intensity"] > 0:
            saving = 100.0 * (1 - window.mean_intensity / baseline["carbon_intensity"])
            result["saving_percent"] = round(saving, 2)
        if energy is not None:
            result["emissions_grams"] = round(window.mean_intensity * energy, 3)
            if baseline is not None:
                result["baseline_emissions_grams"] = round(baseline["carbon_intensity"] * energy, 3)
                result["saving_grams"] = round(
                    result["baseline_emissions_grams"] - result["emissions_grams"], 3)
        if failures:
            result["unavailable_zones"] = [
                {"zone": f.zone, "code": f.error.code, "message": f.error.message} for f in failures]
        return result

    def _baseline(self, job: Job, forecasts: dict, arrays: dict) -> Optional[dict]:
        """Run at the earliest allowed start (or the first covered minute) in the first zone."""
        zone = job.zones[0]
        if zone not in arrays:
            return None
        boundaries, values = arrays[zone]
        bounds = optimizer.start_range(boundaries, job.duration, job.earliest_start, job.latest_start)
        if bounds is None:
            return None
        start = bounds[0]
        mean = optimizer.window_mean(boundaries, values, start, job.duration,
                                     forecasts[zone].series.integral())
        return {"zone": zone, "start": rfc3339(from_epoch(start)),
                "end": rfc3339(from_epoch(start + job.duration)), "carbon_intensity": round(mean, 3)}

    @staticmethod
    def _coverage(job: Job, series: ForecastSeries, window: optimizer.Window) -> dict:
        """How much of the allowed window [earliest start, latest finish] the forecast covers."""
        allowed_start, allowed_end = job.earliest_start, job.latest_start + job.duration
        covered = max(0, min(allowed_end, series.end_epoch) - max(allowed_start, series.start_epoch))
        fraction = covered / (allowed_end - allowed_start) if allowed_end > allowed_start else 1.0
        estimated = False
        if series.estimated is not None:  # most series have no estimated point: skip the arrays
            boundaries = series.boundaries()
            overlaps = (boundaries[:-1] < window.end) & (boundaries[1:] > window.start)
            estimated = bool((overlaps & series.estimated).any())
        return {
            "window_coverage": round(min(1.0, fraction), 4),
            "search_limited_by_horizon": allowed_end > series.end_epoch,
            "estimated": estimated,
            "estimated_part": None,  # set, with replan_at, when a search reaches past the forecast
            "replan_at": None,
        }

