"""A slow or hung Electricity Maps never holds a request past its deadline (issue 11).

Each upstream call has a total budget (attempts, reads and backoff together), a request's zones
are fetched at once under one deadline, an expired copy is served at once while one refresher
(across workers) fetches the new one, and /health answers fast with Redis frozen. The provider
is a local stand-in speaking Electricity Maps' wire format; Redis is the machine's.
"""

from __future__ import annotations

import socket
import time

import pytest

from carbon_optimizer.data.providers.base import UpstreamUnavailable
from carbon_optimizer.data.providers.electricitymaps import ElectricityMapsProvider
from tests.conftest import FIXED_NOW
from tests.support import ElectricityMapsStandIn, free_port, hourly_forecast, wait_for

REDIS_URL = "redis://127.0.0.1:6379/15"
START = FIXED_NOW.replace(minute=0, second=0)
ZONES = ["DE", "FR", "NL", "BE", "PL", "AT", "CH", "CZ"]


def forecast(zone: str, level: float = 200.0) -> tuple[int, dict]:
    return 200, hourly_forecast(zone, START, [level + (i % 24) * 5 for i in range(72)])


def em_env(url: str, prefix: str, **extra: str) -> dict:
    return {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "test-key",
            "ELECTRICITY_MAPS_BASE_URL": url, "REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": prefix,
            **extra}


def optimize(client, zones, **extra):
    started = time.monotonic()
    answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": zones,
                                                   "max_delay": "PT12H", **extra})
    return answer, time.monotonic() - started


# -- one upstream call has a total budget ---------------------------------------------------------

@pytest.mark.parametrize("fault", ["slow_answer", "trickled_body", "trickled_head",
                                   "failing_with_retries"])
def test_one_upstream_call_stops_at_its_total_budget(fault):
    """Per-read timeouts and retries alone would let each of these run for seconds (the slow answer
    and the trickles are each under the 10 s read timeout; five retries with backoff take ~8 s)."""
    stand_in = {"slow_answer": ElectricityMapsStandIn(delay=3.0),
                "trickled_body": ElectricityMapsStandIn(trickle=0.05),
                "trickled_head": ElectricityMapsStandIn(trickle=0.05),
                "failing_with_retries": ElectricityMapsStandIn()}[fault]
    stand_in.trickle_head = fault == "trickled_head"
    with stand_in:
        stand_in.responses["DE"] = (503, {"status": "error"}) if fault == "failing_with_retries" \
            else forecast("DE")
        provider = ElectricityMapsProvider(stand_in.url, lambda: "test-key", read_timeout=10.0,
                                           retries=5, call_seconds=0.6)
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable, match="zone DE"):
            provider.forecast("DE", FIXED_NOW)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"{fault}: one call took {elapsed:.2f} s with a 0.6 s budget"
    if fault == "failing_with_retries":
        assert stand_in.upstream_calls() >= 2  # it did retry, within the budget


def test_a_prompt_provider_is_unaffected_by_the_budget():
    with ElectricityMapsStandIn() as stand_in:
        stand_in.responses["DE"] = forecast("DE")
        provider = ElectricityMapsProvider(stand_in.url, lambda: "test-key", call_seconds=0.6)
        assert len(provider.forecast("DE", FIXED_NOW).values) == 72


# -- a request's zones: fetched at once, under one deadline ----------------------------------------

def test_a_requests_zones_are_fetched_concurrently(make_app, redis_prefix):
    with ElectricityMapsStandIn(delay=0.3) as stand_in:
        for i, zone in enumerate(ZONES):
            stand_in.responses[zone] = forecast(zone, 100.0 + 20 * i)
        app = make_app(em_env(stand_in.url, redis_prefix, UPSTREAM_CONCURRENCY="8"))
        answer, _ = optimize(app.test_client(), ZONES)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["zone"] == "DE"  # the cleanest profile, so every zone was seen
    # One after another, the stand-in would never have had two calls in flight.
    assert stand_in.most_in_flight >= 4


def test_a_hung_zone_fails_at_the_request_deadline_and_the_others_are_used(make_app, redis_prefix):
    """The request waits 0.5 s for its data; the call itself may go on (1 s) in the background."""
    with ElectricityMapsStandIn() as stand_in:
        stand_in.responses["FR"] = forecast("FR")
        stand_in.responses["DE"] = forecast("DE", 50.0)
        stand_in.zone_delay["DE"] = 4.0
        env = em_env(stand_in.url, redis_prefix, UPSTREAM_DEADLINE_SECONDS="0.5",
                     UPSTREAM_CALL_SECONDS="1", UPSTREAM_READ_TIMEOUT="10")
        client = make_app(env).test_client()
        answer, elapsed = optimize(client, ["DE", "FR"])
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["zone"] == "FR"
        assert elapsed < 1.5, f"answered after {elapsed:.2f} s with a 0.5 s deadline"
        alone, elapsed = optimize(client, ["DE"])
        assert alone.status_code == 503 and elapsed < 1.5
        assert "0.5 s deadline" in alone.get_json()["error"]["message"]
        assert alone.headers.get("Retry-After")


# -- stale while revalidate, one refresher across workers -------------------------------------------

def test_an_expired_copy_is_served_at_once_and_refreshed_once_across_workers(make_app, redis_prefix):
    with ElectricityMapsStandIn() as stand_in:
        stand_in.responses["DE"] = forecast("DE", 300.0)
        env = em_env(stand_in.url, redis_prefix, CACHE_TTL_SECONDS="60")
        workers = [make_app(env) for _ in range(3)]  # three Gunicorn workers sharing Redis
        assert optimize(workers[0].test_client(), ["DE"])[0].status_code == 200
        assert stand_in.upstream_calls() == 1
        # An hour later the provider has become slow (and has a new forecast).
        for app in workers:
            app.extensions["carbon_engine"].cache.clock = lambda: time.time() + 3600
        stand_in.delay = 1.5
        stand_in.responses["DE"] = forecast("DE", 100.0)
        for app in workers:
            answer, elapsed = optimize(app.test_client(), ["DE"])
            body = answer.get_json()
            assert answer.status_code == 200 and body["provenance"]["stale"] is True
            assert body["carbon_intensity"] >= 300
            assert elapsed < 1.0, f"waited {elapsed:.2f} s for a slow provider with a copy at hand"
        # One refresher for all three workers; its answer is then everyone's.
        assert wait_for(lambda: all(
            not optimize(app.test_client(), ["DE"])[0].get_json()["provenance"]["stale"]
            for app in workers), seconds=5)
        assert stand_in.upstream_calls() == 2
        fresh = optimize(workers[2].test_client(), ["DE"])[0].get_json()
        assert fresh["carbon_intensity"] < 300


# -- /health with Redis frozen ------------------------------------------------------------------------

@pytest.fixture
def frozen_redis():
    """A TCP port that accepts connections and never answers: a Redis that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", free_port()))
    server.listen(64)  # the kernel completes connections; nobody ever reads or answers
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


def test_health_answers_fast_and_degraded_when_redis_hangs(make_app, frozen_redis):
    app = make_app({"REDIS_URL": frozen_redis, "RATE_LIMIT_ENABLED": "true", "API_KEYS": "k1"})
    client = app.test_client()
    for _ in range(3):
        started = time.monotonic()
        answer = client.get("/health")
        elapsed = time.monotonic() - started
        assert answer.status_code == 200
        body = answer.get_json()
        assert body["status"] == "degraded" and body["checks"]["redis"]["status"] == "down"
        assert body["checks"]["rate_limit"]["status"] == "fallback"
        # An ALB probe's timeout is a few seconds; before this, two 0.5 s Redis timeouts in a row.
        assert elapsed < 0.5, f"/health took {elapsed:.2f} s with Redis hanging"
    answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]},
                         headers={"X-API-Key": "k1"})
    assert answer.status_code == 200  # the limiter and the cache fall back; nothing is a 500


def test_health_is_ok_with_a_live_redis(make_app, redis_prefix):
    app = make_app({"REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": redis_prefix,
                    "RATE_LIMIT_ENABLED": "true"})
    body = app.test_client().get("/health").get_json()
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["rate_limit"] == {"status": "ok", "storage": "redis"}
    assert body["status"] == "ok"


def test_stale_copies_have_a_date(make_app, redis_prefix):
    """The copy served while refreshing says when it was fetched (the client can judge its age)."""
    with ElectricityMapsStandIn() as stand_in:
        stand_in.responses["DE"] = forecast("DE")
        app = make_app(em_env(stand_in.url, redis_prefix, CACHE_TTL_SECONDS="60"))
        optimize(app.test_client(), ["DE"])
        app.extensions["carbon_engine"].cache.clock = lambda: time.time() + 7200
        body = optimize(app.test_client(), ["DE"])[0].get_json()
    assert body["provenance"]["stale"] is True and body["provenance"]["fetched_at"]
