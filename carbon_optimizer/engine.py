"""CarbonEngine: the carbon data a request needs (cache, then provider; estimates past the
forecast), handed to the planner; typed outcomes back.

The engine knows nothing of HTTP or Flask: the web layer hands it validated Jobs and a "now" and
serialises what it returns. It builds no answer itself; scheduling.planner does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import datetime
from typing import Callable, Mapping, Optional, Sequence, TypeVar


from carbon_optimizer.data.cache import CachedForecast, ForecastCache
from carbon_optimizer.data.cloud_regions import RegionTable
from carbon_optimizer.data.providers.base import Provider
from carbon_optimizer.data.providers.factory import build_provider
from carbon_optimizer.errors import CarbonDataError, FailureCode, UpstreamUnavailable
from carbon_optimizer.ops import memory, metrics
from carbon_optimizer.scheduling import cost as request_cost, planner
from carbon_optimizer.scheduling.budget import DEFAULT_MEMORY, Budget
from carbon_optimizer.scheduling.horizon import (
    MAX_EXTENSION_SECONDS, extend_series, reaches_past_forecast,
)
from carbon_optimizer.scheduling.model import (
    CapacityLimits, Job, Outcome, Schedule, ZoneFailure, ZoneSeries,
)
from carbon_optimizer.secret_store import BaseSecretStore
from carbon_optimizer.settings import Settings
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, rfc3339, to_epoch

log = logging.getLogger(__name__)

__all__ = ["CarbonEngine", "Job", "build_engine"]

T = TypeVar("T")


class CarbonEngine:
    """`fetch_pool` runs a remote provider's fetches (all of a request's zones at once); a request
    waits for them at most `fetch_seconds` in all. Without a pool, zones are fetched one after
    another on the request's thread (the local providers compute, so threads would not help)."""

    def __init__(self, provider: Provider, cache: ForecastCache,
                 history_cache: Optional[ForecastCache] = None,
                 budget: Callable[[], Budget] = Budget,
                 fetch_pool: Optional[Executor] = None, fetch_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 regions: Optional[RegionTable] = None, zone_list_ttl: float = 21_600,
                 memory_pool: Optional[memory.MemoryPool] = None):
        self.provider = provider
        # One pool per worker process (one engine per app, one app per worker).
        self._memory = memory_pool or memory.MemoryPool(DEFAULT_MEMORY)
        self.cache = cache
        self.regions = regions if regions is not None else RegionTable()
        self._zone_list_ttl = zone_list_ttl
        # History changes slowly and is fetched for days at a time: kept for hours, apart from forecasts.
        self.history_cache = history_cache if history_cache is not None else cache
        self._budget = budget  # a fresh Budget (deadline and work cap) per optimize call
        self._pool = fetch_pool if provider.shared_cache else None
        self._fetch_seconds = fetch_seconds
        self._monotonic = monotonic
        self._served_last: Optional[tuple[list[str], frozenset[str]]] = None
        # Zones known real without the provider's list: the region table's, and those the
        # provider has answered a forecast for (bounded by the provider's zones).
        self._vouched: set[str] = {region.zone for region in self.regions}
        self._unchecked_sent: deque[float] = deque()  # when this worker sent each unchecked zone
        self._unchecked_lock = threading.Lock()

    # -- locations -------------------------------------------------------------------------------

    def zones(self) -> list[str]:
        """The zones the provider serves (through the cache when it is remote). Raises
        CarbonDataError when the list cannot be had."""
        if not self.provider.shared_cache:
            return self.provider.zones()
        return self.cache.get_names("zones", self._zone_list_ttl, self.provider.zones)

    # How long a request waits for a remote provider's zone list (cached for hours, so this
    # matters only when it is cold and the provider slow) before letting zones pass unchecked.
    ZONE_LIST_WAIT_SECONDS = 1.0

    def served_zones(self) -> Optional[frozenset[str]]:
        """The zones to check requests against, or None when the provider's list cannot be had
        just now: then zone keys pass unchecked and the provider itself answers for each, so an
        outage of the list fails no request that would otherwise succeed."""
        if self.provider.shared_cache:
            held = self.cache.fresh_names("zones", self._zone_list_ttl)
            if held is not None:  # this worker's fresh copy: no fetch thread, no Redis
                return self._served(held)
        if self._pool is None:  # computed here (a local provider) or fetched here: nothing to wait for
            try:
                return self._served(self.zones())
            except CarbonDataError as exc:
                log.warning("no zone list from the provider; zones pass unchecked: %s", exc.message)
                return None
        wait = min(self.ZONE_LIST_WAIT_SECONDS, self._fetch_seconds)
        got = self._gather({"": self.zones}, self._monotonic() + wait)[""]
        if got is None:
            log.warning("the provider's zone list is not here within %.1f s; zones pass unchecked", wait)
            return None
        try:
            return self._served(got.result())
        except CarbonDataError as exc:
            log.warning("no zone list from the provider; zones pass unchecked: %s", exc.message)
            return None

    def _served(self, names: list[str]) -> frozenset[str]:
        """`names` as a set, made once per list the cache hands out (the same list object until
        it is refetched), not once per request."""
        last = self._served_last
        if last is not None and last[0] is names:
            return last[1]
        served = frozenset(names)
        self._served_last = (names, served)
        return served

    def locate(self, asked: str, served: Optional[frozenset[str]], suggest: bool = True) -> str:
        """The zone of one location asked (a zone key, or a cloud region such as aws:eu-west-1).
        Raises UnknownLocation, with close matches when `suggest`, when the service cannot serve it."""
        return self.regions.resolve(asked, served, suggest)

    # While the provider's zone list cannot be had, zone keys pass unchecked (an outage of the
    # list fails no request that would otherwise succeed), but each unknown one costs an upstream
    # call and a failure key in the cache: only a few a request and a worker a minute go upstream,
    # the rest fail at once (upstream_unavailable, as a zone the provider does not answer for).
    UNCHECKED_PER_REQUEST = 5
    UNCHECKED_PER_MINUTE = 30

    def _unchecked(self, zones: Sequence[str]) -> dict[str, ZoneFailure]:
        """Of `zones` (to be fetched from a remote provider), those that may not go upstream: not
        on the provider's last list, nor known otherwise, and over the caps. Each gets its failure."""
        served = self._served_last[1] if self._served_last is not None else frozenset()
        unknown = [z for z in zones if z not in served and z not in self._vouched]
        if not unknown:
            return {}
        sent = 0
        refused: dict[str, ZoneFailure] = {}
        with self._unchecked_lock:
            now = self._monotonic()
            while self._unchecked_sent and self._unchecked_sent[0] <= now - 60:
                self._unchecked_sent.popleft()
            for zone in unknown:
                if sent < self.UNCHECKED_PER_REQUEST and len(self._unchecked_sent) < self.UNCHECKED_PER_MINUTE:
                    self._unchecked_sent.append(now)
                    sent += 1
                    continue
                refused[zone] = ZoneFailure(
                    zone, FailureCode.UPSTREAM_UNAVAILABLE,
                    f"the carbon-data provider's zone list cannot be had just now, so zone {zone} "
                    f"is unchecked, and at most {self.UNCHECKED_PER_REQUEST} unchecked zones a "
                    f"request ({self.UNCHECKED_PER_MINUTE} a minute) are sent to the provider; "
                    "retry shortly")
        if refused:
            log.warning("zone list unknown: %d unchecked zones not sent upstream", len(refused))
        return refused

    def _answered(self, zone: str) -> None:
        """The provider answered a forecast for `zone`: it is real, list or no list."""
        if zone not in self._vouched:
            self._vouched.add(zone)

    # -- carbon data -----------------------------------------------------------------------------

    def forecast(self, zone: str, now: datetime) -> ZoneSeries:
        """The zone's forecast, from the cache when the provider is remote. Raises CarbonDataError."""
        if not self.provider.shared_cache:
            return ZoneSeries(forecast=self.provider.forecast(zone, now))
        return self._zone_series(self.cache.get("forecast", zone, lambda: self.provider.forecast(zone, now)))

    @staticmethod
    def _zone_series(cached: CachedForecast) -> ZoneSeries:
        return ZoneSeries(forecast=cached.series, stale=cached.stale,
                          fetched_at=int(cached.fetched_at) if cached.fetched_at else None)

    def _fresh(self, cache: ForecastCache, kind: str, zones: Sequence[str]) -> dict[str, CachedForecast]:
        """The zones whose `kind` this worker holds fresh in `cache` (a remote provider's): answered
        here, without handing them to a fetch thread and waiting for it."""
        if self._pool is None:
            return {}
        held = ((zone, cache.fresh(kind, zone)) for zone in zones)
        return {zone: cached for zone, cached in held if cached is not None}

    def _fresh_forecasts(self, zones: Sequence[str]) -> dict[str, ZoneSeries]:
        return {z: self._zone_series(c) for z, c in self._fresh(self.cache, "forecast", zones).items()}

    def extended(self, zone: ZoneSeries, until: int, now: datetime,
                 history: Optional[ForecastSeries] = None) -> ZoneSeries:
        """`zone` with estimates past its forecast up to `until` (epoch seconds; at most 14 days
        past the forecast), refined by the zone's recent `history` when there is one. The
        estimates do not depend on `until`: longer only adds points. Every zone is estimated from
        its own data only (its history and forecast); no built-in table."""
        series = zone.forecast
        if until <= series.end_epoch:
            return zone
        until = min(until, series.end_epoch + MAX_EXTENSION_SECONDS)
        extension = extend_series(series, until, history)
        return replace(zone, extended=extension.series, estimate_error=extension.error)

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
            return self.history_cache.get("history", zone, fetch).series
        except Exception as exc:  # history only refines the estimate; its absence fails no request
            log.info("no history for zone %s: %s", zone, exc)
            return None

    def _fresh_histories(self, zones: Sequence[str]) -> dict[str, ForecastSeries]:
        return {z: c.series for z, c in self._fresh(self.history_cache, "history", zones).items()}

    def _gather(self, calls: Mapping[str, Callable[[], T]],
                deadline: float) -> dict[str, "Future[T] | None"]:
        """Run `calls` (by zone) on the fetch pool, all at once, and wait for them until
        `deadline` (monotonic). A zone's future is None when it was not done by then; a call not
        yet started is cancelled, so a slow provider does not pile up work for requests that have
        given up. Without a pool the calls run here, one after another."""
        if not calls:
            return {}
        futures: dict[str, Future[T]] = {}
        for zone, call in calls.items():
            if self._pool is None:
                futures[zone] = future = Future()
                try:
                    future.set_result(call())
                except Exception as exc:  # noqa: BLE001  (re-raised by .result(), as from a pool)
                    future.set_exception(exc)
            else:
                futures[zone] = self._pool.submit(call)
        if self._pool is not None and futures:
            wait(futures.values(), timeout=max(0.0, deadline - self._monotonic()))
        done: dict[str, Future[T] | None] = {}
        for zone, future in futures.items():
            if future.done():
                done[zone] = future
            else:
                future.cancel()
                done[zone] = None
        return done

    def zone_view(self, zone: str, now: datetime, until: Optional[int] = None,
                  with_history: bool = False) -> tuple[ZoneSeries, Optional[ForecastSeries]]:
        """One zone's forecast (extended to `until`, epoch seconds, when given) and, when asked or
        needed for the extension, its recent history: what GET /forecast shows. Under the same
        deadline as a request's data. Raises CarbonDataError."""
        deadline = self._monotonic() + self._fetch_seconds
        found = self._fresh_forecasts([zone]).get(zone)
        if found is None and self.provider.shared_cache:
            refused = self._unchecked([zone]).get(zone)
            if refused is not None:
                raise UpstreamUnavailable(zone, refused.message)
        if found is None:
            got = self._gather({zone: lambda: self.forecast(zone, now)}, deadline)[zone]
            if got is None:
                raise UpstreamUnavailable(
                    zone, f"the carbon-data provider did not answer for zone {zone} within the "
                          f"request's {self._fetch_seconds:g} s deadline; retry shortly")
            found = got.result()
            self._answered(zone)
        history = None
        if with_history or (until is not None and until > found.forecast.end_epoch):
            history = self._fresh_histories([zone]).get(zone)
            if history is None:
                past = self._gather({zone: lambda: self.history(zone, now)}, deadline)[zone]
                history = past.result() if past is not None else None
        if until is not None:
            found = self.extended(found, until, now, history)
        return found, history

    def _zones(self, jobs: Sequence[Job], now: datetime,
               extend: bool) -> dict[str, ZoneSeries | ZoneFailure]:
        deadline = self._monotonic() + self._fetch_seconds  # for all the request's carbon data
        wanted = dict.fromkeys(z for job in jobs for z in job.zones)
        found: dict[str, ZoneSeries | ZoneFailure] = {}
        ready = self._fresh_forecasts(list(wanted))
        refused = self._unchecked([z for z in wanted if z not in ready]) if self.provider.shared_cache else {}
        fetched = self._gather({z: (lambda z=z: self.forecast(z, now)) for z in wanted
                                if z not in ready and z not in refused}, deadline)
        for zone in wanted:
            if zone in ready:
                found[zone] = ready[zone]
                continue
            if zone in refused:
                found[zone] = refused[zone]
                continue
            future = fetched[zone]
            if future is None:
                log.warning("no carbon data for zone %s within %.1f s", zone, self._fetch_seconds)
                found[zone] = ZoneFailure(
                    zone, FailureCode.UPSTREAM_UNAVAILABLE,
                    f"the carbon-data provider did not answer for zone {zone} within the request's "
                    f"{self._fetch_seconds:g} s deadline; retry shortly")
                continue
            try:
                found[zone] = future.result()
                self._answered(zone)
            except CarbonDataError as exc:
                log.warning("no carbon data for zone %s: %s", zone, exc.message)
                found[zone] = ZoneFailure(zone, exc.code, exc.message)
        if extend:  # one extension per zone, as far as the furthest job that needs it
            reach: dict[str, int] = {}
            for job in jobs:
                for z in job.zones:
                    one = found[z]
                    if isinstance(one, ZoneSeries) and reaches_past_forecast(job, one):
                        reach[z] = max(reach.get(z, 0), job.latest_end)
            # History only refines the estimates: one not there by the deadline is done without.
            held = self._fresh_histories(list(reach))
            histories = self._gather({z: (lambda z=z: self.history(z, now)) for z in reach if z not in held},
                                     deadline)
            for z, until in reach.items():
                if z in held:
                    history = held[z]
                else:
                    history = histories[z].result() if histories[z] is not None else None  # type: ignore[union-attr]
                found[z] = self.extended(found[z], until, now, history)  # type: ignore[arg-type]
        return found

    # -- scheduling ------------------------------------------------------------------------------

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
        cost = request_cost.estimate(jobs, zones, self._budget(), capacity)
        with self._memory.reserve(cost.memory):
            budget = self._budget()  # solving time only, from here: fetching and waiting excluded
            budget.cancelled = cancelled
            if capacity is not None:
                outcomes = planner.plan_batch(jobs, zones, capacity, at, budget, cost)
            else:
                outcomes = planner.plan_all(jobs, zones, at, budget, cost)
            if cost.memory > self.TRIM_ABOVE_BYTES:  # before the next request has the share
                memory.trim()
        self._count(outcomes)
        return outcomes

    # After a request estimated to hold more than this, freed memory is handed back at once.
    TRIM_ABOVE_BYTES = 8 * 2 ** 20

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
            metrics.labelled(metrics.WORKLOADS_SCHEDULED, "scheduled").inc(len(scheduled))
        if len(outcomes) > len(scheduled):
            metrics.labelled(metrics.WORKLOADS_SCHEDULED, "unschedulable").inc(len(outcomes) - len(scheduled))

    # -- operations ------------------------------------------------------------------------------

    def close(self, wait: bool = True) -> None:
        """Stop the fetch pool: queued fetches are dropped, running ones finish (each within its
        call budget) when `wait`."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)

    def health(self) -> dict:
        """Dependency checks for /health; never calls the provider."""
        redis_status, last_success, last_failure = self.cache.health()
        if not self.provider.shared_cache:
            provider_status = "ok"
        elif last_failure is not None and (last_success is None or last_failure > last_success):
            provider_status = "failing"
        else:
            provider_status = "ok"
        return {
            "redis": redis_status,
            "provider": {"status": provider_status, "name": self.provider.name,
                         "last_failure": rfc3339(from_epoch(last_failure)) if last_failure else None},
            "last_successful_fetch": {
                "status": "ok" if last_success or not self.provider.shared_cache else "none_yet",
                "at": rfc3339(from_epoch(last_success)) if last_success else None},
        }


def build_engine(settings: Settings, secrets: BaseSecretStore) -> CarbonEngine:
    """The engine configuration asks for: its provider and its cache."""
    provider = build_provider(settings, secrets)
    # Threads that wait on the provider's sockets: a request's zones are fetched at once, and
    # expired zones refreshed in the background. Started lazily, so in each Gunicorn worker.
    pool = ThreadPoolExecutor(max_workers=settings.upstream_concurrency,
                              thread_name_prefix="carbon-upstream")
    cache = ForecastCache(
        redis_url=settings.redis_url, ttl=settings.cache_ttl_seconds,
        stale_ttl=settings.cache_stale_ttl_seconds, lock_seconds=settings.upstream_lock_seconds,
        failure_backoff=settings.upstream_failure_backoff_seconds,
        key_prefix=settings.cache_key_prefix, background=pool.submit)
    history_cache = ForecastCache(
        redis_url=settings.redis_url, ttl=settings.history_ttl_seconds,
        stale_ttl=max(settings.history_ttl_seconds, settings.cache_stale_ttl_seconds),
        lock_seconds=settings.upstream_lock_seconds,
        failure_backoff=settings.upstream_failure_backoff_seconds,
        key_prefix=settings.cache_key_prefix, background=pool.submit)
    return CarbonEngine(provider, cache, history_cache=history_cache,
                        budget=lambda: Budget(seconds=settings.solve_timeout_seconds),
                        fetch_pool=pool, fetch_seconds=settings.upstream_deadline_seconds,
                        regions=RegionTable(settings.cloud_region_overrides),
                        zone_list_ttl=settings.zone_list_ttl_seconds)
