"""A provider's carbon data as the engine asks for it: a zone's forecast and recent history, the
zones the provider serves, many zones at once under one request's deadline, and the health of the
path there.

One source per provider, whatever the provider is. A local one (demo, data-portal files, replay)
computes its answers: `CarbonDataSource` asks it directly, on the request's thread, and caches
nothing. A remote one (Electricity Maps) is asked through the cache, one upstream call per zone per
TTL across workers and replicas, on the fetch pool: `CachedDataSource`. `data_source()` picks the
one a provider needs, so a new provider plugs in as a `Provider` and nothing above changes.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, Optional, Sequence

from carbon_optimizer.data.cache import CachedForecast, ForecastCache
from carbon_optimizer.data.fetch_pool import FetchPool
from carbon_optimizer.data.providers.base import HasHistory, HasZoneList, Provider
from carbon_optimizer.data.unchecked_zones import UncheckedZones
from carbon_optimizer.errors import CarbonDataError, UpstreamUnavailable
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, rfc3339

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZoneForecast:
    """A zone's forecast as the source had it: `stale` when a cached copy past its TTL stands in
    while it is refreshed, `fetched_at` the epoch second of the upstream fetch (cached copies only)."""
    series: ForecastSeries
    stale: bool = False
    fetched_at: Optional[int] = None


class CarbonDataSource:
    """A local provider's data, asked for directly: computing it is cheap, so nothing is cached
    or handed to threads. The base of every source: `forecasts` and `histories` take many zones
    under one deadline whatever the provider; the hooks below say what a cache adds."""

    # Whether the provider is asked over the network (its failures are then /health's business).
    remote = False

    # How long a request waits for a remote provider's zone list (cached for hours, so this
    # matters only when it is cold and the provider slow) before letting zones pass unchecked.
    ZONE_LIST_WAIT_SECONDS = 1.0

    def __init__(self, provider: Provider, cache: ForecastCache,
                 history_cache: Optional[ForecastCache] = None, fetch_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self.provider = provider
        # What the provider can do beyond forecasts, checked once: nothing it lacks is called.
        self.has_history = isinstance(provider, HasHistory)
        self.has_zone_list = isinstance(provider, HasZoneList)
        self.cache = cache  # a local provider's data is not kept there; /health reads Redis's state
        # History changes slowly and is fetched for days at a time: kept for hours, apart from forecasts.
        self.history_cache = history_cache if history_cache is not None else cache
        self.fetch_seconds = fetch_seconds
        self._monotonic = monotonic
        self._pool = FetchPool(None, monotonic)
        self._served_last: Optional[tuple[list[str], frozenset[str]]] = None

    def deadline(self) -> float:
        """When a request's carbon data must be here (monotonic), counted from now: one deadline
        for all of it, forecasts and histories."""
        return self._monotonic() + self.fetch_seconds

    # -- the provider's zones --------------------------------------------------------------------

    def zones(self) -> list[str]:
        """The zones the provider serves. Raises CarbonDataError when the list cannot be had
        (or the provider keeps none: then every zone key is passed to it unchecked)."""
        if not self.has_zone_list:
            raise UpstreamUnavailable("", f"the provider {self.provider.name} lists no zones")
        return self.provider.zones()  # type: ignore[attr-defined]

    def served_zones(self) -> Optional[frozenset[str]]:
        """The zones to check requests against, or None when the provider's list cannot be had
        just now: then zone keys pass unchecked and the provider itself answers for each, so an
        outage of the list fails no request that would otherwise succeed."""
        if not self.has_zone_list:
            return None
        held = self._held_zone_list()
        if held is not None:  # this worker's fresh copy: no fetch thread, no Redis
            return self._served(held)
        wait = min(self.ZONE_LIST_WAIT_SECONDS, self.fetch_seconds)
        got = self._pool.gather({"": self.zones}, self._monotonic() + wait)[""]
        if got is None:
            log.warning("the provider's zone list is not here within %.1f s; zones pass unchecked", wait)
            return None
        try:
            return self._served(got.result())
        except CarbonDataError as exc:
            log.warning("no zone list from the provider; zones pass unchecked: %s", exc.message)
            return None

    def held_zones(self) -> Optional[frozenset[str]]:
        """The zones served as this worker holds them now, without asking a remote provider (None
        when not held, or the provider keeps no list)."""
        if not self.has_zone_list:
            return None
        if not self.remote:
            return self._served(self.zones())
        held = self._held_zone_list()
        return None if held is None else self._served(held)

    def _served(self, names: list[str]) -> frozenset[str]:
        """`names` as a set, made once per list the cache hands out (the same list object until
        it is refetched), not once per request."""
        last = self._served_last
        if last is not None and last[0] is names:
            return last[1]
        served = frozenset(names)
        self._served_last = (names, served)
        return served

    def ask_all(self, calls: dict[str, Callable[[], str]], wait: float) -> dict[str, str | CarbonDataError]:
        """Provider lookups (locating cloud regions, naming zones) all at once on the fetch pool,
        waited for at most `wait` seconds in all: however many a request names, its locations
        cost one wait. A call not done by then answers UpstreamUnavailable (and is cancelled if
        not started)."""
        wait = min(wait, self.fetch_seconds)
        found: dict[str, str | CarbonDataError] = {}
        for key, future in self._pool.gather(calls, self._monotonic() + wait).items():
            if future is None:
                found[key] = UpstreamUnavailable("", f"the provider {self.provider.name} did not "
                                                     f"answer for {key} within {wait:g} s")
                continue
            try:
                found[key] = future.result()
            except CarbonDataError as exc:
                found[key] = exc
        return found

    # -- forecasts and histories -----------------------------------------------------------------

    def forecast(self, zone: str, now: datetime) -> ZoneForecast:
        """The zone's forecast as known at `now`. Raises CarbonDataError."""
        return ZoneForecast(self.provider.forecast(zone, now))

    def forecasts(self, zones: Sequence[str], now: datetime,
                  deadline: float) -> dict[str, ZoneForecast | CarbonDataError]:
        """Each zone's forecast, or the failure that stands for it, in the order asked: those
        held fresh at once, the others fetched all at once and waited for until `deadline`
        (monotonic). An error that is no carbon-data failure raises."""
        found: dict[str, ZoneForecast | CarbonDataError] = dict(self._held_forecasts(zones))
        found.update(self._refused([z for z in zones if z not in found]))
        fetched = self._pool.gather({z: (lambda z=z: self.forecast(z, now)) for z in zones
                                     if z not in found}, deadline)
        for zone, future in fetched.items():
            found[zone] = self._outcome(zone, future)
        return {zone: found[zone] for zone in zones}

    def _outcome(self, zone: str, future: Optional[Future[ZoneForecast]]) -> ZoneForecast | CarbonDataError:
        if future is None:
            log.warning("no carbon data for zone %s within %.1f s", zone, self.fetch_seconds)
            return UpstreamUnavailable(
                zone, f"the carbon-data provider did not answer for zone {zone} within the "
                      f"request's {self.fetch_seconds:g} s deadline; retry shortly")
        try:
            found = future.result()
        except CarbonDataError as exc:
            log.warning("no carbon data for zone %s: %s", zone, exc.message)
            return exc
        self._answered(zone)
        return found

    def zone_view(self, zone: str, now: datetime, until: Optional[int] = None,
                  with_history: bool = False) -> tuple[ZoneForecast, Optional[ForecastSeries]]:
        """One zone's forecast and, when asked or when `until` (epoch seconds) lies past the
        forecast, its recent history: both under one request's deadline. Raises CarbonDataError."""
        deadline = self.deadline()
        found = self.forecasts([zone], now, deadline)[zone]
        if isinstance(found, CarbonDataError):
            raise found
        if with_history or (until is not None and until > found.series.end_epoch):
            return found, self.histories([zone], now, deadline)[zone]
        return found, None

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        """Recent measurements; None when there are none or they cannot be had. They refine
        estimates past a forecast, and GET /forecast?history=true shows them."""
        try:
            return self._history(zone, now)
        except Exception as exc:  # history only refines the estimate; its absence fails no request
            log.info("no history for zone %s: %s", zone, exc)
            return None

    def histories(self, zones: Sequence[str], now: datetime,
                  deadline: float) -> dict[str, Optional[ForecastSeries]]:
        """Each zone's recent history; None for one not here by `deadline` (monotonic): history
        only refines the estimates, so they are made without it."""
        found: dict[str, Optional[ForecastSeries]] = dict(self._held_histories(zones))
        fetched = self._pool.gather({z: (lambda z=z: self.history(z, now)) for z in zones
                                     if z not in found}, deadline)
        for zone, future in fetched.items():
            found[zone] = future.result() if future is not None else None
        return found

    # -- what a cache adds (nothing, for a local provider) ---------------------------------------

    def _history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        return self.provider.history(zone, now) if self.has_history else None  # type: ignore[attr-defined]

    def _held_zone_list(self) -> Optional[list[str]]:
        return None

    def _held_forecasts(self, zones: Sequence[str]) -> dict[str, ZoneForecast]:
        return {}

    def _held_histories(self, zones: Sequence[str]) -> dict[str, ForecastSeries]:
        return {}

    def _refused(self, zones: Sequence[str]) -> dict[str, CarbonDataError]:
        return {}

    def _answered(self, zone: str) -> None:
        pass

    # -- operations ------------------------------------------------------------------------------

    def health(self) -> dict:
        """Dependency checks for /health; never calls the provider."""
        redis_status, last_success, last_failure = self.cache.health()
        failing = self.remote and last_failure is not None and (
            last_success is None or last_failure > last_success)
        return {
            "redis": redis_status,
            "provider": {"status": "failing" if failing else "ok", "name": self.provider.name,
                         "last_failure": rfc3339(from_epoch(last_failure)) if last_failure else None},
            "last_successful_fetch": {
                "status": "ok" if last_success or not self.remote else "none_yet",
                "at": rfc3339(from_epoch(last_success)) if last_success else None},
        }

    def close(self, wait: bool = True) -> None:
        """Stop the fetch pool: queued fetches are dropped, running ones finish (each within its
        call budget) when `wait`."""
        self._pool.close(wait)


class CachedDataSource(CarbonDataSource):
    """A remote provider's data: through the cache (forecasts and the zone list shared by every
    worker and replica; histories in their own, longer-lived cache), fetched on `fetch_pool` all
    at once, a request waiting at most `fetch_seconds` in all. What this worker holds fresh is
    answered on the request's thread. Zone keys the provider has not listed reach it only a few
    at a time while its list cannot be had (unchecked_zones.py)."""

    remote = True

    def __init__(self, provider: Provider, cache: ForecastCache,
                 history_cache: Optional[ForecastCache] = None,
                 fetch_pool: Optional[Executor] = None, fetch_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 vouched: Iterable[str] = (), zone_list_ttl: float = 21_600):
        super().__init__(provider, cache, history_cache, fetch_seconds, monotonic)
        self._pool = FetchPool(fetch_pool, monotonic)
        self._zone_list_ttl = zone_list_ttl
        self._unchecked = UncheckedZones(vouched, monotonic)

    def zones(self) -> list[str]:
        if not self.has_zone_list:
            return super().zones()
        return self.cache.get_names("zones", self._zone_list_ttl, self.provider.zones)  # type: ignore[attr-defined]

    def forecast(self, zone: str, now: datetime) -> ZoneForecast:
        return _zone_forecast(self.cache.get("forecast", zone, lambda: self.provider.forecast(zone, now)))

    def _history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        if not self.has_history:
            return None

        def fetch() -> ForecastSeries:
            found = self.provider.history(zone, now)  # type: ignore[attr-defined]
            if found is None:
                raise LookupError("no history")
            return found
        return self.history_cache.get("history", zone, fetch).series

    def _held_zone_list(self) -> Optional[list[str]]:
        return self.cache.fresh_names("zones", self._zone_list_ttl)

    def _held_forecasts(self, zones: Sequence[str]) -> dict[str, ZoneForecast]:
        return {z: _zone_forecast(c) for z, c in self._fresh(self.cache, "forecast", zones).items()}

    def _held_histories(self, zones: Sequence[str]) -> dict[str, ForecastSeries]:
        return {z: c.series for z, c in self._fresh(self.history_cache, "history", zones).items()}

    def _fresh(self, cache: ForecastCache, kind: str, zones: Sequence[str]) -> dict[str, CachedForecast]:
        """The zones whose `kind` this worker holds fresh in `cache`: answered here, without
        handing them to a fetch thread and waiting for it."""
        if not self._pool.parallel:
            return {}
        held = ((zone, cache.fresh(kind, zone)) for zone in zones)
        return {zone: cached for zone, cached in held if cached is not None}

    def _refused(self, zones: Sequence[str]) -> dict[str, CarbonDataError]:
        served = self._served_last[1] if self._served_last is not None else frozenset()
        return dict(self._unchecked.refused(zones, served))

    def _answered(self, zone: str) -> None:
        self._unchecked.answered(zone)


def _zone_forecast(cached: CachedForecast) -> ZoneForecast:
    return ZoneForecast(cached.series, stale=cached.stale,
                        fetched_at=int(cached.fetched_at) if cached.fetched_at else None)


def data_source(provider: Provider, cache: ForecastCache,
                history_cache: Optional[ForecastCache] = None,
                fetch_pool: Optional[Executor] = None, fetch_seconds: float = 5.0,
                monotonic: Callable[[], float] = time.monotonic,
                vouched: Iterable[str] = (), zone_list_ttl: float = 21_600) -> CarbonDataSource:
    """The source `provider` needs: through the cache and `fetch_pool` when it is remote (its
    `shared_cache`), else asked directly (no pool, no cached copies). `vouched` are zones known
    real without the provider's list (the region table's)."""
    if provider.shared_cache:
        return CachedDataSource(provider, cache, history_cache, fetch_pool, fetch_seconds,
                                monotonic, vouched, zone_list_ttl)
    return CarbonDataSource(provider, cache, history_cache, fetch_seconds, monotonic)
