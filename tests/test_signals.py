"""A signal per request: the engine holds one feed per configured (provider, signal), a request's
`signal` picks the first feed serving it, one request never mixes signals, and every answer's
provenance names provider, signal and units. The providers here are local (the demo, and a
recorded series replayed as a marginal feed), so the routing is tested apart from any wire format;
tests/test_neso.py and tests/test_watttime.py drive the real providers' clients."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from carbon_optimizer.data.cache import ForecastCache
from carbon_optimizer.data.providers.demo import DemoProvider
from carbon_optimizer.data.providers.replay import ReplayProvider
from carbon_optimizer.engine import CarbonEngine
from carbon_optimizer.timeseries import ForecastSeries
from carbon_optimizer.web.app_state import app_state
from tests.conftest import FIXED_NOW


class MarginalReplay(ReplayProvider):
    """A recording replayed as a marginal signal (CO2 only, as WattTime states its rates)."""
    signal = "marginal"
    units = "gCO2/kWh"


def _cache() -> ForecastCache:
    return ForecastCache(redis_url=None, ttl=300, stale_ttl=3600, lock_seconds=5, failure_backoff=30)


def _marginal_series(zone: str, values: list[float]) -> ForecastSeries:
    start = FIXED_NOW.replace(minute=0, second=0) - timedelta(days=3)
    hours = 24 * 6
    return ForecastSeries(zone=zone, start=start, step_seconds=3600,
                          values=np.array([values[i % len(values)] for i in range(hours)], dtype=float),
                          provider="marginal-replay")


@pytest.fixture
def app(make_app):
    built = make_app()
    state = app_state(built)
    state.engine.close()
    marginal = MarginalReplay({"CAISO_NORTH": _marginal_series("CAISO_NORTH", [900, 400, 700]),
                               "DE": _marginal_series("DE", [800, 300, 600])},
                              forecast_hours=48, name="marginal-replay")
    engine = CarbonEngine(DemoProvider(), _cache(), more=[(marginal, _cache(), None)])
    state.engine = engine
    yield built
    engine.close()


def test_a_request_without_signal_is_answered_on_the_default_and_says_so(app):
    answer = app.test_client().post("/api/v1/optimize", json={"duration": "PT1H", "zones": ["DE"],
                                                              "max_delay": "PT6H"})
    assert answer.status_code == 200, answer.get_json()
    provenance = answer.get_json()["provenance"]
    assert (provenance["provider"], provenance["signal"], provenance["units"]) == ("demo", "average", "gCO2eq/kWh")


def test_signal_marginal_reads_the_marginal_feed_and_finds_its_cleanest_hour(app):
    start = FIXED_NOW + timedelta(minutes=13, seconds=17)  # off every grid
    answer = app.test_client().post("/api/v1/optimize", json={
        "duration": "PT37M", "zones": ["CAISO_NORTH"], "earliest_start": start.isoformat(),
        "max_delay": "PT5H", "signal": "marginal"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["provenance"]["provider"], body["provenance"]["signal"], body["provenance"]["units"]) == (
        "marginal-replay", "marginal", "gCO2/kWh")
    # The recording repeats 900, 400, 700 by the hour from a multiple of three hours: a 37-minute
    # run fits wholly inside a 400 hour, the cleanest, reached within 5 hours.
    assert body["carbon_intensity"] == pytest.approx(400)
    chosen = datetime.fromisoformat(body["start"].replace("Z", "+00:00"))
    series_start = FIXED_NOW.replace(minute=0, second=0) - timedelta(days=3)
    assert ((chosen - series_start) // timedelta(hours=1)) % 3 == 1


def test_a_signal_no_provider_serves_is_refused_naming_those_served(app):
    answer = app.test_client().post("/api/v1/optimize", json={"duration": "PT1H", "zones": ["DE"],
                                                              "signal": "average_direct"})
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_request"
    assert "average_direct" in error["message"] and "average (demo)" in error["message"] \
        and "marginal (marginal-replay)" in error["message"]
    assert error["details"] == [{"field": "signal", "message": "one of average, marginal"}]


def test_an_unknown_signal_name_is_refused_by_the_schema_naming_the_field(app):
    answer = app.test_client().post("/api/v1/optimize", json={"duration": "PT1H", "signal": "carbon"})
    assert answer.status_code == 400
    details = answer.get_json()["error"]["details"]
    assert details[0]["field"] == "signal" and "average" in details[0]["message"]


def test_a_batch_mixing_signals_is_refused_naming_the_workloads(app):
    answer = app.test_client().post("/api/v1/optimize", json={"workloads": [
        {"duration": "PT1H", "zones": ["DE"], "signal": "average"},
        {"duration": "PT1H", "zones": ["DE"], "signal": "marginal"}]})
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["message"] == "one request, one signal"
    assert [d["field"] for d in error["details"]] == ["workloads[0].signal", "workloads[1].signal"]
    assert "average and marginal" in error["details"][0]["message"]


def test_a_batch_signal_applies_to_every_workload_and_a_differing_one_is_refused(app):
    client = app.test_client()
    same = client.post("/api/v1/optimize", json={"signal": "marginal", "workloads": [
        {"duration": "PT1H", "zones": ["CAISO_NORTH"]}, {"duration": "PT2H", "zones": ["DE"]}]})
    assert same.status_code == 200, same.get_json()
    assert {w["provenance"]["signal"] for w in same.get_json()["results"]} == {"marginal"}
    other = client.post("/api/v1/optimize", json={"signal": "marginal", "workloads": [
        {"duration": "PT1H", "zones": ["DE"], "signal": "average"}]})
    assert other.status_code == 400
    assert other.get_json()["error"]["details"][0]["field"] == "workloads[0].signal"


def test_a_zone_served_only_under_another_signal_is_refused_saying_which(app):
    # No signal: the default (average, demo) has no CAISO_NORTH; the marginal feed has it.
    answer = app.test_client().post("/api/v1/optimize", json={"duration": "PT1H",
                                                              "zones": ["DE", "CAISO_NORTH"]})
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "zone_not_found"
    detail = answer.get_json()["error"]["details"][0]
    assert detail["field"] == "zones[1]"
    assert "served for marginal (marginal-replay)" in detail["message"]
    assert "\"signal\": \"marginal\"" in detail["message"]


def test_the_forecast_and_zones_follow_the_signal_asked(app):
    client = app.test_client()
    forecast = client.get("/api/v1/forecast?zone=CAISO_NORTH&signal=marginal")
    assert forecast.status_code == 200, forecast.get_json()
    body = forecast.get_json()
    assert body["provenance"]["signal"] == "marginal" and body["provenance"]["units"] == "gCO2/kWh"
    assert {p["carbon_intensity"] for p in body["forecast"]} <= {900, 400, 700}
    assert client.get("/api/v1/forecast?zone=CAISO_NORTH").get_json()["error"]["code"] == "zone_not_found"
    wrong = client.get("/api/v1/forecast?zone=DE&signal=lifecycle")
    assert wrong.status_code == 400 and wrong.get_json()["error"]["details"][0]["field"] == "signal"

    zones = client.get("/api/v1/zones?signal=marginal").get_json()
    assert zones["signal"] == "marginal" and zones["provider"] == "marginal-replay"
    assert zones["zones"] == ["CAISO_NORTH", "DE"]
    assert [(s["name"], s["provider"], s["default"]) for s in zones["signals"]] == [
        ("average", "demo", True), ("marginal", "marginal-replay", False)]


def test_each_feed_has_its_own_cache_namespace(app):
    from carbon_optimizer.engine import _namespace
    assert _namespace(MarginalReplay({}, name="marginal-replay")) == "marginal-replay.marginal:"


def test_the_openapi_document_lists_the_signals(app):
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    text = str(document)
    assert "average_direct" in text and "marginal" in text
