"""Forecasts through a TTL cache with single-flight fetches and a longer-lived stale copy.

Redis when configured, so one upstream call per zone per TTL holds across every Gunicorn worker and
replica (a lock in Redis decides who fetches; the others wait for its answer). When Redis cannot be
reached, an in-process store with the same rules takes over and Redis is tried again shortly after,
so it is used again without a restart.

Each worker also keeps the decoded forecasts it last read, and answers from them while they are
fresh: a fresh entry cannot change before its TTL ends (nobody refetches a fresh zone), so reading
Redis and decoding JSON on every request would buy nothing.

Past its TTL an entry is served at once, flagged stale, while one refresher (whoever takes the
zone's lock, across every worker and replica) fetches a new one in the background: a slow provider
then slows no request that has any copy to fall back on. Only a zone never fetched (or whose copy
outlived the stale TTL) waits for the provider.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Generic, NoReturn, Optional, TypeVar

import redis

from carbon_optimizer.errors import CarbonDataError, FailureCode, UpstreamUnavailable
from carbon_optimizer.ops import metrics
from carbon_optimizer.settings import Settings
from carbon_optimizer.timeseries import ForecastSeries

log = logging.getLogger(__name__)

Fetch = Callable[[], ForecastSeries]
Background = Callable[[Callable[[], None]], object]  # runs a task later, on another thread
T = TypeVar("T")  # what one single-flight fetch yields: a forecast, or a list of names

# /health's view of Redis must answer fast even when Redis hangs: a load balancer's probe has a
# timeout of its own, and a slow probe would take a healthy instance out of service.
HEALTH_PROBE_SECONDS = 0.25


# A remembered failure is stored under the entry's key + this suffix, as its FailureCode. Not the
# ":failure" of releases that stored a class name: during a rolling deploy sharing Redis, neither
# release then misreads the other's record (a final zone_not_found read as a passing failure).
_FAILURE_SUFFIX = ":failure-code"

@dataclass(frozen=True)
class CachedForecast:
    series: ForecastSeries
    fetched_at: float  # epoch seconds of the upstream fetch
    stale: bool


@dataclass(frozen=True)
class _Failure:
    """A recent upstream failure, remembered briefly so a failing provider is not hammered. Kept
    by its FailureCode: the code says whether a stale copy may stand in, and which error to raise."""
    code: FailureCode
    message: str

    @classmethod
    def of(cls, exc: CarbonDataError) -> "_Failure":
        return cls(exc.code, exc.message)

    @classmethod
    def parse(cls, raw: str) -> "_Failure":
        try:
            data = json.loads(raw)
            return cls(FailureCode(data["code"]), str(data["message"]))
        except (ValueError, KeyError, TypeError):  # unreadable, or written by an older version
            return cls(FailureCode.UPSTREAM_UNAVAILABLE, "the carbon-data provider failed recently")

    def dumps(self) -> str:
        return json.dumps({"code": self.code.value, "message": self.message})

    @property
    def transient(self) -> bool:
        """Passing (a stale copy may stand in) or final for the zone: the failure code decides."""
        return self.code.transient

    def raise_for(self, zone: str) -> NoReturn:
        raise _error_class(self.code)(zone, self.message)


def _error_class(code: FailureCode) -> type[CarbonDataError]:
    """The carbon-data error that carries `code` (the most general one, should two carry it), so a
    remembered failure is raised as the provider raised it; UpstreamUnavailable for any other."""
    pending: list[type[CarbonDataError]] = [CarbonDataError]
    while pending:
        found = pending.pop(0)
        if found.code is code:
            return found
        pending.extend(found.__subclasses__())
    return UpstreamUnavailable


@dataclass(frozen=True)
class _Flight(Generic[T]):
    """One key's single-flight fetch, for _single_flight: `read` what the store holds (None when
    missing or unusable), `fetch` it upstream and store it, `failed` what a failure leaves (a
    stale copy, or raise); `timed_out` says what the waiting ran out on."""
    read: Callable[[], Optional[T]]
    fetch: Callable[[], T]
    failed: Callable[[_Failure], T]
    timed_out: str


class _LocalStore:
    """In-process store: the fallback when Redis is down, and the default with no REDIS_URL.
    Expiries follow `monotonic` (the cache's), so a test can advance them."""

    name = "memory"

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, str]] = {}  # key -> (expires_at, value)

    def get(self, key: str) -> Optional[str]:
        with self._lock:
            item = self._values.get(key)
            if item is None:
                return None
            if item[0] <= self._monotonic():
                del self._values[key]
                return None
            return item[1]

    def set(self, key: str, value: str, seconds: float, only_if_absent: bool = False) -> bool:
        with self._lock:
            current = self._values.get(key)
            now = self._monotonic()
            if only_if_absent and current is not None and current[0] > now:
                return False
            self._values[key] = (now + seconds, value)
            return True

    def delete_if(self, key: str, value: str) -> None:
        with self._lock:
            if self._values.get(key, (0, None))[1] == value:
                del self._values[key]

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)


class _RedisStore:
    name = "redis"
    # Delete the lock only if we still own it (it may have expired and been taken by another).
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                           health_check_interval=30, decode_responses=True)
        self.probe_client = redis.Redis.from_url(
            url, socket_timeout=HEALTH_PROBE_SECONDS, socket_connect_timeout=HEALTH_PROBE_SECONDS,
            decode_responses=True)
        self._release = self.client.register_script(self._RELEASE)

    def probe(self, keys: list[str]) -> list[Optional[str]]:
        """PING and read `keys` in one round trip, within HEALTH_PROBE_SECONDS."""
        pipe = self.probe_client.pipeline(transaction=False)
        pipe.ping()
        for key in keys:
            pipe.get(key)
        return pipe.execute()[1:]

    def get(self, key: str) -> Optional[str]:
        return self.client.get(key)

    def set(self, key: str, value: str, seconds: float, only_if_absent: bool = False) -> bool:
        return bool(self.client.set(key, value, px=max(1, int(seconds * 1000)), nx=only_if_absent))

    def delete_if(self, key: str, value: str) -> None:
        self._release(keys=[key], args=[value])

    def delete(self, key: str) -> None:
        self.client.delete(key)


class ForecastCache:
    """`clock` (epoch seconds) dates fetches and judges their age; `monotonic` times everything
    else: the Redis retry, lock deadlines and the in-process store's expiries. Both are plain
    attributes, so a test can advance time instead of sleeping."""

    def __init__(self, redis_url: Optional[str], ttl: float, stale_ttl: float, lock_seconds: float,
                 failure_backoff: float, key_prefix: str = "carbon-optimizer:",
                 redis_retry_seconds: float = 5.0, poll_seconds: float = 0.05,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 background: Optional[Background] = None) -> None:
        self.clock = clock
        self.monotonic = monotonic
        self.ttl = ttl
        self.stale_ttl = max(stale_ttl, ttl)
        self.lock_seconds = lock_seconds
        self.failure_backoff = failure_backoff
        self.prefix = key_prefix
        self._local = _LocalStore(lambda: self.monotonic())
        self._redis = _RedisStore(redis_url) if redis_url else None
        self._redis_down_since: Optional[float] = None
        self._redis_retry_seconds = redis_retry_seconds
        self._poll = poll_seconds
        # key -> (store name, last fresh entry this worker read there); an entry read from the
        # in-process fallback is not trusted once Redis is back, so Redis is filled again.
        self._decoded: dict[str, tuple[str, CachedForecast]] = {}
        self._decoded_lock = threading.Lock()
        self._background = background
        self._names: dict[str, tuple[float, list[str]]] = {}  # key -> (fetched_at, names)
        metrics.REDIS_UP.set(1 if self._redis else 0)

    @classmethod
    def for_forecasts(cls, settings: Settings, background: Optional[Background] = None,
                      namespace: str = "") -> "ForecastCache":
        """The forecasts' cache, as configuration asks (`namespace`: a provider's own keys within
        the prefix, for every provider but the default)."""
        return cls(redis_url=settings.redis_url, ttl=settings.cache_ttl_seconds,
                   stale_ttl=settings.cache_stale_ttl_seconds, lock_seconds=settings.upstream_lock_seconds,
                   failure_backoff=settings.upstream_failure_backoff_seconds,
                   key_prefix=settings.cache_key_prefix + namespace, background=background)

    @classmethod
    def for_histories(cls, settings: Settings, background: Optional[Background] = None,
                      namespace: str = "") -> "ForecastCache":
        """The histories' cache: history changes slowly and is fetched for days at a time, so it
        is kept for hours, apart from forecasts."""
        return cls(redis_url=settings.redis_url, ttl=settings.history_ttl_seconds,
                   stale_ttl=max(settings.history_ttl_seconds, settings.cache_stale_ttl_seconds),
                   lock_seconds=settings.upstream_lock_seconds,
                   failure_backoff=settings.upstream_failure_backoff_seconds,
                   key_prefix=settings.cache_key_prefix + namespace, background=background)

    # -- which store -----------------------------------------------------------------------------

    def _store(self):
        if self._redis is None:
            return self._local
        if self._redis_down_since is not None:
            if self.monotonic() - self._redis_down_since < self._redis_retry_seconds:
                return self._local
        return self._redis

    def _mark_redis(self, up: bool, error: Optional[Exception] = None) -> None:
        if up and self._redis_down_since is not None:
            log.warning("Redis is reachable again; using it")
            self._redis_down_since = None
            metrics.REDIS_UP.set(1)
        elif not up:
            if self._redis_down_since is None:
                log.warning("Redis unreachable (%s); using the in-process cache", type(error).__name__)
            self._redis_down_since = self.monotonic()
            metrics.REDIS_UP.set(0)

    def _on_store(self, lookup: Callable[[object], T]) -> T:
        """`lookup` on the store in use (Redis while it is up); when Redis fails, it is marked down
        and the in-process store answers instead."""
        store = self._store()
        try:
            found = lookup(store)
        except redis.RedisError as exc:
            self._mark_redis(False, exc)
            return lookup(self._local)
        if store is self._redis:
            self._mark_redis(True)
        return found

    def health(self) -> tuple[dict, Optional[float], Optional[float]]:
        """For /health: Redis's state (one PING), and the last successful and failed upstream
        fetches (across workers when Redis is up), in one round trip of at most
        HEALTH_PROBE_SECONDS."""
        keys = [f"{self.prefix}last_success", f"{self.prefix}last_failure"]
        if self._redis is None:
            status = {"status": "disabled", "detail": "no REDIS_URL: in-process cache"}
            values = [self._local.get(key) for key in keys]
        else:
            try:
                values = self._redis.probe(keys)
                self._mark_redis(True)
                status = {"status": "ok"}
            except redis.RedisError as exc:
                self._mark_redis(False, exc)
                status = {"status": "down", "detail": "unreachable: serving from the in-process cache"}
                values = [self._local.get(key) for key in keys]
        success, failure = (float(v) if v else None for v in values)
        return status, success, failure

    # -- slow-changing lists (a provider's zones) ------------------------------------------------

    def get_names(self, kind: str, ttl: float, fetch: Callable[[], list[str]]) -> list[str]:
        """A list that changes rarely (a provider's zone list), kept `ttl` seconds: in Redis when
        configured, so one upstream call serves every worker and replica. A failed fetch raises
        its CarbonDataError and is remembered for the failure backoff, so an outage is not hammered.
        Not counted in the forecast cache's metrics: it is no forecast."""
        key = f"{self.prefix}{kind}"
        held = self.fresh_names(kind, ttl)
        if held is not None:
            return held
        found = self._on_store(lambda store: self._names_from(store, key, ttl, fetch))
        with self._decoded_lock:
            self._names[key] = found
        return found[1]

    def fresh_names(self, kind: str, ttl: float) -> Optional[list[str]]:
        """The list get_names() would answer from this worker's copy, without any I/O; None when
        that copy is missing or older than `ttl`."""
        held = self._names.get(f"{self.prefix}{kind}")  # one dict read: atomic, no lock needed
        if held is not None and self.clock() - held[0] < ttl:
            return held[1]
        return None

    def _names_from(self, store, key: str, ttl: float,
                    fetch: Callable[[], list[str]]) -> tuple[float, list[str]]:
        def failed(failure: _Failure) -> tuple[float, list[str]]:
            failure.raise_for("")  # the list is about no one zone

        found = self._read_names(store, key)
        return found if found is not None else self._single_flight(store, key, _Flight(
            lambda: self._read_names(store, key), lambda: self._fetch_names(store, key, ttl, fetch),
            failed, "timed out waiting for the provider's zone list"))

    def _read_names(self, store, key: str) -> Optional[tuple[float, list[str]]]:
        raw = store.get(key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return float(data["fetched_at"]), [str(n) for n in data["names"]]
        except (ValueError, KeyError, TypeError):
            log.warning("discarding an unreadable cache entry for %s", key)
            store.delete(key)
            return None

    def _fetch_names(self, store, key: str, ttl: float,
                     fetch: Callable[[], list[str]]) -> tuple[float, list[str]]:
        try:
            names = sorted(fetch())
        except CarbonDataError as exc:
            self._remember_failure(store, key, exc)
            raise
        now = self.clock()
        store.set(key, json.dumps({"fetched_at": now, "names": names}), ttl)
        return now, names

    # -- the lookup ------------------------------------------------------------------------------

    def get(self, kind: str, zone: str, fetch: Fetch) -> CachedForecast:
        return self._on_store(lambda store: self._get(store, kind, zone, fetch))

    def fresh(self, kind: str, zone: str) -> Optional[CachedForecast]:
        """What get() would answer from this worker's decoded copy, without any I/O: the copy
        while it is fresh (read from the store get() would use now), else None. A request that
        finds its zones here need not hand them to a fetch thread."""
        store = self._store()
        found = self._held(store, f"{self.prefix}{kind}:{zone}")
        if found is not None and store is self._redis:
            self._mark_redis(True)
        return found

    def _held(self, store, key: str) -> Optional[CachedForecast]:
        source, decoded = self._decoded.get(key, (None, None))
        if decoded is not None and source == store.name and self.clock() - decoded.fetched_at < self.ttl:
            metrics.labelled(metrics.CACHE_EVENTS, "hit", "process").inc()
            return decoded
        return None

    def _get(self, store, kind: str, zone: str, fetch: Fetch) -> CachedForecast:
        key = f"{self.prefix}{kind}:{zone}"
        decoded = self._held(store, key)
        if decoded is not None:
            return decoded
        latest: Optional[CachedForecast] = None  # the store's copy last read, fresh or stale

        def read() -> Optional[CachedForecast]:
            nonlocal latest
            latest = self._read(store, key)
            if latest is None or latest.stale:
                return None
            metrics.CACHE_EVENTS.labels("hit", store.name).inc()
            return latest

        def failed(failure: _Failure) -> CachedForecast:
            return self._stale_or_raise(store, latest, zone, failure)

        def fetched() -> CachedForecast:
            try:
                return self._fetch_and_store(store, key, fetch)
            except CarbonDataError as exc:
                if not exc.transient:
                    raise
                return failed(_Failure.of(exc))

        found = read()
        if found is not None:
            return found
        if latest is not None and self._background is not None:
            return self._stale_while_refreshing(store, key, zone, fetch, latest)
        return self._single_flight(store, key, _Flight(
            read, fetched, failed, f"timed out waiting for carbon data for zone {zone}"))

    def _single_flight(self, store, key: str, flight: _Flight[T]) -> T:
        """One upstream fetch for `key` at a time, across every worker and replica (a lock in the
        store); the others wait for its answer, at most lock_seconds, and a failure remembered
        from moments ago is not retried before the failure backoff ends."""
        deadline = self.monotonic() + self.lock_seconds
        while True:
            failure = self._recent_failure(store, key)
            if failure is not None:
                return flight.failed(failure)
            token = self._lock(store, key)
            if token is not None:
                try:
                    found = flight.read()  # the previous holder may have just written it
                    return found if found is not None else flight.fetch()
                finally:
                    store.delete_if(f"{key}:lock", token)
            # Another worker is fetching: wait for its answer rather than calling upstream too.
            # A real wait (another process holds the lock), timed by the injectable clock.
            while store.get(f"{key}:lock") is not None and self.monotonic() < deadline:
                time.sleep(self._poll)
            found = flight.read()
            if found is not None:
                return found
            if self.monotonic() >= deadline:
                return flight.failed(_Failure(FailureCode.UPSTREAM_UNAVAILABLE, flight.timed_out))

    def _lock(self, store, key: str) -> Optional[str]:
        """Take `key`'s fetch lock: its token when taken, None when another holds it."""
        token = uuid.uuid4().hex
        return token if store.set(f"{key}:lock", token, self.lock_seconds, only_if_absent=True) else None

    def _stale_while_refreshing(self, store, key: str, zone: str, fetch: Fetch,
                                entry: CachedForecast) -> CachedForecast:
        """Serve the expired copy now; the worker that takes the zone's lock refreshes it in the
        background (the others, finding the lock taken, just serve the copy)."""
        failure = self._recent_failure(store, key)
        if failure is not None:  # the provider failed moments ago: do not ask again yet
            return self._stale_or_raise(store, entry, zone, failure)
        token = self._lock(store, key)
        if token is not None:
            def refresh() -> None:
                try:
                    self._fetch_and_store(store, key, fetch)
                except CarbonDataError as exc:  # recorded by _fetch_and_store; the copy stands
                    log.info("background refresh of %s failed: %s", key, exc.message)
                except redis.RedisError as exc:
                    log.warning("background refresh of %s: Redis failed (%s)", key, type(exc).__name__)
                finally:
                    try:
                        store.delete_if(f"{key}:lock", token)
                    except redis.RedisError:
                        pass  # the lock expires by itself
            try:
                self._background(refresh)  # type: ignore[misc]
            except RuntimeError:  # the pool is shutting down (worker exit): leave the lock to expire
                pass
        return self._stale(store, entry, zone)

    def _fetch_and_store(self, store, key: str, fetch: Fetch) -> CachedForecast:
        """Call the provider and keep its answer; a failure is recorded (and backed off) and raised."""
        metrics.CACHE_EVENTS.labels("miss", store.name).inc()
        try:
            series = fetch()
        except CarbonDataError as exc:
            store.set(f"{self.prefix}last_failure", str(self.clock()), self.stale_ttl)
            self._remember_failure(store, key, exc)
            raise
        now = self.clock()
        store.set(key, json.dumps({"fetched_at": now, "series": series.to_dict()}), self.stale_ttl)
        store.delete(f"{key}{_FAILURE_SUFFIX}")
        store.set(f"{self.prefix}last_success", str(now), self.stale_ttl)
        return self._remember(store, key, CachedForecast(series=series, fetched_at=now, stale=False))

    def _read(self, store, key: str) -> Optional[CachedForecast]:
        raw = store.get(key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            fetched_at = float(data["fetched_at"])
            series = ForecastSeries.from_dict(data["series"])
        except (ValueError, KeyError, TypeError):
            log.warning("discarding an unreadable cache entry for %s", key)
            store.delete(key)
            return None
        entry = CachedForecast(series=series, fetched_at=fetched_at,
                               stale=self.clock() - fetched_at >= self.ttl)
        return entry if entry.stale else self._remember(store, key, entry)

    _DECODED_LIMIT = 4096  # zones x kinds; more than Electricity Maps has, so only a guard

    def _remember(self, store, key: str, entry: CachedForecast) -> CachedForecast:
        with self._decoded_lock:
            if len(self._decoded) >= self._DECODED_LIMIT and key not in self._decoded:
                self._decoded.pop(next(iter(self._decoded)))  # the oldest: dicts keep insertion order
            self._decoded[key] = (store.name, entry)
        return entry

    def _remember_failure(self, store, key: str, exc: CarbonDataError) -> None:
        if self.failure_backoff > 0:
            store.set(f"{key}{_FAILURE_SUFFIX}", _Failure.of(exc).dumps(), self.failure_backoff)

    def _recent_failure(self, store, key: str) -> Optional[_Failure]:
        raw = store.get(f"{key}{_FAILURE_SUFFIX}")
        return _Failure.parse(raw) if raw is not None else None

    def _stale_or_raise(self, store, entry: Optional[CachedForecast], zone: str,
                        failure: _Failure) -> CachedForecast:
        if entry is not None and failure.transient:
            return self._stale(store, entry, zone)
        failure.raise_for(zone)

    def _stale(self, store, entry: CachedForecast, zone: str) -> CachedForecast:
        metrics.CACHE_EVENTS.labels("stale", store.name).inc()
        metrics.STALE_SERVES.labels(zone).inc()
        return CachedForecast(series=entry.series, fetched_at=entry.fetched_at, stale=True)
