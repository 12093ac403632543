"""The forecast cache against the real Redis: TTL, single flight, stale copies, Redis outages."""

import json
import shutil
import threading
import time
from datetime import datetime, timezone

import numpy as np
import pytest
import redis

from carbon_optimizer.data.cache import ForecastCache
from carbon_optimizer.errors import (CarbonDataError, InvalidToken, NotRecorded, UpstreamUnavailable,
                                     ZoneNotEntitled, ZoneNotFound)
from devkit.ports import free_port
from devkit.redis_server import start_redis
from tests.support import TEST_REDIS_URL
from carbon_optimizer.timeseries import ForecastSeries

START = datetime(2026, 11, 23, 10, tzinfo=timezone.utc)


def series(value=100.0):
    return ForecastSeries(zone="DE", start=START, step_seconds=3600, values=np.array([value, value + 1]),
                          provider="electricitymaps", updated_at=START)


class Clock:
    """Wall time (`now`, what the cache dates fetches by) and monotonic time (`mono`: the Redis
    retry, lock deadlines, in-process expiries), advanced by the test instead of waiting."""

    def __init__(self):
        self.now = 1_800_000_000.0
        self.mono = 1000.0

    def __call__(self):
        return self.now

    def monotonic(self):
        return self.mono

    def advance(self, seconds):
        self.now += seconds
        self.mono += seconds


class CountingFetch:
    def __init__(self, result=None, error=None, delay=0.0):
        self.calls = 0
        self.result, self.error, self.delay = result or series(), error, delay
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.error:
            raise self.error
        return self.result


def make_cache(prefix, url=TEST_REDIS_URL, clock=None, **kwargs):
    options = dict(ttl=300, stale_ttl=3600, lock_seconds=5, failure_backoff=30, key_prefix=prefix,
                   poll_seconds=0.01)
    if clock is not None:
        options.update(clock=clock, monotonic=clock.monotonic)
    options.update(kwargs)
    return ForecastCache(redis_url=url, **options)


def test_miss_then_hit_through_redis(redis_client, redis_prefix):
    cache, fetch = make_cache(redis_prefix), CountingFetch()
    first = cache.get("forecast", "DE", fetch)
    second = make_cache(redis_prefix).get("forecast", "DE", fetch)  # another worker, same Redis
    assert fetch.calls == 1
    assert list(second.series.values) == list(first.series.values) and not second.stale
    assert redis_client.ttl(f"{redis_prefix}forecast:DE") > 3000  # kept for the stale period


def test_ttl_expiry_fetches_again(redis_prefix):
    clock = Clock()
    cache, fetch = make_cache(redis_prefix, clock=clock), CountingFetch()
    cache.get("forecast", "DE", fetch)
    clock.advance(299)
    cache.get("forecast", "DE", fetch)
    clock.advance(2)
    cache.get("forecast", "DE", fetch)
    assert fetch.calls == 2


def test_in_process_entries_and_failure_backoff_expire_on_the_monotonic_clock():
    clock = Clock()
    cache = make_cache("mem:", url=None, clock=clock, ttl=60, failure_backoff=30)
    failing = CountingFetch(error=UpstreamUnavailable("DE", "Electricity Maps answered HTTP 500 for zone DE"))
    with pytest.raises(UpstreamUnavailable):
        cache.get("forecast", "DE", failing)
    clock.advance(29.9)  # the failure is still remembered: the provider is not asked
    with pytest.raises(UpstreamUnavailable):
        cache.get("forecast", "DE", failing)
    assert failing.calls == 1
    clock.advance(0.1)  # the backoff is over
    fetch = CountingFetch(series(100))
    assert not cache.get("forecast", "DE", fetch).stale and fetch.calls == 1
    # The stale copy is kept for stale_ttl (3600 s) of monotonic time, then dropped.
    clock.advance(3599)
    assert cache.get("forecast", "DE", failing).stale and failing.calls == 2
    clock.advance(31)
    with pytest.raises(UpstreamUnavailable):
        cache.get("forecast", "DE", failing)
    assert failing.calls == 3


@pytest.mark.parametrize("url", [TEST_REDIS_URL, None], ids=["redis", "in-process"])
def test_a_lock_never_released_is_waited_for_until_its_deadline_only(redis_prefix, url):
    """A worker that took the lock and died: the others wait `lock_seconds`, then give up without
    calling upstream. The lock wait polls for real; only the deadline runs on the test's clock."""
    clock = Clock()

    def ticking():  # each look at the clock is a second later
        clock.mono += 1
        return clock.mono

    cache = make_cache(redis_prefix, url=url, clock=clock, lock_seconds=5, monotonic=ticking)
    store = cache._redis or cache._local
    store.set(f"{redis_prefix}forecast:DE:lock", "crashed-worker", 3600)
    fetch = CountingFetch()
    with pytest.raises(UpstreamUnavailable, match="timed out waiting"):
        cache.get("forecast", "DE", fetch)
    assert fetch.calls == 0


def test_a_worker_answers_a_fresh_entry_from_its_own_decoded_copy(redis_client, redis_prefix):
    clock = Clock()
    writer, reader = make_cache(redis_prefix, clock=clock), make_cache(redis_prefix, clock=clock)
    writer.get("forecast", "DE", CountingFetch(series(100)))
    reader.get("forecast", "DE", CountingFetch())  # decodes the Redis entry once
    calls = []
    redis_get = reader._redis.get
    reader._redis.get = lambda key: calls.append(key) or redis_get(key)
    clock.advance(299)  # still fresh: no Redis read at all
    assert reader.get("forecast", "DE", CountingFetch()).series.values[0] == 100 and calls == []
    # The TTL over, the copy is not trusted: Redis decides, and a refetch there is seen.
    clock.advance(2)
    writer.get("forecast", "DE", CountingFetch(series(200)))
    refreshed = reader.get("forecast", "DE", CountingFetch(series(300)))
    assert refreshed.series.values[0] == 200 and f"{redis_prefix}forecast:DE" in calls


@pytest.mark.parametrize("url", [TEST_REDIS_URL, None], ids=["redis", "in-process"])
def test_concurrent_misses_make_one_upstream_call(redis_prefix, url):
    workers = [make_cache(redis_prefix, url=url) for _ in range(1 if url is None else 3)]
    fetch = CountingFetch(delay=0.3)
    results, errors = [], []

    def ask(cache):
        try:
            results.append(cache.get("forecast", "DE", fetch))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(workers[i % len(workers)],)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 30
    assert fetch.calls == 1


def test_failure_serves_the_last_good_copy_flagged_stale(redis_prefix):
    clock = Clock()
    cache = make_cache(redis_prefix, clock=clock, ttl=60)
    cache.get("forecast", "DE", CountingFetch(series(100)))
    clock.advance(120)
    failing = CountingFetch(error=UpstreamUnavailable("DE", "Electricity Maps answered HTTP 500 for zone DE"))
    served = cache.get("forecast", "DE", failing)
    assert served.stale and served.series.values[0] == 100
    # Within the failure backoff the provider is not asked again; the stale copy keeps coming.
    again = cache.get("forecast", "DE", failing)
    assert again.stale and failing.calls == 1
    _, last_success, last_failure = cache.health()
    assert last_failure > last_success


def test_failure_without_a_copy_raises(redis_prefix):
    cache = make_cache(redis_prefix)
    failing = CountingFetch(error=UpstreamUnavailable("DE", "timed out for zone DE"))
    with pytest.raises(UpstreamUnavailable):
        cache.get("forecast", "DE", failing)
    with pytest.raises(UpstreamUnavailable):  # remembered: no second upstream call
        cache.get("forecast", "DE", failing)
    assert failing.calls == 1


def test_unknown_zone_is_not_answered_from_a_stale_copy(redis_prefix):
    clock = Clock()
    cache = make_cache(redis_prefix, clock=clock, ttl=60)
    cache.get("forecast", "XX", CountingFetch())
    clock.advance(120)
    with pytest.raises(ZoneNotFound):
        cache.get("forecast", "XX", CountingFetch(error=ZoneNotFound("XX", "no data for zone XX")))


def test_unreachable_redis_falls_back_to_memory(redis_prefix):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    cache, fetch = make_cache(redis_prefix, url=dead), CountingFetch()
    assert not cache.get("forecast", "DE", fetch).stale
    cache.get("forecast", "DE", fetch)
    assert fetch.calls == 1
    assert cache.health()[0]["status"] == "down"


def test_unreadable_entry_is_discarded(redis_client, redis_prefix):
    redis_client.set(f"{redis_prefix}forecast:DE", "{not json")
    fetch = CountingFetch()
    assert list(make_cache(redis_prefix).get("forecast", "DE", fetch).series.values) == [100, 101]
    assert fetch.calls == 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_coming_back_is_used_again_without_restart(tmp_path):
    port = free_port()

    def start():  # on the same port each time: the cache's URL names it
        return start_redis(port, tmp_path), redis.Redis(port=port)

    process, client = start()
    clock = Clock()
    try:
        cache = make_cache("t:", url=f"redis://127.0.0.1:{port}/0", clock=clock, redis_retry_seconds=5,
                           ttl=300)
        cache.get("forecast", "DE", CountingFetch())
        assert client.exists("t:forecast:DE")
        process.terminate()
        process.wait()
        assert not cache.get("forecast", "FR", CountingFetch()).stale  # served from memory
        assert cache.health()[0]["status"] == "down"
        process, client = start()
        # Redis is back, but within the retry interval the cache stays on memory...
        clock.advance(4.9)
        cache.get("forecast", "NL", CountingFetch())
        assert not client.exists("t:forecast:NL")
        # ...and tries Redis again once it is over.
        clock.advance(0.1)
        cache.get("forecast", "ES", CountingFetch())
        assert client.exists("t:forecast:ES")  # written to Redis again
        # FR, fetched during the outage, is still fresh in this worker's memory, but Redis is filled
        # again rather than left empty for the other workers and replicas.
        cache.get("forecast", "FR", CountingFetch())
        assert client.exists("t:forecast:FR")
        assert cache.health()[0]["status"] == "ok"
    finally:
        process.terminate()
        process.wait()


# Every carbon-data failure a provider raises, written out with the code errors.py gives it and
# whether it passes (a stale copy may stand in) or is final for the zone.
PROVIDER_FAILURES = [
    (UpstreamUnavailable, "upstream_unavailable", True),
    (InvalidToken, "upstream_auth_failed", True),
    (CarbonDataError, "upstream_error", True),
    (ZoneNotFound, "zone_not_found", False),
    (ZoneNotEntitled, "zone_not_entitled", False),
    (NotRecorded, "window_not_covered", False),
]


@pytest.mark.parametrize("error, code, passing", PROVIDER_FAILURES, ids=[c for _, c, _ in PROVIDER_FAILURES])
def test_a_remembered_failure_is_stored_by_its_code_and_comes_back_as_raised(redis_client, redis_prefix,
                                                                             error, code, passing):
    clock = Clock()
    failing = CountingFetch(error=error("XX", f"the provider's words about zone XX ({code})"))
    with pytest.raises(error) as first:
        make_cache(redis_prefix, clock=clock).get("forecast", "XX", failing)
    assert json.loads(redis_client.get(f"{redis_prefix}forecast:XX:failure-code"))["code"] == code
    # Another worker within the backoff: no upstream call, the same error, zone and words.
    with pytest.raises(error) as again:
        make_cache(redis_prefix, clock=clock).get("forecast", "XX", failing)
    assert failing.calls == 1
    assert type(again.value) is error and again.value.code.value == code
    assert (again.value.zone, again.value.message) == ("XX", first.value.message)

    # With a copy past its TTL, the remembered failure lets it stand in only when it passes.
    redis_client.delete(f"{redis_prefix}forecast:YY:failure-code")
    make_cache(redis_prefix, clock=clock).get("forecast", "YY", CountingFetch(series(120)))
    clock.advance(301)
    failing_yy = CountingFetch(error=error("YY", "the provider's words about zone YY"))
    for _ in range(2):  # the failure itself, then the same failure remembered
        cache = make_cache(redis_prefix, clock=clock)
        if passing:
            copy = cache.get("forecast", "YY", failing_yy)
            assert copy.stale and list(copy.series.values) == [120.0, 121.0]
        else:
            with pytest.raises(error, match="zone YY"):
                cache.get("forecast", "YY", failing_yy)
    assert failing_yy.calls == 1


def test_a_failed_zone_list_is_remembered_by_its_code(redis_client, redis_prefix):
    clock = Clock()
    failing = CountingFetch(error=InvalidToken("", "the provider refused the service's key"))
    with pytest.raises(InvalidToken):
        make_cache(redis_prefix, clock=clock).get_names("zones", 600, failing)
    assert json.loads(redis_client.get(f"{redis_prefix}zones:failure-code"))["code"] == "upstream_auth_failed"
    with pytest.raises(InvalidToken, match="refused the service's key"):
        make_cache(redis_prefix, clock=clock).get_names("zones", 600, failing)
    assert failing.calls == 1
    redis_client.delete(f"{redis_prefix}zones:failure-code")  # as Redis does when the backoff ends
    listed = CountingFetch(result=["FR", "DE"])
    assert make_cache(redis_prefix, clock=clock).get_names("zones", 600, listed) == ["DE", "FR"]
    assert make_cache(redis_prefix, clock=clock).get_names("zones", 600, listed) == ["DE", "FR"]
    assert listed.calls == 1
