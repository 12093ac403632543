"""The HTTP contract: answers, defaults, and a JSON error with the right status for bad input."""

from datetime import datetime, timedelta

import pytest
import responses
from openapi_spec_validator import validate

from carbon_optimizer.web import request_models, response_models as schemas
from tests.conftest import FIXED_NOW
from devkit.electricitymaps_stand_in import hourly_forecast
from tests.support import best_start


def test_single_workload_scheduled_in_demo_mode(client):
    response = client.post("/api/v1/optimize", json={
        "id": "job-1", "duration": "PT2H", "zones": ["DE", "FR"], "max_delay": "PT12H", "power_kw": 3})
    assert response.status_code == 200
    body = response.get_json()
    schemas.ScheduledWorkload.model_validate(body)  # the documented shape, no extra fields
    assert body["id"] == "job-1" and body["status"] == "scheduled"
    assert body["zone"] in ("DE", "FR")
    start = datetime.fromisoformat(body["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(body["end"].replace("Z", "+00:00"))
    assert end - start == timedelta(hours=2)
    assert start.second == 0 and FIXED_NOW <= start <= FIXED_NOW + timedelta(hours=12)
    assert body["start_in_seconds"] == int((start - FIXED_NOW).total_seconds())
    assert body["baseline"]["zone"] == "DE" and body["baseline"]["start"] == "2026-11-23T10:18:00Z"
    assert body["carbon_intensity"] <= body["baseline"]["carbon_intensity"]
    assert body["emissions_grams"] == pytest.approx(body["carbon_intensity"] * 6, abs=0.01)
    assert body["saving_grams"] == pytest.approx(
        body["baseline_emissions_grams"] - body["emissions_grams"], abs=0.01)
    assert body["provenance"]["provider"] == "demo" and body["provenance"]["stale"] is False
    assert body["provenance"]["window_coverage"] == 1.0
    assert response.headers["Cache-Control"] == "no-store"


def test_batch_answers_each_workload_in_order(client):
    response = client.post("/api/v1/optimize", json={"workloads": [
        {"id": "a", "duration": 30, "zones": ["ES"]},
        {"id": "b", "duration": "PT1H", "zones": ["US-CAL-CISO"], "deadline": "2026-11-23T20:00:00Z"},
    ]})
    assert response.status_code == 200
    body = response.get_json()
    schemas.BatchResponse.model_validate(body)
    assert [r["id"] for r in body["results"]] == ["a", "b"]
    assert body["summary"]["scheduled"] == 2
    assert body["results"][1]["end"] <= "2026-11-23T20:00:00Z"


def test_batch_total_grams_is_null_unless_a_workload_gives_energy(client):
    # Without power_kw a single answer has no grams (null); the batch total must say the same,
    # not 0.0, which would read as "no saving".
    without = client.post("/api/v1/optimize", json={"workloads": [
        {"id": "a", "duration": 30, "zones": ["ES"]},
        {"id": "b", "duration": "PT1H", "zones": ["DE", "FR"]},
    ]}).get_json()
    assert [r["saving_grams"] for r in without["results"]] == [None, None]
    assert without["summary"]["saving_grams"] is None
    schemas.BatchResponse.model_validate(without)

    mixed = client.post("/api/v1/optimize", json={"workloads": [
        {"id": "a", "duration": 30, "zones": ["ES"]},
        {"id": "b", "duration": "PT1H", "zones": ["DE", "FR"], "power_kw": 2},
    ]}).get_json()
    a, b = mixed["results"]
    assert a["saving_grams"] is None and b["saving_grams"] is not None
    assert mixed["summary"]["saving_grams"] == pytest.approx(
        b["baseline_emissions_grams"] - b["emissions_grams"], abs=0.01)


def test_defaults_zone_and_window_from_configuration(make_app):
    client = make_app({"DEFAULT_ZONES": "ES", "DEFAULT_WINDOW_HOURS": "6"}).test_client()
    body = client.post("/api/v1/optimize", json={"duration": 60}).get_json()
    assert body["zone"] == "ES"
    assert body["end"] <= "2026-11-23T16:17:30Z"


def test_window_past_the_forecast_is_searched_where_covered_when_estimates_are_refused(client):
    # The demo forecast covers 72 h from 10:00; without estimates a 5-day window is searched only
    # where covered.
    body = client.post("/api/v1/optimize", json={"duration": "PT1H", "zones": ["ES"],
                                                 "max_delay": "P5D", "extend_horizon": False}).get_json()
    assert body["provenance"]["search_limited_by_horizon"] is True
    assert 0.5 < body["provenance"]["window_coverage"] < 0.7
    assert body["end"] <= body["provenance"]["forecast_end"]


def test_window_wholly_outside_forecast_is_422(client):
    # Beyond the forecast and the 14 days of estimates past it.
    response = client.post("/api/v1/optimize", json={
        "duration": 60, "zones": ["ES"], "earliest_start": "2027-06-01T00:00:00Z"})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "window_not_covered"
    # Just past the forecast: estimates by default, 422 when they are refused.
    past = {"duration": 60, "zones": ["ES"], "earliest_start": "2026-11-27T00:00:00Z"}
    assert client.post("/api/v1/optimize", json=past).get_json()["provenance"]["estimated"] is True
    refused = client.post("/api/v1/optimize", json={**past, "extend_horizon": False})
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "window_not_covered"


def test_unschedulable_item_does_not_lose_the_batch(client):
    body = client.post("/api/v1/optimize", json={"workloads": [
        {"id": "late", "duration": 60, "zones": ["ES"], "earliest_start": "2027-06-01T00:00:00Z"},
        {"id": "ok", "duration": 60, "zones": ["ES"]},
    ]}).get_json()
    assert [r["status"] for r in body["results"]] == ["unschedulable", "scheduled"]
    assert body["results"][0]["code"] == "window_not_covered"


def test_forecast_endpoint_serves_the_normalised_series(client):
    response = client.get("/api/v1/forecast?zone=ES")
    assert response.status_code == 200
    body = response.get_json()
    schemas.ForecastResponse.model_validate(body)
    assert body["zone"] == "ES" and body["step_seconds"] == 3600
    assert len(body["forecast"]) == 72
    assert body["forecast"][0]["datetime"] == "2026-11-23T10:00:00Z"
    assert body["provenance"]["provider"] == "demo"


def test_openapi_document_is_valid_and_matches_the_models(client):
    document = client.get("/api/v1/openapi.json").get_json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    workload = document["components"]["schemas"]["Workload"]
    assert set(workload["properties"]) == set(request_models.Workload.model_fields)
    assert document["components"]["schemas"]["WorkloadBatch"]["properties"]["workloads"]["maxItems"] == 500
    # /docs is Swagger UI rendering that document in the browser (tests/test_page_browser.py
    # checks the operations appear); here: the page loads the vendored renderer and its init script.
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b"/static/vendor/swagger-ui-dist-" in page.data and b"/static/docs.js" in page.data


def test_health_is_ok_in_demo_mode(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok"
    assert set(body["checks"]) >= {"redis", "provider", "last_successful_fetch"}


BAD_WORKLOADS = [
    ({}, "duration"),
    ({"duration": 0}, "duration"),
    ({"duration": -5}, "duration"),
    ({"duration": 10081}, "duration"),
    ({"duration": 10 ** 400}, "duration"),
    ({"duration": "PT30S"}, "duration"),
    ({"duration": "2 hours"}, "duration"),
    ({"duration": "P"}, "duration"),
    ({"duration": "PT"}, "duration"),
    ({"duration": "P99999999999999D"}, "duration"),
    ({"duration": True}, "duration"),
    ({"duration": 1.5}, "duration"),
    ({"duration": None}, "duration"),
    ({"duration": [60]}, "duration"),
    ({"duration": 60, "zones": []}, "zones"),
    ({"duration": 60, "zones": "DE"}, "zones"),
    ({"duration": 60, "zones": ["D E"]}, "zones[0]"),  # "de" is a near miss: tests/test_cloud_regions.py
    ({"duration": 60, "zones": ["DE", "DE"]}, "zones"),
    ({"duration": 60, "zones": ["../../etc"]}, "zones[0]"),
    ({"duration": 60, "earliest_start": "2026-11-23T10:00:00"}, "earliest_start"),
    ({"duration": 60, "earliest_start": "yesterday"}, "earliest_start"),
    ({"duration": 60, "earliest_start": "9999-12-31T23:59:00Z", "max_delay": "P30D"}, "max_delay"),
    ({"duration": 60, "deadline": "2026-11-23T10:30:00Z"}, "deadline"),
    ({"duration": 60, "deadline": "2026-11-24T00:00:00Z", "max_delay": "PT2H"}, "max_delay"),
    ({"duration": 60, "max_delay": 120}, "max_delay"),
    ({"duration": 60, "max_delay": "P40D"}, "max_delay"),
    ({"duration": 60, "power_kw": -1}, "power_kw"),
    ({"duration": 60, "power_kw": "NaN"}, "power_kw"),
    ({"duration": 60, "power_kw": 1, "energy_kwh": 2}, "energy_kwh"),
    ({"duration": 60, "id": "x" * 201}, "id"),
    ({"duration": 60, "unknown": 1}, "unknown"),
]


@pytest.mark.parametrize("workload,field", BAD_WORKLOADS)
def test_invalid_workload_is_400_with_the_field_named(client, workload, field):
    response = client.post("/api/v1/optimize", json=workload)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [d["field"] for d in error["details"]]
    batch = client.post("/api/v1/optimize", json={"workloads": [{"duration": 30}, workload]})
    assert batch.status_code == 400
    assert all(d["field"].startswith("workloads[1]") for d in batch.get_json()["error"]["details"])


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b"null", b"42", b'"text"', b"[" * 50_000 + b"]" * 50_000,
    b'{"workloads": "many"}', b'{"workloads": []}', b'{"workloads": [1, 2]}', b"\xff\xfe",
])
def test_malformed_bodies_are_400(client, body):
    response = client.post("/api/v1/optimize", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_batch_over_the_limit_is_400(make_app):
    client = make_app({"MAX_BATCH_SIZE": "3"}).test_client()
    response = client.post("/api/v1/optimize", json={"workloads": [{"duration": 30}] * 4})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"][0]["field"] == "workloads"


def test_status_codes_are_json(client, make_app):
    assert client.post("/api/v1/optimize", data="duration=60").status_code == 415
    assert client.post("/api/v1/optimize", data="{}", content_type="text/plain").status_code == 415
    not_found = client.get("/api/v1/nothing")
    assert not_found.status_code == 404 and not_found.get_json()["error"]["code"] == "not_found"
    wrong_method = client.get("/api/v1/optimize")
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["Allow"]
    assert wrong_method.get_json()["error"]["code"] == "method_not_allowed"
    small = make_app({"MAX_BODY_BYTES": "2048"}).test_client()
    too_big = small.post("/api/v1/optimize", json={"duration": 60, "id": "x" * 5000})
    assert too_big.status_code == 413 and too_big.get_json()["error"]["code"] == "payload_too_large"
    assert client.get("/api/v1/forecast").status_code == 400
    assert client.get("/api/v1/forecast?zone=<script>").status_code == 400


@pytest.mark.parametrize("zone, latest_start", [
    ("ES", None),  # the default window: a day from the (past) earliest start
    # PL's first hour is its cleanest: only a search that starts at now, not at the forecast start
    # (10:00), tells the two apart.
    ("PL", FIXED_NOW + timedelta(hours=2)),
])
def test_earliest_start_in_the_past_starts_now(client, zone, latest_start):
    past = FIXED_NOW - timedelta(hours=3)
    request = {"duration": 60, "zones": [zone], "earliest_start": past.isoformat()}
    if latest_start is not None:
        request["latest_start"] = latest_start.isoformat()
    body = client.post("/api/v1/optimize", json=request).get_json()
    points = client.get(f"/api/v1/forecast?zone={zone}").get_json()["forecast"]
    latest = latest_start or past + timedelta(hours=24) - timedelta(minutes=60)
    start, mean = best_start(points, 60, FIXED_NOW, latest)  # nothing before now
    assert body["start"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["start_in_seconds"] == int((start - FIXED_NOW).total_seconds())
    assert body["carbon_intensity"] == pytest.approx(mean, abs=1e-3)


def test_baseline_of_a_past_earliest_start_runs_now(client):
    past = (FIXED_NOW - timedelta(hours=3)).isoformat()
    body = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["ES"],
                                                 "earliest_start": past}).get_json()
    assert body["baseline"]["start"] == "2026-11-23T10:18:00Z"  # the first whole minute from now


def test_offsets_are_answered_in_utc(client):
    body = client.post("/api/v1/optimize", json={
        "duration": 60, "zones": ["ES"], "earliest_start": "2026-11-23T12:00:00+01:00",
        "latest_start": "2026-11-23T12:00:00+01:00"}).get_json()
    assert body["start"] == "2026-11-23T11:00:00Z" and body["end"] == "2026-11-23T12:00:00Z"


def test_a_window_that_has_passed_is_refused_with_its_times():
    from carbon_optimizer.web.request_models import Workload
    workload = Workload.model_validate({"duration": 60, "earliest_start": "2026-11-23T06:00:00Z",
                                        "latest_start": "2026-11-23T10:16:29Z"})
    with pytest.raises(ValueError, match=r"latest start \(2026-11-23T10:16:29Z\) has passed \(now is "
                                         r"2026-11-23T10:17:30Z\)"):
        workload.to_job(FIXED_NOW, ["DE"], timedelta(hours=24))
    # A minute's grace: a "start now" that took a moment to arrive still starts now.
    late = Workload.model_validate({"duration": 60, "earliest_start": "2026-11-23T10:16:31Z",
                                    "latest_start": "2026-11-23T10:16:31Z"})
    job = late.to_job(FIXED_NOW, ["DE"], timedelta(hours=24))
    assert job.earliest_start == job.latest_start == int(FIXED_NOW.timestamp())


@pytest.mark.parametrize("body, field", [
    ({"duration": 60, "earliest_start": "0001-01-01T00:00:00+14:00"}, "earliest_start"),
    ({"duration": 60, "earliest_start": "9999-12-31T23:00:00-14:00"}, "earliest_start"),
    ({"duration": 60, "deadline": "0001-01-01T00:30:00+14:00"}, "deadline"),
    ({"workloads": [{"duration": 60}, {"duration": 60, "earliest_start": "9999-12-31T23:00:00-14:00"}]},
     "workloads[1].earliest_start"),
])
def test_timestamps_at_the_ends_of_the_calendar_are_a_400_naming_the_field(client, body, field):
    answer = client.post("/api/v1/optimize", json=body)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["details"][0]["field"] == field


@responses.activate
def test_forecast_with_history_adds_the_providers_measurements_before_the_forecast(make_app):
    """history=true: the measurements as Electricity Maps sent them, a gap (null) held at the value
    before and flagged estimated, none where the forecast already speaks; without it, no history
    member at all."""
    base = "http://em.invalid/v3"
    hour = FIXED_NOW.replace(minute=0, second=0)
    responses.get(f"{base}/carbon-intensity/forecast", json=hourly_forecast("DE", hour, [300.0] * 24))
    # Four measured hours up to and including the forecast's first hour: 10 (hour - 3), a gap, 30,
    # and 40 at the hour the forecast starts (the forecast's own value wins there).
    responses.get(f"{base}/carbon-intensity/history", json={"zone": "DE", "history": [
        {"carbonIntensity": value, "datetime": (hour + timedelta(hours=k - 3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        for k, value in enumerate([10, None, 30, 40])]})
    client = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "FAKE-k",
                       "ELECTRICITY_MAPS_BASE_URL": base, "UPSTREAM_RETRIES": "0"}).test_client()
    plain = client.get("/api/v1/forecast?zone=DE").get_json()
    assert "history" not in plain
    body = client.get("/api/v1/forecast?zone=DE&history=true").get_json()
    schemas.ForecastResponse.model_validate(body)
    stamp = lambda k: (hour + timedelta(hours=k)).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    assert body["history"] == [{"datetime": stamp(-3), "carbon_intensity": 10.0, "estimated": False},
                               {"datetime": stamp(-2), "carbon_intensity": 10.0, "estimated": True},
                               {"datetime": stamp(-1), "carbon_intensity": 30.0, "estimated": False}]
    assert body["forecast"][0] == {"datetime": stamp(0), "carbon_intensity": 300.0, "estimated": False}
    for text in ("yes", "", "1", "True"):
        bad = client.get(f"/api/v1/forecast?zone=DE&history={text}")
        assert bad.status_code == 400
        assert bad.get_json()["error"]["details"] == [{"field": "history", "message": "true or false"}]


@responses.activate
def test_forecast_history_is_empty_when_the_provider_has_none(make_app):
    base = "http://em.invalid/v3"
    hour = FIXED_NOW.replace(minute=0, second=0)
    responses.get(f"{base}/carbon-intensity/forecast", json=hourly_forecast("DE", hour, [300.0] * 24))
    responses.get(f"{base}/carbon-intensity/history", status=502)
    client = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "FAKE-k",
                       "ELECTRICITY_MAPS_BASE_URL": base, "UPSTREAM_RETRIES": "0"}).test_client()
    answer = client.get("/api/v1/forecast?zone=DE&history=true")
    assert answer.status_code == 200 and answer.get_json()["history"] == []
