"""A remote provider's forecasts and zone list that a worker holds fresh are answered on the
request's own thread, without the fetch pool; past their TTL the usual path (the pool, Redis,
stale-while-refreshing) decides again, so the cache's freshness contract is unchanged."""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import numpy as np

from carbon_optimizer.data.cache import ForecastCache
from carbon_optimizer.engine import CarbonEngine
from carbon_optimizer.ops import metrics
from carbon_optimizer.scheduling.model import Job
from carbon_optimizer.timeseries import ForecastSeries, to_epoch
from tests.support import TEST_REDIS_URL

NOW = datetime(2026, 11, 23, 10, 17, 43, tzinfo=timezone.utc)  # off the hour on purpose
TTL = 300


class Clock:
    def __init__(self):
        self.now = to_epoch(NOW) + 0.25
        self.mono = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds
        self.mono += seconds


class RecordingPool(ThreadPoolExecutor):
    """The engine's fetch pool, counting what is handed to it."""

    def __init__(self):
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return super().submit(*args, **kwargs)


class RemoteProvider:
    """Stands in for Electricity Maps: a shared-cache provider whose answers the test changes."""
    name = "electricitymaps"
    signal = "average"
    units = "gCO2eq/kWh"
    shared_cache = True

    def __init__(self):
        self.level = {"DE": 300.0, "FR": 50.0}
        self.zone_list = ["DE", "FR"]
        self.calls = {"forecast": 0, "zones": 0, "history": 0}

    def forecast(self, zone, now):
        self.calls["forecast"] += 1
        start = now.replace(minute=0, second=0, microsecond=0)
        # 24 hourly points with one clear low at start + 7 h (level - 200).
        values = np.full(24, self.level[zone])
        values[7] -= 200
        return ForecastSeries(zone=zone, start=start, step_seconds=3600, values=values,
                              provider=self.name, updated_at=start)

    def history(self, zone, now):
        self.calls["history"] += 1
        return None

    def zones(self):
        self.calls["zones"] += 1
        return list(self.zone_list)


def engine_for(prefix, clock):
    pool = RecordingPool()
    cache = ForecastCache(redis_url=TEST_REDIS_URL, ttl=TTL, stale_ttl=3600, lock_seconds=5,
                          failure_backoff=30, key_prefix=prefix, clock=clock,
                          monotonic=lambda: clock.mono, background=pool.submit)
    provider = RemoteProvider()
    engine = CarbonEngine(provider, cache, fetch_pool=pool, zone_list_ttl=TTL)
    return engine, provider, pool


def job(zone="DE"):
    at = to_epoch(NOW)
    return Job(duration=3600 + 17 * 60, zones=(zone,), earliest_start=at, latest_start=at + 12 * 3600)


def counted(metric, **labels):
    """The metric's current total for these labels, read from what it exports."""
    return sum(sample.value for family in metric.collect() for sample in family.samples
               if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items()))


def test_a_fresh_forecast_is_answered_without_the_pool_and_an_expired_one_goes_back_to_it(redis_prefix):
    clock = Clock()
    engine, provider, pool = engine_for(redis_prefix, clock)
    try:
        first = engine.optimize([job()], NOW)[0]
        assert provider.calls["forecast"] == 1 and pool.submitted == 1
        low_hour = to_epoch(NOW.replace(minute=0, second=0) + timedelta(hours=7))
        # The best 77-minute windows are those covering the whole low hour (any other covers less
        # of it), so the chosen one starts within 17 minutes before it.
        assert low_hour - 17 * 60 <= first.start <= low_hour

        hits = counted(metrics.CACHE_EVENTS, result="hit", backend="process")
        scheduled = counted(metrics.WORKLOADS_SCHEDULED, outcome="scheduled")
        clock.advance(TTL - 1)  # still fresh: the same answer, no thread, no provider call
        again = engine.optimize([job()], NOW)[0]
        assert pool.submitted == 1 and provider.calls["forecast"] == 1
        # ...and still counted as a hit on the worker's own copy, and as a workload scheduled.
        assert counted(metrics.CACHE_EVENTS, result="hit", backend="process") == hits + 1
        assert counted(metrics.WORKLOADS_SCHEDULED, outcome="scheduled") == scheduled + 1
        assert again.start == first.start and again.emissions_grams == first.emissions_grams

        # Past the TTL: the copy is served flagged stale while the pool refreshes it.
        provider.level["DE"] = 600.0
        clock.advance(2)
        stale = engine.forecast("DE", NOW)
        assert stale.stale and stale.forecast.values[0] == 300.0
        assert pool.submitted >= 2  # the background refresh
        pool.shutdown(wait=True)
        refreshed = engine.cache.get("forecast", "DE", lambda: provider.forecast("DE", NOW))
        assert not refreshed.stale and refreshed.series.values[0] == 600.0
    finally:
        engine.close()


def test_the_fresh_path_gives_the_same_zone_view_as_the_pool(redis_prefix):
    clock = Clock()
    engine, provider, pool = engine_for(redis_prefix, clock)
    try:
        through_pool, _ = engine.zone_view("FR", NOW)
        submitted = pool.submitted
        held, _ = engine.zone_view("FR", NOW)
        assert pool.submitted == submitted
        assert held.stale is False and held.fetched_at == through_pool.fetched_at
        np.testing.assert_array_equal(held.forecast.values, through_pool.forecast.values)
    finally:
        engine.close()


def test_a_fresh_copy_read_from_redis_is_not_used_while_redis_is_down(redis_prefix):
    """The decoded copy is trusted only for the store get() would use now: while Redis is marked
    down (the in-process fallback serves), fresh() answers nothing from Redis's copy."""
    clock = Clock()
    engine, provider, pool = engine_for(redis_prefix, clock)
    try:
        engine.forecast("DE", NOW)
        assert engine.cache.fresh("forecast", "DE") is not None
        engine.cache._redis_down_since = clock.mono  # as _mark_redis(False) leaves it
        assert engine.cache.fresh("forecast", "DE") is None
    finally:
        engine.close()


def test_the_zone_list_held_fresh_is_used_and_a_refetched_one_replaces_it(redis_client, redis_prefix):
    clock = Clock()
    engine, provider, pool = engine_for(redis_prefix, clock)
    try:
        assert engine.served_zones() == frozenset({"DE", "FR"})
        submitted = pool.submitted
        provider.zone_list = ["DE", "FR", "NL"]
        clock.advance(TTL - 1)
        assert engine.served_zones() == frozenset({"DE", "FR"})  # fresh: no pool, no provider
        assert pool.submitted == submitted and provider.calls["zones"] == 1
        # Past the TTL (and with Redis's copy gone, as its own expiry would remove it), the new
        # list is fetched and served: the set made from the old list is not kept.
        clock.advance(2)
        redis_client.delete(f"{redis_prefix}zones")
        assert engine.served_zones() == frozenset({"DE", "FR", "NL"})
        assert provider.calls["zones"] == 2
    finally:
        engine.close()
