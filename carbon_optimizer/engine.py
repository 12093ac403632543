"""CarbonEngine: one request's flow. Its jobs' zones come from the feed of the signal asked for (data/feeds.py:
one per configured provider and signal; data/source.py decides how: cache, fetch pool, deadline), are
estimated past the forecast where a job reaches beyond it, then planned; typed outcomes back. No HTTP here
(web hands it Jobs and a "now"), no answer built (the planner)."""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import replace
from datetime import datetime
from typing import Callable, Optional, Sequence

from carbon_optimizer.data.cache import ForecastCache
from carbon_optimizer.data.cloud_regions import RegionTable, ResolvedLocations
from carbon_optimizer.data.feeds import Feed, Feeds
from carbon_optimizer.data.fetch_pool import upstream_threads
from carbon_optimizer.data.providers.base import Provider
from carbon_optimizer.data.providers.factory import build_providers, uses_table_zones
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
                 memory_pool: Optional[memory.MemoryPool] = None,
                 more: Sequence[tuple[Provider, ForecastCache, Optional[ForecastCache]]] = ()):
        """`provider` serves the default signal; `more` are the other configured providers (each
        with its own caches, so that their keys and health never mix)."""
        self.regions = regions if regions is not None else RegionTable()
        feeds = []
        for one, forecasts, histories in ((provider, cache, history_cache), *more):
            table = uses_table_zones(one)
            feeds.append(Feed(data_source(one, forecasts, histories, fetch_pool, fetch_seconds, monotonic,
                                          vouched=[r.zone for r in self.regions] if table else (),
                                          zone_list_ttl=zone_list_ttl), table_zones=table))
        self.feeds = Feeds(feeds)
        self.source = self.feeds.default.source
        self.provider, self.cache, self.history_cache = provider, cache, self.source.history_cache
        # Public seams (tests give a fake clock or a smaller pool): a fresh Budget (deadline and work
        # cap) per optimize call, and the worker's memory pool (one engine per app, one app per worker).
        self.new_budget = budget
        self.memory_pool = memory_pool or memory.MemoryPool(DEFAULT_MEMORY)

    # Thin delegations: the signal's feed and its data source answer these (data/feeds.py, data/source.py).
    # Each raises SignalNotServed for a signal no configured provider serves.
    def zones(self, signal: Optional[str] = None) -> list[str]:
        return self.feeds.get(signal).source.zones()

    def served_zones(self, signal: Optional[str] = None) -> Optional[frozenset[str]]:
        return self.feeds.get(signal).source.served_zones()

    def close(self, wait: bool = True) -> None:
        for feed in self.feeds:
            feed.source.close(wait)

    def health(self) -> dict:
        """The default feed's checks, and one `provider` check per other feed (providers.<name>.<signal>)."""
        checks = self.source.health()
        for feed in list(self.feeds)[1:]:
            checks[f"provider:{feed.provider}.{feed.signal}"] = feed.source.health()["provider"]
        return checks

    def resolve_locations(self, asked: Sequence[str], suggested: int,
                          signal: Optional[str] = None) -> ResolvedLocations:
        """The zones of the locations asked (zone keys, cloud regions such as aws:eu-west-1, names
        the signal's provider knows) in the feed of `signal` (Feeds.resolve)."""
        return self.feeds.resolve(asked, suggested, signal, self.regions)

    def forecast(self, zone: str, now: datetime, signal: Optional[str] = None) -> ZoneSeries:
        """The zone's forecast, from the cache when the provider is remote. Raises CarbonDataError."""
        feed = self.feeds.get(signal)
        return _zone_series(feed.source.forecast(zone, now), feed)

    def forecasts(self, zones: Sequence[str], now: datetime,
                  signal: Optional[str] = None) -> dict[str, ZoneSeries | CarbonDataError]:
        """Many zones' forecasts under one deadline (fetched at once), each or its failure."""
        feed = self.feeds.get(signal)
        found = feed.source.forecasts(list(dict.fromkeys(zones)), now, feed.source.deadline())
        return {z: got if isinstance(got, CarbonDataError) else _zone_series(got, feed)
                for z, got in found.items()}

    def histories(self, zones: Sequence[str], now: datetime,
                  signal: Optional[str] = None) -> dict[str, Optional[ForecastSeries]]:
        """Many zones' recent measured history as of `now` under one deadline (None: not had)."""
        source = self.feeds.get(signal).source
        return source.histories(list(dict.fromkeys(zones)), now, source.deadline())

    def zone_view(self, zone: str, now: datetime, until: Optional[int] = None,
                  with_history: bool = False, signal: Optional[str] = None
                  ) -> tuple[ZoneSeries, Optional[ForecastSeries]]:
        """What GET /forecast shows: one zone's forecast (extended to `until`, epoch seconds, when given)
        and its history when asked or needed to extend. Raises CarbonDataError."""
        feed = self.feeds.get(signal)
        got, history = feed.source.zone_view(zone, now, until, with_history)
        found = _zone_series(got, feed)
        return (found if until is None else _extended(found, until, history)), history

    def _zones(self, jobs: Sequence[Job], now: datetime, extend: bool,
               feed: Feed) -> dict[str, ZoneSeries | ZoneFailure]:
        source = feed.source
        deadline = source.deadline()  # for all the request's carbon data
        wanted = list(dict.fromkeys(z for job in jobs for z in job.zones))
        found: dict[str, ZoneSeries | ZoneFailure] = {
            z: ZoneFailure(z, got.code, got.message) if isinstance(got, CarbonDataError) else _zone_series(got, feed)
            for z, got in source.forecasts(wanted, now, deadline).items()}
        reach: dict[str, int] = {}  # one extension per zone, as far as the furthest job that needs it
        for job in (jobs if extend else ()):
            for z in job.zones:
                if isinstance(one := found[z], ZoneSeries) and reaches_past_forecast(job, one):
                    reach[z] = max(reach.get(z, 0), job.latest_end)
        histories = source.histories(list(reach), now, deadline)  # None when not here by then
        for z, until in reach.items():
            found[z] = _extended(found[z], until, histories[z])  # type: ignore[arg-type]
        return found

    def optimize(self, jobs: Sequence[Job], now: datetime,
                 capacity: Optional[CapacityLimits] = None,
                 cancelled: Optional[Callable[[], bool]] = None,
                 signal: Optional[str] = None) -> list[Outcome]:
        """A Schedule or an Unschedulable per job, in order, on the feed of `signal` (None: the
        default). With `capacity` the batch is placed jointly over the providers' forecasts;
        otherwise each job on its own. `cancelled` says when nobody waits for the answer any more:
        solving stops then, as at its deadline."""
        at = to_epoch(now)
        zones = self._zones(jobs, now, capacity is None, self.feeds.get(signal))
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


def _zone_series(got: ZoneForecast, feed: Feed) -> ZoneSeries:
    return ZoneSeries(forecast=got.series, stale=got.stale, fetched_at=got.fetched_at,
                      signal=feed.signal, units=feed.units, attribution=feed.attribution)



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
    providers, pool = build_providers(settings, secrets), upstream_threads(settings)
    first, *others = providers
    more = [(one, ForecastCache.for_forecasts(settings, pool.submit, _namespace(one)),
             ForecastCache.for_histories(settings, pool.submit, _namespace(one))) for one in others]
    return CarbonEngine(first, ForecastCache.for_forecasts(settings, pool.submit),
                        history_cache=ForecastCache.for_histories(settings, pool.submit), more=more,
                        budget=lambda: Budget(seconds=settings.solve_timeout_seconds),
                        fetch_pool=pool, fetch_seconds=settings.upstream_deadline_seconds,
                        regions=RegionTable(settings.cloud_region_overrides),
                        zone_list_ttl=settings.zone_list_ttl_seconds)


def _namespace(provider: Provider) -> str:
    """The cache-key namespace of a provider other than the default: its own keys, locks and health."""
    return f"{provider.name}.{provider.signal}:"
