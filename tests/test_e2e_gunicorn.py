"""End to end: Gunicorn with two workers, the real Redis, and an Electricity Maps stand-in."""

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import requests

from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast
from devkit.redis_server import delete_keys
from devkit.service_process import GunicornProcess
from tests.support import TEST_REDIS_URL

pytestmark = pytest.mark.slow


@pytest.fixture
def stand_in():
    with ElectricityMapsStandIn(delay=0.5) as server:
        start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        values = [400 - 5 * i for i in range(24)] + [100] * 3 + [380] * 45
        server.responses["DE"] = (200, hourly_forecast("DE", start, values))
        server.responses["FR"] = (200, hourly_forecast("FR", start, [90.0] * 72))
        yield server


@pytest.fixture
def service(stand_in, redis_client, tmp_path):
    prefix = f"e2e-{uuid.uuid4().hex[:8]}:"
    env = {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "e2e-test-key",
           "ELECTRICITY_MAPS_BASE_URL": stand_in.url, "REDIS_URL": TEST_REDIS_URL,
           "CACHE_KEY_PREFIX": prefix, "UPSTREAM_RETRIES": "0",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    try:
        with GunicornProcess(env, workers=2, threads=8, log_path=tmp_path / "gunicorn.log") as process:
            yield process
    finally:
        delete_keys(redis_client, prefix)


def metric_total(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_optimize_health_single_flight_and_metrics(service, stand_in, tmp_path):
    # 50 concurrent cold requests for one zone: one upstream call in all, across both workers.
    body = {"duration": "PT3H", "zones": ["DE"], "max_delay": "PT40H", "energy_kwh": 10}
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: requests.post(f"{service.url}/api/v1/optimize", json=body,
                                                        timeout=30), range(50)))
    assert [a.status_code for a in answers] == [200] * 50
    assert stand_in.upstream_calls("forecast", "DE") == 1
    assert stand_in.tokens_seen == {"e2e-test-key"}

    result = answers[0].json()
    # The 100 g plateau runs from hour 24 to 27 after the forecast start: exactly 3 hours.
    assert result["carbon_intensity"] == 100.0
    assert result["start"].endswith(":00:00Z")
    assert result["provenance"]["provider"] == "electricitymaps"
    assert result["provenance"]["stale"] is False
    assert result["saving_grams"] > 0

    # A second zone in a batch: one more upstream call, for FR only.
    batch = requests.post(f"{service.url}/api/v1/optimize", json={"workloads": [
        {"duration": 60, "zones": ["DE", "FR"]}, {"duration": 60, "zones": ["FR"]}]}, timeout=30)
    assert batch.status_code == 200
    assert [r["zone"] for r in batch.json()["results"]] == ["FR", "FR"]
    assert stand_in.upstream_calls("forecast", "FR") == 1

    health = requests.get(f"{service.url}/health", timeout=5).json()
    assert health["status"] == "ok"
    assert health["checks"]["redis"]["status"] == "ok"
    assert health["checks"]["last_successful_fetch"]["at"] is not None

    # One scrape sees the requests of both workers: each worker wrote its own metrics file.
    for _ in range(20):
        requests.get(f"{service.url}/health", timeout=5)
    text = requests.get(f"{service.url}/metrics", timeout=5).text
    served = metric_total(text, "flask_http_request_total", status="200")
    assert served >= 50 + 1 + 21
    files = [p.name for p in (tmp_path / "metrics").iterdir()]
    pids = {int(m.group(1)) for name in files if (m := re.search(r"_(\d+)\.db$", name))}
    assert len(pids & set(service.worker_pids())) == 2
    assert metric_total(text, "carbon_upstream_calls_total", endpoint="carbon-intensity/forecast",
                        outcome="200") == 2
    # The zone list, which every request is checked against: also one call in all.
    assert metric_total(text, "carbon_upstream_calls_total", endpoint="zones", outcome="200") == 1
    assert metric_total(text, "carbon_grams_co2eq_avoided_total") > 0
    assert metric_total(text, "carbon_forecast_cache_total", result="miss") == 2


def test_upstream_failure_without_a_copy_is_503_with_retry_after(service, stand_in):
    stand_in.responses["PL"] = (500, {"message": "upstream broken"})
    answer = requests.post(f"{service.url}/api/v1/optimize", json={"duration": 60, "zones": ["PL"]},
                           timeout=30)
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["error"]["code"] == "upstream_unavailable"
    assert "PL" in answer.json()["error"]["message"]
    health = requests.get(f"{service.url}/health", timeout=5).json()
    assert health["status"] == "degraded" and health["checks"]["provider"]["status"] == "failing"
    unknown = requests.post(f"{service.url}/api/v1/optimize", json={"duration": 60, "zones": ["XX"]},
                            timeout=30)
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "zone_not_found"
    # Not among the zones Electricity Maps lists (/v3/zones, from the stand-in): refused up front.
    missing = requests.get(f"{service.url}/api/v1/forecast?zone=XX", timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["details"][0]["field"] == "zone"
    assert stand_in.upstream_calls("forecast", "XX") == 0


def test_start_in_seconds_lets_a_ci_job_sleep(service):
    earliest = datetime.now(timezone.utc) + timedelta(minutes=10)
    answer = requests.post(f"{service.url}/api/v1/optimize", json={
        "duration": 60, "zones": ["FR"], "earliest_start": earliest.isoformat()}, timeout=30).json()
    # A flat forecast: the earliest whole minute at or after earliest_start wins.
    assert 540 <= answer["start_in_seconds"] <= 660
