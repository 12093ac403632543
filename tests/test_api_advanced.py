"""Through the Flask test client on the demo provider: chunks, estimates past the horizon, capacity."""

from datetime import datetime, timedelta

import numpy as np
import pytest

from carbon_optimizer.web import response_models as schemas
from carbon_optimizer.scheduling.chunks import best_chunks
from carbon_optimizer.data.providers.demo import DemoProvider
from tests.conftest import FIXED_NOW
from tests.support import best_start
from carbon_optimizer.timeseries import to_epoch


def parse(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_interruptible_workload_gets_optimal_chunks(client):
    body = client.post("/api/v1/optimize", json={
        "duration": "PT6H", "zones": ["ES"], "max_delay": "PT42H", "interruptible": True,
        "min_chunk": "PT2H", "max_chunks": 3, "power_kw": 2}).get_json()
    schemas.ScheduledWorkload.model_validate(body)
    chunks = body["chunks"]
    assert 1 <= len(chunks) <= 3
    assert sum(c["duration_minutes"] for c in chunks) == 360
    assert all(c["duration_minutes"] >= 120 for c in chunks)
    assert parse(chunks[0]["start"]) >= FIXED_NOW
    assert parse(chunks[-1]["end"]) <= FIXED_NOW + timedelta(hours=48)
    # The same answer as the pure search on the demo forecast the app used.
    series = DemoProvider().forecast("ES", FIXED_NOW)
    plan = best_chunks(series.boundaries(), series.values, 6 * 3600, to_epoch(FIXED_NOW),
                       to_epoch(FIXED_NOW) + 48 * 3600, 2 * 3600, 3)
    assert body["carbon_intensity"] == pytest.approx(plan.mean_intensity, abs=1e-3)
    assert body["emissions_grams"] == pytest.approx(plan.mean_intensity * 12, abs=0.01)
    # Never worse than the best uninterrupted run.
    whole = client.post("/api/v1/optimize", json={
        "duration": "PT6H", "zones": ["ES"], "max_delay": "PT42H"}).get_json()
    assert body["carbon_intensity"] <= whole["carbon_intensity"] + 1e-6


def test_chunk_fields_need_interruptible(client):
    response = client.post("/api/v1/optimize", json={"duration": 60, "min_chunk": 30})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_window_past_the_forecast_is_searched_on_estimates_by_default(client):
    # The demo forecast covers 72 h; a 6-day window is searched on estimates beyond it.
    body = client.post("/api/v1/optimize", json={
        "duration": "PT1H", "zones": ["ES"], "max_delay": "P6D"}).get_json()
    schemas.ScheduledWorkload.model_validate(body)
    provenance = body["provenance"]
    assert provenance["search_limited_by_horizon"] is False
    forecast_end = parse(provenance["forecast_end"])
    assert forecast_end == parse("2026-11-26T10:00:00Z")
    # Reference: a brute force over the series GET /forecast?hours= reports (forecast + estimates).
    points = client.get("/api/v1/forecast?zone=ES&hours=146").get_json()["forecast"]
    start, mean = best_start(points, 60, FIXED_NOW, FIXED_NOW + timedelta(days=6))
    # Estimated from the zone's own recent days, nothing past the forecast beats its best hour here.
    assert start < forecast_end
    assert parse(body["start"]) == start and parse(body["end"]) == start + timedelta(hours=1)
    assert body["carbon_intensity"] == pytest.approx(mean, abs=1e-3)
    assert provenance["estimated"] is False and provenance["estimated_part"] is None


def test_estimates_are_flagged_when_the_window_lies_past_the_forecast(client):
    body = client.post("/api/v1/optimize", json={
        "duration": "PT2H", "zones": ["US-CAL-CISO"], "earliest_start": "2026-11-27T00:00:00Z",
        "deadline": "2026-11-28T00:00:00Z", "extend_horizon": True}).get_json()
    provenance = body["provenance"]
    assert provenance["estimated"] is True
    part = provenance["estimated_part"]
    assert (part["start"], part["minutes"], part["share"]) == (body["start"], 120, 1.0)
    # Nothing inside the forecast to compare with: the estimates' stated error is reported, a
    # quantile at the coverage it states.
    assert part["expected_error"] > 0 and part["error_coverage"] == 0.9
    # The forecast reaches 71 h 42 m 30 s past now; asking again at end minus that (rounded up to
    # the hour step) finds the window inside a real forecast.
    horizon = parse(provenance["forecast_end"]) - FIXED_NOW
    earliest_replan = parse(body["end"]) - horizon
    replan = parse(provenance["replan_at"])
    assert earliest_replan <= replan < earliest_replan + timedelta(hours=1)
    assert replan.minute == 0 and replan.second == 0


def test_capacity_batch_is_placed_jointly_and_overflow_reported(client):
    workloads = [{"id": f"w{i}", "duration": "PT2H", "zones": ["ES"], "max_delay": "PT6H",
                  "power_kw": 5} for i in range(4)]
    workloads.append({"id": "late", "duration": "PT2H", "zones": ["ES"],
                      "earliest_start": "2027-06-01T00:00:00Z"})
    response = client.post("/api/v1/optimize", json={
        "workloads": workloads, "capacity": {"max_concurrent": {"ES": 1}, "max_power_kw": {"ES": 8}}})
    assert response.status_code == 200
    body = response.get_json()
    schemas.BatchResponse.model_validate(body)
    results = {r["id"]: r for r in body["results"]}
    assert results["late"]["code"] == "window_not_covered"
    spans = [(parse(r["start"]), parse(r["end"])) for r in body["results"] if r["status"] == "scheduled"]
    for start, end in spans:
        assert start.second == 0 and FIXED_NOW <= start <= FIXED_NOW + timedelta(hours=6)
        assert end - start == timedelta(hours=2)
    # Brute force of the limits: at every minute of the window, at most one runs and at most 8 kW.
    first_minute = FIXED_NOW.replace(second=0)
    for m in range(9 * 60):
        moment = first_minute + timedelta(minutes=m)
        running = sum(start <= moment < end for start, end in spans)
        assert running <= 1 and 5 * running <= 8, moment
    # Starts are whole minutes from 10:18, runs end by 18:17:30 (6 h delay + 2 h): 7 h 59 min of
    # room holds three 2 h runs one after another, not four.
    room = FIXED_NOW + timedelta(hours=8) - (first_minute + timedelta(minutes=1))
    assert len(spans) == room // timedelta(hours=2) == 3
    assert [r["id"] for r in body["results"] if r.get("code") == "capacity_exceeded"] in (["w0"], ["w1"], ["w2"], ["w3"])


def test_capacity_too_small_for_power(client):
    body = client.post("/api/v1/optimize", json={
        "workloads": [{"id": "big", "duration": 60, "zones": ["ES"], "power_kw": 50},
                      {"id": "small", "duration": 60, "zones": ["ES"], "power_kw": 1}],
        "capacity": {"max_power_kw": {"ES": 10}}}).get_json()
    results = {r["id"]: r for r in body["results"]}
    assert results["big"]["status"] == "unschedulable" and results["big"]["code"] == "capacity_exceeded"
    assert results["small"]["status"] == "scheduled"


def resolve(document, schema):
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def schema_paths(document, schema, prefix="", depth=0):
    """Every property path a schema documents ("provenance.replan_at", "results[].chunks[].start"),
    following $ref, anyOf/oneOf/allOf and array items."""
    if depth > 12:
        return set()
    if "$ref" in schema:
        return schema_paths(document, resolve(document, schema), prefix, depth + 1)
    found = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            found |= schema_paths(document, option, prefix, depth + 1)
    if "items" in schema:
        found |= schema_paths(document, schema["items"], prefix + "[]", depth + 1)
    for name, child in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        found |= {path} | schema_paths(document, child, path, depth + 1)
    return found


def test_openapi_documents_the_new_fields(client):
    document = client.get("/api/v1/openapi.json").get_json()
    operation = document["paths"]["/api/v1/optimize"]["post"]
    request = schema_paths(document, operation["requestBody"]["content"]["application/json"]["schema"])
    answer = schema_paths(document, operation["responses"]["200"]["content"]["application/json"]["schema"])
    for field in ("interruptible", "min_chunk", "max_chunks", "extend_horizon"):
        assert field in request and f"workloads[].{field}" in request, field
    assert {"capacity.max_concurrent", "capacity.max_power_kw"} <= request
    # The fields the answers carry, where they carry them: a single answer and each batch result.
    for prefix in ("", "results[]."):
        for field in ("chunks[].start", "chunks[].end", "chunks[].duration_minutes", "unavailable_zones",
                      "provenance.estimated", "provenance.estimated_part.start",
                      "provenance.estimated_part.minutes", "provenance.estimated_part.expected_error",
                      "provenance.estimated_part.error_coverage",
                      "provenance.estimated_part.estimator", "provenance.replan_at"):
            assert prefix + field in answer, prefix + field
    # Each kind of batch result, scheduled or not, names the zones that had no data.
    batch = next(resolve(document, option) for option in
                 resolve(document, operation["responses"]["200"]["content"]["application/json"]["schema"])["oneOf"]
                 if "results" in resolve(document, option)["properties"])
    kinds = resolve(document, batch["properties"]["results"]["items"])
    kinds = kinds.get("oneOf") or kinds.get("anyOf")
    assert len(kinds) == 2
    for kind in kinds:
        assert "unavailable_zones" in schema_paths(document, kind)


def test_an_interruptible_search_too_large_to_be_exact_is_a_422(client):
    # A 6-day-and-1-minute job in 2-hour chunks: a 1-minute grid over 17 days is refused, not slowed.
    response = client.post("/api/v1/optimize", json={
        "duration": 6 * 24 * 60 + 1, "zones": ["ES"], "max_delay": "P20D", "interruptible": True,
        "min_chunk": "PT2H", "extend_horizon": True})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "too_large"


def test_the_forecast_endpoint_shows_the_estimates_a_search_uses(client):
    """GET /forecast?hours= reports the extended series; a window past the horizon is its optimum."""
    body = client.get("/api/v1/forecast?zone=US-CAL-CISO&hours=120").get_json()
    schemas.ForecastResponse.model_validate(body)
    points = body["forecast"]
    assert parse(points[-1]["datetime"]) >= FIXED_NOW + timedelta(hours=119)
    real = [p for p in points if not p["estimated"]]
    assert parse(real[-1]["datetime"]) < parse(body["provenance"]["forecast_end"]) <= \
        parse(points[len(real)]["datetime"])
    assert all(p["estimated"] for p in points[len(real):])
    # Longer extensions only add points: the first 120 h are the same.
    longer = client.get("/api/v1/forecast?zone=US-CAL-CISO&hours=240").get_json()["forecast"]
    assert longer[:len(points)] == points
    # A 3 h job between hours 80 and 110 lies wholly past the 72 h forecast: its answer is the
    # brute-force optimum over the reported estimates.
    start = FIXED_NOW.replace(minute=0, second=0) + timedelta(hours=80)
    answer = client.post("/api/v1/optimize", json={
        "duration": "PT3H", "zones": ["US-CAL-CISO"], "earliest_start": start.isoformat(),
        "deadline": (start + timedelta(hours=30)).isoformat()}).get_json()
    first = parse(points[0]["datetime"])
    values = np.array([p["carbon_intensity"] for p in points])
    hourly_means = {s: values[s:s + 3].mean() for s in range(80, 108) if (first + timedelta(hours=s)) >= start}
    best_hour = min(hourly_means, key=lambda s: (round(hourly_means[s], 6), s))
    assert answer["carbon_intensity"] == pytest.approx(hourly_means[best_hour], abs=1e-3)
    assert parse(answer["start"]) == first + timedelta(hours=best_hour)
    assert answer["provenance"]["estimated"] is True


@pytest.mark.parametrize("hours", ["0", "-1", "abc", "1.5", "\u00b2", "99999", "745"])
def test_the_forecast_endpoint_refuses_bad_hours(client, hours):
    response = client.get(f"/api/v1/forecast?zone=ES&hours={hours}")
    assert response.status_code == 400
    assert response.get_json()["error"]["details"][0]["field"] == "hours"
