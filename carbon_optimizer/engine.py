"""CarbonEngine: the carbon data a request needs (cache, then provider; estimates past the
forecast), handed to the planner; typed outcomes back.

The engine knows nothing of HTTP or Flask: the web layer hands it validated Jobs and a "now" and
serialises what it returns. It builds no answer itself; scheduling.planner does.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from carbon_optimizer.data.cache import ForecastCache
from carbon_optimizer.data.profiles import hour_of_week_profiles
from carbon_optimizer.data.providers.base import Provider
from carbon_optimizer.data.providers.factory import build_provider
from carbon_optimizer.errors import CarbonDataError
from carbon_optimizer.ops import metrics
from carbon_optimizer.scheduling import planner
from carbon_optimizer.scheduling.budget import Budget
from carbon_optimizer.scheduling.horizon import MAX_EXTENSION_SECONDS, extend_series
from carbon_optimizer.scheduling.model import (
    CapacityLimits, Job, Outcome, Schedule, ZoneFailure, ZoneSeries,
)
from carbon_optimizer.secret_store import BaseSecretStore
from carbon_optimizer.settings import Settings
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, rfc3339, to_epoch

log = logging.getLogger(__name__)

__all__ = ["CarbonEngine", "Job", "build_engine"]


class CarbonEngine:
    def __init__(self, provider: Provider, cache: ForecastCache,
                 profiles: Optional[Callable[[], Mapping[str, np.ndarray]]] = hour_of_week_profiles,
                 budget: Callable[[], Budget] = Budget):
        self.provider = provider
        self.cache = cache
        self._profiles = profiles
        self._budget = budget  # a fresh Budget (deadline and work cap) per optimize call

    # -- carbon data -----------------------------------------------------------------------------

    def forecast(self, zone: str, now: datetime) -> ZoneSeries:
        """The zone's forecast, from the cache when the provider is remote. Raises CarbonDataError."""
        if not self.provider.shared_cache:
            return ZoneSeries(forecast=self.provider.forecast(zone, now))
        cached = self.cache.get("forecast", zone, lambda: self.provider.forecast(zone, now))
        return ZoneSeries(forecast=cached.series, stale=cached.stale,
                          fetched_at=int(cached.fetched_at) if cached.fetched_at else None)

    def extended(self, zone: ZoneSeries, until: int, now: datetime) -> ZoneSeries:
        """`zone` with estimates past its forecast up to `until` (epoch seconds; at most 14 days
        past the forecast). The estimates do not depend on `until`: longer only adds points."""
        series = zone.forecast
        if until <= series.end_epoch:
            return zone
        until = min(until, series.end_epoch + MAX_EXTENSION_SECONDS)
        profile = self._profiles().get(series.zone) if self._profiles else None
        return replace(zone, extended=extend_series(series, until, profile,
                                                    self.history(series.zone, now)))

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        """Recent measurements (cached like forecasts when the provider is remote); None on failure.
        They refine estimates past a forecast, and GET /forecast?history=true shows them."""
        try:
            if not self.provider.shared_cache:
                return self.provider.history(zone, now)

            def fetch() -> ForecastSeries:
                found = self.provider.history(zone, now)
                if found is None:
                    raise LookupError("no history")
                return found
            return self.cache.get("history", zone, fetch).series
        except Exception as exc:  # history only refines the estimate; its absence fails no request
            log.info("no history for zone %s: %s", zone, exc)
            return None

    def _zones(self, jobs: Sequence[Job], now: datetime,
               extend: bool) -> dict[str, ZoneSeries | ZoneFailure]:
        found: dict[str, ZoneSeries | ZoneFailure] = {}
        for zone in dict.fromkeys(z for job in jobs for z in job.zones):
            try:
                found[zone] = self.forecast(zone, now)
            except CarbonDataError as exc:
                log.warning("no carbon data for zone %s: %s", zone, exc.message)
                found[zone] = ZoneFailure(zone, exc.code, exc.message)
        if extend:  # one extension per zone, as far as the furthest job that needs it
            reach: dict[str, int] = {}
            for job in jobs:
                for z in job.zones:
                    one = found[z]
                    if isinstance(one, ZoneSeries) and planner.reaches_past_forecast(job, one):
                        reach[z] = max(reach.get(z, 0), job.latest_end)
            for z, until in reach.items():
                found[z] = self.extended(found[z], until, now)  # type: ignore[arg-type]
        return found

    # -- scheduling ------------------------------------------------------------------------------

    def optimize(self, jobs: Sequence[Job], now: datetime,
                 capacity: Optional[CapacityLimits] = None) -> list[Outcome]:
        """A Schedule or an Unschedulable per job, in order. With `capacity` the batch is placed
        jointly over the providers' forecasts; otherwise each job on its own."""
        at = to_epoch(now)
        zones = self._zones(jobs, now, extend=capacity is None)
        budget = self._budget()  # solving time only: fetching data has its own timeouts
        if capacity is not None:
            outcomes = planner.plan_batch(jobs, zones, capacity, at, budget)
        else:
            outcomes = planner.plan_all(jobs, zones, at, budget)
        self._count(outcomes)
        return outcomes

    @staticmethod
    def _count(outcomes: Sequence[Outcome]) -> None:
        scheduled = [o for o in outcomes if isinstance(o, Schedule)]
        avoided = 0.0
        for one in scheduled:
            before, after = one.baseline_emissions_grams, one.emissions_grams
            if before is not None and after is not None:
                avoided += before - after
        if avoided > 0:
            metrics.GRAMS_AVOIDED.inc(avoided)
        if scheduled:
            metrics.WORKLOADS_SCHEDULED.labels("scheduled").inc(len(scheduled))
        if len(outcomes) > len(scheduled):
            metrics.WORKLOADS_SCHEDULED.labels("unschedulable").inc(len(outcomes) - len(scheduled))

    # -- operations ------------------------------------------------------------------------------

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


def build_engine(settings: Settings, secrets: BaseSecretStore) -> CarbonEngine:
    """The engine configuration asks for: its provider and its cache."""
    provider = build_provider(settings, secrets)
    cache = ForecastCache(
        redis_url=settings.redis_url, ttl=settings.cache_ttl_seconds,
        stale_ttl=settings.cache_stale_ttl_seconds, lock_seconds=settings.upstream_lock_seconds,
        failure_backoff=settings.upstream_failure_backoff_seconds,
        key_prefix=settings.cache_key_prefix)
    return CarbonEngine(provider, cache,
                        budget=lambda: Budget(seconds=settings.solve_timeout_seconds))
