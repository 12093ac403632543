"""Fault injection on loopback: upstream faults, Redis killed and restarted, a Gunicorn worker killed,
a short sustained load, and 200 concurrent cold requests. Bounded in count and time; speed is
measured in bench/, never asserted here: a wait is bounded only so that a hang fails (HANG)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import redis
import requests

from bench import soak
from carbon_optimizer.web.app_state import app_state
from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast
from devkit.ports import free_port
from devkit.redis_server import delete_keys, start_redis
from devkit.service_process import GunicornProcess
from devkit.waiting import HANG, wait_for

REDIS_URL = "redis://127.0.0.1:6379/12"
NOW = datetime.now(timezone.utc)
HOUR = NOW.replace(minute=0, second=0, microsecond=0)
GOOD = hourly_forecast("DE", HOUR, [300.0 - 2 * i for i in range(48)])
BODY = {"duration": 60, "zones": ["DE"]}


@pytest.fixture
def redis12():
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.ping()
    prefix = f"rel-{uuid.uuid4().hex[:10]}:"
    yield client, prefix
    delete_keys(client, prefix)


def em_env(base_url: str, prefix: str, **extra: str) -> dict:
    return {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "test-key",
            "ELECTRICITY_MAPS_BASE_URL": base_url, "REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": prefix,
            "UPSTREAM_RETRIES": "0", "UPSTREAM_READ_TIMEOUT": "0.5", "UPSTREAM_CONNECT_TIMEOUT": "0.5",
            "RATE_LIMIT_ENABLED": "false",  # these tests load the service on purpose
            **extra}


# -- upstream faults ------------------------------------------------------------------------------

# name -> (status, body) served by the stand-in, or a special fault
FAULTS = {
    "http_500": (500, {"status": "error", "message": "internal"}),
    "http_502_html": (502, b"<html>bad gateway</html>"),
    "http_429": (429, {"status": "error", "message": "rate limit"}),
    "bad_token_401": (401, {"status": "error", "message": "Invalid authentication token"}),
    "not_entitled_401": (401, {"status": "error", "message": "Request unauthorized for zone DE"}),
    "not_found_404": (404, {"status": "error", "message": "not found"}),
    "malformed_json": (200, b'{"zone": "DE", "forecast": [{"carbonIntensity": 1'),
    "wrong_shape": (200, {"zone": "DE", "forecast": "soon"}),
    "empty_forecast": (200, {"zone": "DE", "forecast": []}),
    "all_nulls": (200, hourly_forecast("DE", HOUR, [None] * 24)),
    "timeout": "timeout",
    "connection_refused": "refused",
}
# What a client may see, per fault, with no cached copy: never a 500.
# A zone the key's plan does not cover is final: a 4xx without Retry-After, or CI clients would
# retry it forever.
COLD = {"not_found_404": {"optimize": 400, "forecast": 404},
        "not_entitled_401": {"optimize": 422, "forecast": 422}}
# Final for the zone even with a stale copy at hand.
FINAL = {"not_found_404", "not_entitled_401"}


class Upstream:
    """A stand-in for the faults that a response body can express, a slow one, and a dead port."""

    def __init__(self):
        self.normal = ElectricityMapsStandIn()
        self.slow = ElectricityMapsStandIn(delay=HANG)  # past the 0.5 s read timeout however loaded
        self.dead_url = f"http://127.0.0.1:{free_port()}/v3"

    def __enter__(self):
        self.normal.__enter__()
        self.slow.__enter__()
        self.slow.responses["DE"] = (200, GOOD)
        return self

    def __exit__(self, *exc):
        self.normal.__exit__(*exc)
        self.slow.__exit__(*exc)

    def url_for(self, fault: str) -> str:
        """Where to point the service for this fault; sets the stand-in's answer when it is one."""
        kind = FAULTS[fault]
        if kind == "timeout":
            return self.slow.url
        if kind == "refused":
            return self.dead_url
        self.normal.responses["DE"] = kind
        return self.normal.url


@pytest.fixture(scope="module")
def upstream():
    with Upstream() as servers:
        yield servers


def check_answer(answer, allowed: set[int], stale: bool | None = None) -> None:
    """Status among `allowed`, JSON, Retry-After on a 503 only; a single 200 says it is `stale` or not."""
    assert answer.status_code != 500
    assert answer.status_code in allowed, (answer.status_code, answer.get_data(as_text=True))
    assert answer.is_json
    if answer.status_code == 503:
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.get_json()["error"]["code"]
    else:
        assert "Retry-After" not in answer.headers
    body = answer.get_json()
    if answer.status_code == 200 and "results" not in body:  # a batch has provenance per result
        assert stale is not None, "the test must say whether this answer is stale"
        assert body["provenance"]["stale"] is stale


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_upstream_fault_without_a_cached_copy_is_a_503_or_documented_4xx(fault, upstream, make_app, redis12):
    _, prefix = redis12
    app = make_app(em_env(upstream.url_for(fault), prefix), clock=lambda: NOW)
    client = app.test_client()
    expected = COLD.get(fault, {"optimize": 503, "forecast": 503})
    for _ in range(2):  # the second meets the failure backoff, not the provider
        optimize = client.post("/api/v1/optimize", json=BODY)
        check_answer(optimize, {expected["optimize"]})
        forecast = client.get("/api/v1/forecast?zone=DE")
        check_answer(forecast, {expected["forecast"]})
    # A batch never fails as a whole: the workload is reported unschedulable.
    batch = client.post("/api/v1/optimize", json={"workloads": [BODY]})
    check_answer(batch, {200})
    assert batch.get_json()["results"][0]["status"] == "unschedulable"


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_upstream_fault_with_an_expired_copy_serves_it_flagged_stale(fault, upstream, make_app, redis12):
    _, prefix = redis12
    # One instance fetches a good forecast into Redis...
    upstream.normal.responses["DE"] = (200, GOOD)
    warm = make_app(em_env(upstream.normal.url, prefix, CACHE_TTL_SECONDS="60"), clock=lambda: NOW)
    fresh = warm.test_client().post("/api/v1/optimize", json=BODY)
    check_answer(fresh, {200}, stale=False)
    # ...then, two minutes later (the copy has expired), another meets the faulty provider.
    app = make_app(em_env(upstream.url_for(fault), prefix, CACHE_TTL_SECONDS="60"), clock=lambda: NOW)
    app_state(app).engine.cache.clock = lambda: time.time() + 120
    client = app.test_client()
    # The expired copy is served at once while the refresh meets the fault in the background.
    check_answer(client.post("/api/v1/optimize", json=BODY), {200}, stale=True)
    assert wait_for(lambda: client.get("/health").get_json()["checks"]["provider"]["status"] == "failing")
    for _ in range(2):  # what the refresh learnt now holds, within the failure backoff
        optimize = client.post("/api/v1/optimize", json=BODY)
        forecast = client.get("/api/v1/forecast?zone=DE")
        if fault in FINAL:
            check_answer(optimize, {COLD[fault]["optimize"]})
            check_answer(forecast, {COLD[fault]["forecast"]})
        else:
            check_answer(optimize, {200}, stale=True)
            check_answer(forecast, {200}, stale=True)
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and health["checks"]["provider"]["status"] == "failing"


def test_forecast_with_nulls_and_gaps_is_served_with_estimated_points(upstream, make_app, redis12):
    _, prefix = redis12
    body = hourly_forecast("DE", HOUR, [None, 300.0, None, None, 100.0] + [250.0] * 30)
    del body["forecast"][10:13]  # a three-hour gap
    upstream.normal.responses["DE"] = (200, body)
    client = make_app(em_env(upstream.normal.url, prefix), clock=lambda: NOW).test_client()
    forecast = client.get("/api/v1/forecast?zone=DE")
    check_answer(forecast, {200}, stale=False)
    points = forecast.get_json()["forecast"]
    assert points[0]["carbon_intensity"] == 300.0  # the leading null is dropped
    assert [p["estimated"] for p in points[:4]] == [False, True, True, False]
    assert sum(p["estimated"] for p in points) == 2 + 3
    optimize = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"], "max_delay": "PT5H"})
    check_answer(optimize, {200}, stale=False)
    assert optimize.get_json()["carbon_intensity"] == 100.0


# -- processes: Redis killed, a worker killed, sustained load, cold stampede ---------------------

@pytest.fixture
def stand_in():
    with ElectricityMapsStandIn() as server:
        server.responses["DE"] = (200, GOOD)
        yield server



@pytest.mark.slow
def test_redis_killed_while_requests_flow_then_used_again(stand_in, tmp_path):
    port = free_port()
    server = start_redis(port, tmp_path)
    prefix = f"rel-{uuid.uuid4().hex[:8]}:"
    # A worker answers from its own decoded copy until the TTL ends, whatever Redis does meanwhile;
    # a short TTL makes the workers come back to the store (Redis, or memory while it is down) often.
    env = {**em_env(stand_in.url, prefix), "REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "CACHE_TTL_SECONDS": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    private = redis.Redis(port=port, socket_timeout=0.5)
    try:
        with GunicornProcess(env, workers=2, threads=4, log_path=tmp_path / "gunicorn.log") as service:
            health = lambda: requests.get(f"{service.url}/health", timeout=HANG).json()  # noqa: E731
            with soak.Posters(service.url, threads=4, body=BODY) as load:
                assert wait_for(lambda: len(load.outcomes) >= 20)
                assert private.exists(f"{prefix}forecast:DE")
                server.kill()
                server.wait(timeout=5)
                seen = len(load.outcomes)
                # Both workers notice (each /health pings Redis); requests keep being answered.
                assert wait_for(lambda: all(health()["status"] == "degraded" for _ in range(4)))
                assert health()["checks"]["redis"]["status"] == "down"
                assert wait_for(lambda: len(load.outcomes) >= seen + 40)

                server = start_redis(port, tmp_path)  # empty: the service must write to it again
                assert wait_for(lambda: all(health()["status"] == "ok" for _ in range(4)))
                assert wait_for(lambda: private.exists(f"{prefix}forecast:DE"))
                seen = len(load.outcomes)
                assert wait_for(lambda: len(load.outcomes) >= seen + 20)
            assert load.failures() == []
            assert len(load.outcomes) > 80
    finally:
        server.kill()
        server.wait(timeout=5)


@pytest.mark.slow
def test_redis_frozen_under_load_no_error_answers_and_health_says_degraded(stand_in, tmp_path):
    """Redis stops answering (SIGSTOP: connections hang, nothing is refused) while requests flow,
    with the rate limiter on it: every request is still answered 200 (the cache and the limiter
    fall back in-process), and /health says degraded, never waiting on the frozen Redis for more
    than its own short timeout (one wait a probe: tests/test_upstream_deadlines.py counts them;
    how long a probe takes is measured by bench/hung_dependencies.py). Without a timeout a probe
    would hang until SIGCONT, and fail here at HANG."""
    port = free_port()
    server = start_redis(port, tmp_path)
    prefix = f"rel-{uuid.uuid4().hex[:8]}:"
    env = {**em_env(stand_in.url, prefix), "REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "CACHE_TTL_SECONDS": "2", "RATE_LIMIT_ENABLED": "true",
           "RATE_LIMIT_DEFAULT": "1000000 per hour", "RATE_LIMIT_OPTIMIZE": "1000000 per minute",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    try:
        with GunicornProcess(env, workers=2, threads=4, log_path=tmp_path / "gunicorn.log") as service:
            with soak.Posters(service.url, threads=4, body=BODY) as load:
                assert wait_for(lambda: len(load.outcomes) >= 20)
                server.send_signal(signal.SIGSTOP)
                probes = []
                for _ in range(8):
                    answer = requests.get(f"{service.url}/health", timeout=HANG)
                    probes.append((answer.status_code, answer.json()["status"],
                                   answer.json()["checks"]["redis"]["status"]))
                    time.sleep(0.25)
                seen = len(load.outcomes)
                assert wait_for(lambda: len(load.outcomes) >= seen + 20)  # still answering
                server.send_signal(signal.SIGCONT)
                assert wait_for(lambda: requests.get(f"{service.url}/health", timeout=HANG).json()["status"] == "ok")
            assert load.failures() == []
        # The first probes may find the Redis connection's check still to come; from the third on,
        # both workers have met the frozen Redis.
        assert all(probe == (200, "degraded", "down") for probe in probes[2:]), probes
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait(timeout=5)


@pytest.mark.slow
def test_worker_killed_under_load_is_replaced_and_only_in_flight_requests_may_fail(
        stand_in, redis12, tmp_path):
    _, prefix = redis12
    env = {**em_env(stand_in.url, prefix), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    threads = 6
    with GunicornProcess(env, workers=2, threads=4, log_path=tmp_path / "gunicorn.log") as service:
        workers = service.worker_pids()
        assert len(workers) == 2
        with soak.Posters(service.url, threads=threads, body=BODY) as load:
            assert wait_for(lambda: len(load.outcomes) >= 30)
            os.kill(workers[0], signal.SIGKILL)
            assert wait_for(lambda: len(service.worker_pids()) == 2 and workers[0] not in service.worker_pids())
            seen = len(load.outcomes)
            assert wait_for(lambda: len(load.outcomes) >= seen + 50)
        replacement = set(service.worker_pids()) - set(workers)
        assert len(replacement) == 1
        failures = load.failures()
        # At most one in-flight request per client thread; and a failure is a dropped connection,
        # never an HTTP error answer.
        assert len(failures) <= threads, failures
        assert all(isinstance(f, str) for f in failures), failures


# The 60 s soak is bench/soak.py; CI runs the same load and checks for 10 s.
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "10"))


@pytest.mark.slow
def test_sustained_load_all_2xx_and_memory_stable(stand_in, redis12, tmp_path, record_property):
    """bench/soak.py for SOAK_SECONDS: 64 connections (48 posting one workload, 16 a batch of 5),
    every answer 2xx, no worker replaced, and no worker's resident memory growing past the bound."""
    _, prefix = redis12
    env = {**em_env(stand_in.url, prefix), "GUNICORN_MAX_REQUESTS": "0",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with GunicornProcess(env, workers=2, threads=4, log_path=tmp_path / "gunicorn.log") as service:
        result = soak.soak(service, SOAK_SECONDS)
    record_property("requests", result["answers"])
    record_property("max_worker_rss_growth_kib", result["max_growth_kib"])
    assert soak.problems(result) == []


@pytest.mark.slow
def test_200_concurrent_cold_requests_make_one_upstream_call(redis12, tmp_path):
    _, prefix = redis12
    with ElectricityMapsStandIn(delay=0.5) as slow:
        slow.responses["DE"] = (200, GOOD)
        env = {**em_env(slow.url, prefix, UPSTREAM_READ_TIMEOUT="5"),
               "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
        with GunicornProcess(env, workers=4, threads=8, log_path=tmp_path / "gunicorn.log") as service:
            with ThreadPoolExecutor(max_workers=200) as pool:
                statuses = list(pool.map(lambda _: requests.post(
                    f"{service.url}/api/v1/optimize", json=BODY, timeout=30).status_code, range(200)))
        assert statuses == [200] * 200
        assert slow.upstream_calls("forecast", "DE") == 1
