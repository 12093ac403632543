"""Through the Flask test client on the demo provider: chunks, estimates past the horizon, capacity."""

from datetime import datetime, timedelta

import numpy as np
import pytest

from carbon_optimizer.web import models as schemas
from carbon_optimizer.scheduling.chunks import best_chunks
from carbon_optimizer.data.providers.demo import DemoProvider
from tests.conftest import FIXED_NOW
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
    assert provenance["forecast_end"] == "2026-11-26T10:00:00Z"
    end = parse(body["end"])
    if end > parse(provenance["forecast_end"]):
        assert provenance["estimated"] is True and provenance["estimated_part"]["minutes"] > 0
        replan = parse(provenance["replan_at"])
        # Asking again then, a 72 h forecast reaches the end of the window, and not earlier.
        assert replan + timedelta(hours=72) >= end + timedelta(minutes=-60)
        assert replan > FIXED_NOW
    else:
        assert provenance["estimated_part"] is None and provenance["replan_at"] is None


def test_estimates_are_flagged_when_the_window_lies_past_the_forecast(client):
    body = client.post("/api/v1/optimize", json={
        "duration": "PT2H", "zones": ["US-CAL-CISO"], "earliest_start": "2026-11-27T00:00:00Z",
        "deadline": "2026-11-28T00:00:00Z", "extend_horizon": True}).get_json()
    provenance = body["provenance"]
    assert provenance["estimated"] is True
    assert provenance["estimated_part"] == {"start": body["start"], "minutes": 120}
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
    placed = [r for r in results.values() if r["status"] == "scheduled"]
    # 8 h of room (6 h delay + 2 h run), 2 h each, one at a time: at most 4 fit; the late one never.
    assert results["late"]["code"] == "window_not_covered"
    spans = sorted((parse(r["start"]), parse(r["end"])) for r in placed)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # never two at once
    assert len(placed) == 4 - sum(r.get("code") == "capacity_exceeded" for r in results.values())
    assert len(placed) >= 3


def test_capacity_too_small_for_power(client):
    body = client.post("/api/v1/optimize", json={
        "workloads": [{"id": "big", "duration": 60, "zones": ["ES"], "power_kw": 50},
                      {"id": "small", "duration": 60, "zones": ["ES"], "power_kw": 1}],
        "capacity": {"max_power_kw": {"ES": 10}}}).get_json()
    results = {r["id"]: r for r in body["results"]}
    assert results["big"]["status"] == "unschedulable" and results["big"]["code"] == "capacity_exceeded"
    assert results["small"]["status"] == "scheduled"


def test_openapi_documents_the_new_fields(client):
    document = client.get("/api/v1/openapi.json").get_json()
    text = str(document)
    for name in ("interruptible", "min_chunk", "max_chunks", "extend_horizon", "capacity",
                 "max_power_kw", "chunks", "estimated_part", "replan_at"):
        assert name in text


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
