"""A dependency down degrades the service; it does not fail requests or crash it."""

from datetime import datetime, timezone

import responses

from carbon_optimizer.ops.metrics import STALE_SERVES

from tests.conftest import FIXED_NOW
from tests.support import free_port, hourly_forecast

BASE = "https://api.electricitymaps.test/v3"


@responses.activate
def test_redis_down_serves_from_memory_and_health_says_degraded(make_app):
    start = FIXED_NOW.replace(minute=0, second=0)
    responses.get(f"{BASE}/carbon-intensity/forecast", json=hourly_forecast("DE", start, [300, 200, 100] * 16))
    app = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "k",
                    "ELECTRICITY_MAPS_BASE_URL": BASE, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                    "UPSTREAM_RETRIES": "0"})
    client = app.test_client()
    for _ in range(3):
        answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]})
        assert answer.status_code == 200
    assert len(responses.calls) == 1  # the in-process cache took over
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded" and body["checks"]["redis"]["status"] == "down"
    assert "carbon_redis_up 0.0" in client.get("/metrics").get_data(as_text=True)


@responses.activate
def test_provider_down_serves_stale_then_recovers(make_app):
    start = FIXED_NOW.replace(minute=0, second=0)
    clock = {"now": FIXED_NOW}
    responses.get(f"{BASE}/carbon-intensity/forecast", json=hourly_forecast("DE", start, [300.0] * 48))
    app = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "k",
                    "ELECTRICITY_MAPS_BASE_URL": BASE, "UPSTREAM_RETRIES": "0", "CACHE_TTL_SECONDS": "60",
                    "UPSTREAM_FAILURE_BACKOFF_SECONDS": "0"}, clock=lambda: clock["now"])
    client = app.test_client()
    assert client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]}).status_code == 200
    responses.replace(responses.GET, f"{BASE}/carbon-intensity/forecast", status=502)
    cache = app.extensions["carbon_engine"].cache
    cache._clock = lambda: datetime.now(timezone.utc).timestamp() + 3600  # the copy is an hour old
    served_before = STALE_SERVES.labels("DE")._value.get()
    stale = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]})
    assert stale.status_code == 200 and stale.get_json()["provenance"]["stale"] is True
    assert client.get("/health").get_json()["checks"]["provider"]["status"] == "failing"
    assert STALE_SERVES.labels("DE")._value.get() == served_before + 1
    assert "carbon_stale_forecasts_served_total" in client.get("/metrics").get_data(as_text=True)
    responses.replace(responses.GET, f"{BASE}/carbon-intensity/forecast",
                      json=hourly_forecast("DE", start, [250.0] * 48))
    fresh = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]}).get_json()
    assert fresh["provenance"]["stale"] is False and fresh["carbon_intensity"] == 250.0
    assert client.get("/health").get_json()["status"] == "ok"
