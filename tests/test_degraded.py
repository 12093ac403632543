"""A dependency down degrades the service; it does not fail requests or crash it."""

from datetime import timedelta

import responses

from prometheus_client import REGISTRY

from carbon_optimizer.web.app_state import app_state

from tests.conftest import FIXED_NOW
from devkit.electricitymaps_stand_in import electricitymaps_zones, hourly_forecast
from devkit.ports import free_port
from devkit.waiting import wait_for

BASE = "https://api.electricitymaps.test/v3"



def stale_serves(zone: str) -> float:
    # Read as Prometheus collects it (the default registry holds the service's metrics).
    return REGISTRY.get_sample_value("carbon_stale_forecasts_served_total", {"zone": zone}) or 0.0

def forecast_calls() -> int:
    return sum("/carbon-intensity/forecast" in call.request.url for call in responses.calls)


class Clock:
    """The app's "now" and the cache's wall and monotonic clocks, advanced together by the test."""

    def __init__(self):
        self.now = FIXED_NOW
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds

    def attach(self, app) -> None:
        cache = app_state(app).engine.cache
        cache.clock = lambda: self.now.timestamp()
        cache.monotonic = lambda: self.mono


@responses.activate
def test_redis_down_serves_from_memory_and_health_says_degraded(make_app):
    start = FIXED_NOW.replace(minute=0, second=0)
    responses.get(f"{BASE}/carbon-intensity/forecast", json=hourly_forecast("DE", start, [300, 200, 100] * 16))
    responses.get(f"{BASE}/zones", json=electricitymaps_zones())
    clock = Clock()
    app = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "k",
                    "ELECTRICITY_MAPS_BASE_URL": BASE, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                    "UPSTREAM_RETRIES": "0"}, clock=lambda: clock.now)
    clock.attach(app)
    client = app.test_client()
    for _ in range(3):
        answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]})
        assert answer.status_code == 200
        clock.advance(10)  # past the Redis retry interval: Redis is tried again, still down
    assert forecast_calls() == 1  # the in-process cache took over
    assert len(responses.calls) == 2  # and kept the zone list too
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded" and body["checks"]["redis"]["status"] == "down"
    assert "carbon_redis_up 0.0" in client.get("/metrics").get_data(as_text=True)


@responses.activate
def test_provider_down_serves_stale_then_recovers(make_app):
    start = FIXED_NOW.replace(minute=0, second=0)
    clock = Clock()
    responses.get(f"{BASE}/carbon-intensity/forecast", json=hourly_forecast("DE", start, [300.0] * 48))
    responses.get(f"{BASE}/zones", json=electricitymaps_zones())
    app = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "k",
                    "ELECTRICITY_MAPS_BASE_URL": BASE, "UPSTREAM_RETRIES": "0", "CACHE_TTL_SECONDS": "60",
                    "UPSTREAM_FAILURE_BACKOFF_SECONDS": "30"}, clock=lambda: clock.now)
    clock.attach(app)
    client = app.test_client()
    assert client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]}).status_code == 200
    responses.replace(responses.GET, f"{BASE}/carbon-intensity/forecast", status=502)
    clock.advance(3600)  # the copy is an hour old
    served_before = stale_serves("DE")
    stale = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]})
    # Served at once from the copy; the refresh (which fails) runs in the background.
    assert stale.status_code == 200 and stale.get_json()["provenance"]["stale"] is True
    assert wait_for(lambda: client.get("/health").get_json()["checks"]["provider"]["status"] == "failing")
    assert stale_serves("DE") == served_before + 1
    assert "carbon_stale_forecasts_served_total" in client.get("/metrics").get_data(as_text=True)
    responses.replace(responses.GET, f"{BASE}/carbon-intensity/forecast",
                      json=hourly_forecast("DE", start, [250.0] * 48))
    # Within the failure backoff the provider is not asked again, even though it has recovered.
    clock.advance(29)
    assert client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]}).get_json()[
        "provenance"]["stale"] is True
    assert forecast_calls() == 2
    clock.advance(1)
    # The backoff is over: this request still gets the copy and starts the refresh, which the
    # next requests see once it has landed.
    assert client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]}).get_json()[
        "provenance"]["stale"] is True
    assert wait_for(lambda: forecast_calls() == 3)
    assert wait_for(lambda: not client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]})
                      .get_json()["provenance"]["stale"])
    fresh = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]}).get_json()
    assert fresh["provenance"]["stale"] is False and fresh["carbon_intensity"] == 250.0
    assert forecast_calls() == 3
    assert client.get("/health").get_json()["status"] == "ok"
