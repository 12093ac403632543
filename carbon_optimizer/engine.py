"""CarbonEngine: one request's flow. Its jobs' zones come from the data source (data/source.py decides
how: cache, fetch pool, deadline), are estimated past the forecast where a job reaches beyond it, then
planned; typed outcomes back. No HTTP here (web hands it Jobs and a "now"), no answer built (the planner)."""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import replace
from datetime import datetime
from typing import Callable, Optional, Sequence

from carbon_optimizer.data.cache import ForecastCache
from carbon_optimizer.data.cloud_regions import RegionTable, ResolvedLocations
from carbon_optimizer.data.fetch_pool import upstream_threads
from carbon_optimizer.data.providers.base import Provider
from carbon_optimizer.data.providers.factory import build_provider
from carbon_optimizer.data.source import ZoneForecast, data_source
from carbon_optimizer.errors import CarbonDataError
from carbon_optimizer.ops import memory, metrics
from carbon_optimizer.scheduling import cost as request_cost, planner
from carbon_optimizer.scheduling.budget import DEFAULT_MEMORY, Budget
from carbon_optimizer.scheduling.horizon import MAX_EXTENSION_SECONDS, extend_series, reaches_past_forecast
from carbon_optimizer.scheduling.model import CapacityLimits, Job, Outcome, Schedule, ZoneFailure, ZoneSeries
from carbon_optimizer.secret_store import BaseSecretStore
from carbon_optimizer.settings import Settings
from carbon_optimizer.timeseries import ForecastSeries, to_epoch


class CarbonEngine:
    def __init__(self, provider: Provider, cache: ForecastCache, history_cache: Optional[ForecastCache] = None,
                 budget: Callable[[], Budget] = Budget, fetch_pool: Optional[Executor] = None,
                 fetch_seconds: float = 5.0, monotonic: Callable[[], float] = time.monotonic,
                 regions: Optional[RegionTable] = None, zone_list_ttl: float = 21_600,
                 memory_pool: Optional[memory.MemoryPool] = None):
        self.regions = regions if regions is not None else RegionTable()
        self.source = data_source(provider, cache, history_cache, fetch_pool, fetch_seconds, monotonic,
                                  vouched=[r.zone for r in self.regions], zone_list_ttl=zone_list_ttl)
        self.provider, self.cache, self.history_cache = provider, cache, self.source.history_cache
        # Public seams (tests give a fake clock or a smaller pool): a fresh Budget (deadline and work
        # cap) per optimize call, and the worker's memory pool (one engine per app, one app per worker).
        self.new_budget = budget
        self.memory_pool = memory_pool or memory.MemoryPool(DEFAULT_MEMORY)

    # Thin delegations: the data source answers these (data/source.py).
    def zones(self) -> list[str]:
        return self.source.zones()

    def served_zones(self) -> Optional[frozenset[str]]:
        return self.source.served_zones()

    def close(self, wait: bool = True) -> None:
        self.source.close(wait)

    def health(self) -> dict:
        return self.source.health()

    def resolve_locations(self, asked: Sequence[str], suggested: int) -> ResolvedLocations:
        """The zones of the locations asked (zone keys, cloud regions such as aws:eu-west-1), against
        one reading of the provider's zone list; close matches for the first `suggested` unknown."""
        return self.regions.resolve_all(asked, self.served_zones(), suggested)

    def forecast(self, zone: str, now: datetime) -> ZoneSeries:
        """The zone's forecast, from the cache when the provider is remote. Raises CarbonDataError."""
        return _zone_series(self.source.forecast(zone, now))

    def zone_view(self, zone: str, now: datetime, until: Optional[int] = None,
                  with_history: bool = False) -> tuple[ZoneSeries, Optional[ForecastSeries]]:
        """What GET /forecast shows: one zone's forecast (extended to `until`, epoch seconds, when given)
        and its history when asked or needed to extend. Raises CarbonDataError."""
        got, history = self.source.zone_view(zone, now, until, with_history)
        found = _zone_series(got)
        return (found if until is None else _extended(found, until, history)), history

    def _zones(self, jobs: Sequence[Job], now: datetime, extend: bool) -> dict[str, ZoneSeries | ZoneFailure]:
        deadline = self.source.deadline()  # for all the request's carbon data
        wanted = list(dict.fromkeys(z for job in jobs for z in job.zones))
        found: dict[str, ZoneSeries | ZoneFailure] = {
            z: ZoneFailure(z, got.code, got.message) if isinstance(got, CarbonDataError) else _zone_series(got)
            for z, got in self.source.forecasts(wanted, now, deadline).items()}
        reach: dict[str, int] = {}  # one extension per zone, as far as the furthest job that needs it
        for job in (jobs if extend else ()):
            for z in job.zones:
                if isinstance(one := found[z], ZoneSeries) and reaches_past_forecast(job, one):
                    reach[z] = max(reach.get(z, 0), job.latest_end)
        histories = self.source.histories(list(reach), now, deadline)  # None when not here by then
        for z, until in reach.items():
            found[z] = _extended(found[z], until, histories[z])  # type: ignore[arg-type]
        return found

    def optimize(self, jobs: Sequence[Job], now: datetime,
                 capacity: Optional[CapacityLimits] = None,
                 cancelled: Optional[Callable[[], bool]] = None) -> list[Outcome]:
        """A Schedule or an Unschedulable per job, in order. With `capacity` the batch is placed
        jointly over the providers' forecasts; otherwise each job on its own. `cancelled` says
        when nobody waits for the answer any more: solving stops then, as at its deadline."""
        at = to_epoch(now)
        zones = self._zones(jobs, now, extend=capacity is None)
        # Refused (TooLarge) before any solving when over the work or memory cap; else its memory
        # is reserved from this worker's pool (Busy when others hold it for too long).
        cost = request_cost.estimate(jobs, zones, self.new_budget(), capacity)
        with self.memory_pool.reserve(cost.memory):
            budget = self.new_budget()  # solving time only, from here: fetching and waiting excluded
            budget.cancelled = cancelled
            outcomes = (planner.plan_batch(jobs, zones, capacity, at, budget, cost) if capacity is not None
                        else planner.plan_all(jobs, zones, at, budget, cost))
            if cost.memory > self.TRIM_ABOVE_BYTES:  # before the next request has the share
                memory.trim()
        self._count(outcomes)
        return outcomes

    # After a request estimated to hold more than this, freed memory is handed back at once.
    TRIM_ABOVE_BYTES = 8 * 2 ** 20

    @staticmethod
    def _count(outcomes: Sequence[Outcome]) -> None:
        scheduled = [o for o in outcomes if isinstance(o, Schedule)]
        avoided = sum(o.baseline_emissions_grams - o.emissions_grams for o in scheduled
                      if o.baseline_emissions_grams is not None and o.emissions_grams is not None)
        if avoided > 0:
            metrics.GRAMS_AVOIDED.inc(avoided)
        unschedulable = len(outcomes) - len(scheduled)
        for outcome, count in (("scheduled", len(scheduled)), ("unschedulable", unschedulable)):
            if count:
                metrics.labelled(metrics.WORKLOADS_SCHEDULED, outcome).inc(count)


def _zone_series(got: ZoneForecast) -> ZoneSeries:
    return ZoneSeries(forecast=got.series, stale=got.stale, fetched_at=got.fetched_at)


def _extended(zone: ZoneSeries, until: int, history: Optional[ForecastSeries]) -> ZoneSeries:
    """`zone` with estimates past its forecast up to `until` (epoch seconds; at most 14 days past the
    forecast) from its own forecast and recent `history`; longer only adds points."""
    if until <= zone.forecast.end_epoch:
        return zone
    until = min(until, zone.forecast.end_epoch + MAX_EXTENSION_SECONDS)
    extension = extend_series(zone.forecast, until, history)
    return replace(zone, extended=extension.series, estimate_error=extension.error,
                   error_replay=extension.replay)


def build_engine(settings: Settings, secrets: BaseSecretStore) -> CarbonEngine:
    """The engine configuration asks for: its provider, caches and fetch pool."""
    provider, pool = build_provider(settings, secrets), upstream_threads(settings)
    return CarbonEngine(provider, ForecastCache.for_forecasts(settings, pool.submit),
                        history_cache=ForecastCache.for_histories(settings, pool.submit),
                        budget=lambda: Budget(seconds=settings.solve_timeout_seconds),
                        fetch_pool=pool, fetch_seconds=settings.upstream_deadline_seconds,
                        regions=RegionTable(settings.cloud_region_overrides),
                        zone_list_ttl=settings.zone_list_ttl_seconds)
