"""The Carbon Aware SDK WebAPI (casdk_routes.py) through the Flask test client: each endpoint's JSON
field by field against the SDK's DTOs (names, casing, types, formats; Green-Software-Foundation/
carbon-aware-sdk v1.8 src/CarbonAware.WebApi/src/Models and GSF.CarbonAware.Models), the optimal
windows against a brute force over every whole-minute start, 204, 400 as problem+json naming the
parameter, 501, a replaying file provider for requestedAt and history, and the API key."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import responses

from carbon_optimizer.timeseries import from_epoch, to_epoch
from carbon_optimizer.web.app_state import app_state
from tests.conftest import FIXED_NOW

HOUR = 3600
KEY = "FAKE-casdk-key-7d1e"
# DateTimeOffset as System.Text.Json writes it: ISO 8601 with an explicit offset.
OFFSET_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}:\d{2}$")
TIMESPAN = re.compile(r"^(\d+\.)?\d{2}:\d{2}:\d{2}$")
PROBLEM_KEYS = {"type", "title", "status", "errors", "traceId"}


def parse(text: str) -> datetime:
    assert OFFSET_TIME.match(text), text
    return datetime.fromisoformat(text)


def timespan_seconds(text: str) -> int:
    assert TIMESPAN.match(text), text
    days, _, clock = text.rpartition(".")
    h, m, s = (int(x) for x in clock.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def assert_problem(answer, status: int, parameter: str) -> dict:
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    body = answer.get_json(force=True)
    assert PROBLEM_KEYS <= set(body) and body["status"] == status
    assert set(body) <= PROBLEM_KEYS | {"detail"}
    assert parameter in body["errors"], body
    assert all(isinstance(m, str) and m for m in body["errors"][parameter])
    return body


def mean_over(points: list[tuple[int, int, float]], start: int, seconds: int) -> float | None:
    """Brute force: the time-weighted mean over [start, start + seconds) of piecewise-constant
    points, None when they do not cover it all."""
    total = covered = 0.0
    for a, b, v in points:
        overlap = min(b, start + seconds) - max(a, start)
        if overlap > 0:
            total += overlap * v
            covered += overlap
    return total / seconds if covered == seconds else None


def brute_best(points, earliest: int, latest: int, seconds: int):
    """Every whole-minute start in [earliest, latest]: the least mean (earliest on ties)."""
    best = None
    for start in range(-(-earliest // 60) * 60, latest + 1, 60):
        mean = mean_over(points, start, seconds)
        if mean is not None and (best is None or mean < best[1] - 1e-9):
            best = (start, mean)
    return best


# -- measured emissions ---------------------------------------------------------------------------

def test_bylocation_answers_the_sdks_emissions_data_field_by_field(app, client):
    answer = client.get("/emissions/bylocation", query_string={
        "location": "eastus", "time": "2026-11-22T06:00:00Z", "toTime": "2026-11-22T09:30:00Z"})
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    data = answer.get_json()
    assert [list(d) for d in data] == [["location", "time", "rating", "duration"]] * 4
    history = app.extensions["carbon_optimizer"].engine.source.history(
        "US-MIDA-PJM", datetime(2026, 11, 22, 10, 30, tzinfo=timezone.utc))
    expected = {to_epoch(history.start) + i * HOUR: float(v) for i, v in enumerate(history.values)}
    for hour, point in zip(range(6, 10), data):
        moment = parse(point["time"])
        assert moment == datetime(2026, 11, 22, hour, tzinfo=timezone.utc)
        assert point["location"] == "eastus"
        assert isinstance(point["rating"], float) and point["rating"] == expected[to_epoch(moment)]
        assert point["duration"] == "01:00:00" and timespan_seconds(point["duration"]) == HOUR


def test_sdk_integration_date_forms_and_offsets_are_read(client):
    # The SDK's own integration tests send one-digit months and days, and +06:00 offsets.
    for time, to_time in [("2022-1-1T04:05:06Z", "2022-1-2T04:05:06Z"),
                          ("2021-12-25T00:00:00+06:00", "2021-12-26T00:00:00+06:00")]:
        for path in ("/emissions/bylocation", "/emissions/bylocations", "/emissions/bylocations/best"):
            answer = client.get(path, query_string={"location": "westus", "time": time, "toTime": to_time})
            assert answer.status_code == 200, (path, answer.get_data(as_text=True))
    data = client.get("/emissions/bylocations", query_string={
        "location": "westus", "time": "2021-12-25T00:00:00+06:00", "toTime": "2021-12-25T03:00:00+06:00"}).get_json()
    assert parse(data[0]["time"]) == datetime(2021, 12, 24, 18, tzinfo=timezone.utc)
    assert len(data) == 3


def test_without_time_the_latest_measured_point(client):
    data = client.get("/emissions/bylocation?location=eastus").get_json()
    assert len(data) == 1
    assert parse(data[0]["time"]) == datetime(2026, 11, 23, 9, tzinfo=timezone.utc)  # ended by now (10:17:30)


def test_bylocations_repeats_location_and_names_each_as_asked(client):
    answer = client.get("/emissions/bylocations?location=eastus&location=westeurope&location=eastus"
                        "&location=azure:westeurope&time=2026-11-23T06:00:00Z&toTime=2026-11-23T08:00:00Z")
    data = answer.get_json()
    assert [(d["location"], d["time"]) for d in data] == [
        ("eastus", "2026-11-23T06:00:00+00:00"), ("eastus", "2026-11-23T07:00:00+00:00"),
        ("westeurope", "2026-11-23T06:00:00+00:00"), ("westeurope", "2026-11-23T07:00:00+00:00"),
        ("azure:westeurope", "2026-11-23T06:00:00+00:00"), ("azure:westeurope", "2026-11-23T07:00:00+00:00")]
    # A bare Azure name, its azure: name and its zone key are the same grid.
    by_zone = client.get("/emissions/bylocations?location=NL&time=2026-11-23T06:00:00Z"
                         "&toTime=2026-11-23T08:00:00Z").get_json()
    assert [d["rating"] for d in by_zone] == [d["rating"] for d in data[2:4]] == [d["rating"] for d in data[4:]]


def test_no_measured_point_in_the_range_is_204(client):
    for path in ("/emissions/bylocation", "/emissions/bylocations", "/emissions/bylocations/best"):
        answer = client.get(path, query_string={"location": "eastus", "time": "2030-01-01T00:00:00Z",
                                                "toTime": "2030-01-02T00:00:00Z"})
        assert answer.status_code == 204 and answer.data == b""
        assert "Content-Type" not in answer.headers


def _points(client, locations, time, to_time):
    query = [("location", name) for name in locations] + [("time", time), ("toTime", to_time)]
    data = client.get("/emissions/bylocations", query_string=query).get_json()
    found = {}
    for d in data:
        start = to_epoch(parse(d["time"]))
        found.setdefault(d["location"], []).append((start, start + timespan_seconds(d["duration"]), d["rating"]))
    return found


def test_best_without_duration_is_every_point_with_the_least_rating(client):
    time, to_time = "2026-11-22T06:00:00Z", "2026-11-23T08:00:00Z"
    points = _points(client, ["eastus", "westeurope"], time, to_time)
    least = min(v for found in points.values() for _, _, v in found)
    best = client.get("/emissions/bylocations/best", query_string=[
        ("location", "eastus"), ("location", "westeurope"), ("time", time), ("toTime", to_time)]).get_json()
    assert best and all(b["rating"] == least for b in best)
    assert {(b["location"], to_epoch(parse(b["time"]))) for b in best} == {
        (name, a) for name, found in points.items() for a, _, v in found if v == least}


@pytest.mark.parametrize("minutes", [90, 47, 240])
def test_best_with_duration_is_the_exact_window_across_locations(client, minutes):
    time, to_time = "2026-11-22T06:10:00Z", "2026-11-23T08:00:00Z"
    points = _points(client, ["eastus", "westeurope", "francecentral"], time, to_time)
    earliest, latest = to_epoch(parse("2026-11-22T06:10:00+00:00")), to_epoch(parse("2026-11-23T08:00:00+00:00"))
    brute = {name: brute_best(found, earliest, latest - minutes * 60, minutes * 60)
             for name, found in points.items()}
    name, (start, mean) = min(((n, b) for n, b in brute.items() if b), key=lambda nb: nb[1][1])
    best = client.get("/emissions/bylocations/best", query_string=[
        ("location", "eastus"), ("location", "westeurope"), ("location", "francecentral"),
        ("time", time), ("toTime", to_time), ("durationMinutes", str(minutes))]).get_json()
    assert len(best) == 1 and list(best[0]) == ["location", "time", "rating", "duration"]
    assert best[0]["rating"] == pytest.approx(mean, rel=1e-9)
    assert best[0]["location"] == name and to_epoch(parse(best[0]["time"])) == start
    assert timespan_seconds(best[0]["duration"]) == minutes * 60


# -- forecasts ------------------------------------------------------------------------------------

FORECAST_KEYS = ["generatedAt", "requestedAt", "location", "dataStartAt", "dataEndAt", "windowSize",
                 "optimalDataPoints", "forecastData"]
POINT_KEYS = ["location", "timestamp", "duration", "value"]


def _check_point(point: dict, location: str, minutes: int) -> None:
    assert list(point) == POINT_KEYS
    assert point["location"] == location and isinstance(point["duration"], int) and point["duration"] == minutes
    assert isinstance(point["value"], float)
    parse(point["timestamp"])


def test_current_forecast_field_by_field_with_its_points_as_the_engine_holds_them(app, client):
    answer = client.get("/emissions/forecasts/current?location=eastus&location=DE")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    forecasts = answer.get_json()
    assert [f["location"] for f in forecasts] == ["eastus", "DE"]
    engine = app.extensions["carbon_optimizer"].engine
    for forecast, zone in zip(forecasts, ["US-MIDA-PJM", "DE"]):
        assert list(forecast) == FORECAST_KEYS
        series = engine.forecast(zone, FIXED_NOW).forecast
        assert parse(forecast["requestedAt"]) == FIXED_NOW
        parse(forecast["generatedAt"])
        # Unbounded: the first point's start and, as the SDK's DTO writes it, the last point's start.
        assert parse(forecast["dataStartAt"]) == series.start
        assert parse(forecast["dataEndAt"]) == series.end - timedelta(seconds=series.step_seconds)
        assert forecast["windowSize"] == 60 and isinstance(forecast["windowSize"], int)
        assert len(forecast["forecastData"]) == len(series.values)
        for i, point in enumerate(forecast["forecastData"]):
            _check_point(point, forecast["location"], 60)
            assert to_epoch(parse(point["timestamp"])) == series.start_epoch + i * HOUR
            assert point["value"] == float(series.values[i])
        least = min(series.values)
        assert len(forecast["optimalDataPoints"]) == 1
        _check_point(forecast["optimalDataPoints"][0], forecast["location"], 60)
        assert forecast["optimalDataPoints"][0]["value"] == pytest.approx(least, rel=1e-12)


@pytest.mark.parametrize("window, data_start, data_end", [
    (90, None, None), (47, "2026-11-23T10:17:30Z", "2026-11-24T03:00:00Z"),
    (30, "2026-11-24T00:00:00+01:00", "2026-11-24T09:00:00+01:00"), (300, None, "2026-11-24T12:00:00Z")])
def test_optimal_data_points_match_a_brute_force_over_every_whole_minute_start(client, window, data_start, data_end):
    raw = client.get("/emissions/forecasts/current?location=westeurope").get_json()[0]["forecastData"]
    points = [(to_epoch(parse(p["timestamp"])), to_epoch(parse(p["timestamp"])) + p["duration"] * 60, p["value"])
              for p in raw]
    query = {"location": "westeurope", "windowSize": str(window)}
    query.update({k: v for k, v in (("dataStartAt", data_start), ("dataEndAt", data_end)) if v})
    forecast = client.get("/emissions/forecasts/current", query_string=query).get_json()[0]
    start = to_epoch(parse(forecast["dataStartAt"]))
    # Unbounded, the scope is the whole forecast (its dataEndAt names the last window's start).
    end = to_epoch(parse(forecast["dataEndAt"])) if data_end else points[-1][1]
    assert forecast["windowSize"] == window
    best_start, best_mean = brute_best(points, start, end - window * 60, window * 60)
    optimal = forecast["optimalDataPoints"]
    assert len(optimal) == 1
    _check_point(optimal[0], "westeurope", window)
    assert optimal[0]["value"] == pytest.approx(best_mean, rel=1e-9)
    assert to_epoch(parse(optimal[0]["timestamp"])) == best_start
    # forecastData: the rolling mean from dataStartAt, every forecast step, each window inside the scope.
    expected = [(at, mean_over(points, at, window * 60)) for at in range(start, end - window * 60 + 1, HOUR)]
    assert [(to_epoch(parse(p["timestamp"])), p["value"]) for p in forecast["forecastData"]] == \
        [(at, pytest.approx(mean, rel=1e-9)) for at, mean in expected]
    for point in forecast["forecastData"]:
        _check_point(point, "westeurope", window)
    # The exact search is never worse than the best rolling mean the SDK would have offered.
    assert optimal[0]["value"] <= min(p["value"] for p in forecast["forecastData"]) + 1e-9


def test_a_window_longer_than_the_forecast_is_empty_as_in_the_sdk(client):
    forecast = client.get("/emissions/forecasts/current?location=eastus&windowSize=2147483647").get_json()[0]
    assert forecast["forecastData"] == [] and forecast["optimalDataPoints"] == []
    assert forecast["windowSize"] == 2147483647


# -- 400, 501 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, query, parameter", [
    ("/emissions/bylocation", "", "location"),
    ("/emissions/bylocation", "location=", "location"),
    ("/emissions/bylocations", "non-location-param=", "location"),
    ("/emissions/bylocations/best", "location=", "location"),
    ("/emissions/forecasts/current", "location=", "location"),
    ("/emissions/forecasts/current", "", "location"),
    ("/emissions/bylocations", "location=eastus&time=2026-11-23T06:00:00Z&toTime=2026-11-22T06:00:00Z", "time"),
    ("/emissions/bylocations", "location=eastus&time=2026-11-23T06:00:00Z&toTime=2026-11-23T06:00:00Z", "time"),
    ("/emissions/bylocations", "location=eastus&toTime=2026-11-22T06:00:00Z", "time"),
    ("/emissions/bylocation", "location=eastus&time=yesterday", "time"),
    ("/emissions/bylocation", "location=eastus&time=2026-13-01T00:00:00Z", "time"),
    ("/emissions/bylocation", "location=eastus&time=2026-02-30", "time"),
    ("/emissions/bylocation", "location=eastus&time=0001-01-01T00:00:00%2B01:00", "time"),
    ("/emissions/bylocation", "location=eastus&time=2026-11-22T06:00:00Z&toTime=12", "toTime"),
    ("/emissions/bylocations/best", "location=eastus&durationMinutes=ninety", "durationMinutes"),
    ("/emissions/bylocations/best", "location=eastus&durationMinutes=-5", "durationMinutes"),
    ("/emissions/forecasts/current", "location=eastus&windowSize=99999999999", "windowSize"),
    ("/emissions/forecasts/current", "location=eastus&windowSize=1.5", "windowSize"),
    ("/emissions/forecasts/current", "location=eastus&windowSize=-1", "windowSize"),
    ("/emissions/forecasts/current", "location=eastus&dataStartAt=1999-01-01T00:00:00Z"
                                     "&dataEndAt=1999-01-02T00:00:00Z", "dataStartAt"),
    ("/emissions/forecasts/current", "location=eastus&dataEndAt=2030-01-02T00:00:00Z", "dataEndAt"),
    ("/emissions/forecasts/current", "location=eastus&dataStartAt=2026-11-24T00:00:00Z"
                                     "&dataEndAt=2026-11-23T12:00:00Z", "dataStartAt"),
    ("/emissions/forecasts/current", "location=atlantis", "location"),
    ("/emissions/forecasts/current", "location=eastus&location=aws:nowhere-1", "location"),
    ("/emissions/forecasts/current", "location=east%20us", "location"),
    ("/emissions/average-carbon-intensity", "location=eastus&startTime=2026-11-22T06:00:00Z", "endTime"),
    ("/emissions/average-carbon-intensity", "location=eastus&startTime=2026-11-22T06:00:00Z"
                                            "&endTime=2026-11-22T05:00:00Z", "startTime"),
])
def test_bad_input_is_the_sdks_problem_details_naming_the_parameter(client, path, query, parameter):
    assert_problem(client.get(f"{path}?{query}"), 400, parameter)


def test_unknown_location_suggests_close_names(client):
    body = assert_problem(client.get("/emissions/bylocation?location=eastuss"), 400, "location")
    assert "eastuss" in body["errors"]["location"][0]


def test_500_repeated_locations(client):
    same = "&".join(["location=eastus"] * 500)
    forecasts = client.get(f"/emissions/forecasts/current?{same}").get_json()
    assert [f["location"] for f in forecasts] == ["eastus"]  # one location, asked 500 times
    distinct = "&".join(f"location=Z{i}" for i in range(500))
    assert_problem(client.get(f"/emissions/forecasts/current?{distinct}"), 400, "location")


def test_forecast_batch_without_recorded_forecasts_is_the_sdks_501(client):
    answer = client.post("/emissions/forecasts/batch",
                         json=[{"location": "eastus", "requestedAt": "2021-09-01T08:30:00Z"}])
    assert answer.status_code == 501 and answer.mimetype == "application/problem+json"
    body = answer.get_json(force=True)
    assert body["status"] == 501 and body["title"] == "NotImplementedException" and body["detail"]


@pytest.mark.parametrize("body, parameter", [
    ([{}], "[0].location"),
    ([{"location": "eastus"}], "[0].requestedAt"),
    ([{"requestedAt": "2021-09-01T08:30:00Z"}], "[0].location"),
    ([{"location": "eastus", "requestedAt": "2021-9-1T08:30:00Z"}], "$[0].requestedAt"),
    ([{"location": "eastus", "requestedAt": "2021-09-01T08:30:00Z", "windowSize": "30"}], "$[0].windowSize"),
    ([{"location": "eastus", "requestedAt": "2021-09-01T08:30:00Z", "dataStartAt": "2021-09-02T00:00:00Z",
       "dataEndAt": "2021-09-01T00:00:00Z"}], "[0].dataStartAt"),
    ({"location": "eastus"}, "$"),
    ([[1]], "$[0]"),
])
def test_forecast_batch_bad_bodies_are_400_before_the_501(client, body, parameter):
    assert_problem(client.post("/emissions/forecasts/batch", json=body), 400, parameter)


def test_batches_refuse_a_body_that_is_not_json(client):
    answer = client.post("/emissions/average-carbon-intensity/batch", data="x", content_type="text/plain")
    assert answer.status_code == 415 and answer.mimetype == "application/problem+json"


# -- average carbon intensity ---------------------------------------------------------------------

def test_average_carbon_intensity_is_the_time_weighted_mean_of_the_measured_points(client):
    start, end = "2026-11-22T06:30:00+01:00", "2026-11-22T10:15:00Z"
    answer = client.get("/emissions/average-carbon-intensity", query_string={
        "location": "westeurope", "startTime": start, "endTime": end})
    assert answer.status_code == 200
    body = answer.get_json()
    assert list(body) == ["location", "startTime", "endTime", "carbonIntensity"]
    assert body["location"] == "westeurope"
    assert parse(body["startTime"]) == parse("2026-11-22T06:30:00+01:00")
    assert body["startTime"].endswith("+01:00")  # echoed in the client's own offset
    points = _points(client, ["westeurope"], "2026-11-22T05:00:00Z", "2026-11-22T11:00:00Z")["westeurope"]
    a, b = to_epoch(parse("2026-11-22T06:30:00+01:00")), to_epoch(parse("2026-11-22T10:15:00+00:00"))
    assert body["carbonIntensity"] == pytest.approx(mean_over(points, a, b - a), rel=1e-12)
    batch = client.post("/emissions/average-carbon-intensity/batch", json=[
        {"location": "westeurope", "startTime": "2026-11-22T05:30:00Z", "endTime": "2026-11-22T10:15:00Z"},
        {"location": "eastus", "startTime": "2026-11-22T06:00:00Z", "endTime": "2026-11-22T08:00:00Z"}])
    assert batch.status_code == 200
    first, second = batch.get_json()
    assert first["carbonIntensity"] == pytest.approx(body["carbonIntensity"], rel=1e-12)
    eastus = _points(client, ["eastus"], "2026-11-22T06:00:00Z", "2026-11-22T08:00:00Z")["eastus"]
    assert second["location"] == "eastus"
    assert second["carbonIntensity"] == pytest.approx((eastus[0][2] + eastus[1][2]) / 2, rel=1e-12)


# -- locations ------------------------------------------------------------------------------------

def test_locations_is_a_dictionary_of_the_sdks_location(client):
    answer = client.get("/locations")
    assert answer.status_code == 200
    found = answer.get_json()
    assert found["eastus"] == {"latitude": 37.54, "longitude": -77.44, "name": "eastus"}
    assert found["aws:eu-west-1"]["name"] == "aws:eu-west-1"
    assert all(list(v) == ["latitude", "longitude", "name"] for v in found.values())
    # Every name it lists is one the API answers for.
    assert client.get("/emissions/forecasts/current?location=westeurope&location=aws:eu-west-1").status_code == 200


# -- a replaying file provider: requestedAt and measured history ----------------------------------

def _recording(tmp_path, zone: str, start: datetime, hours: int) -> dict[int, float]:
    rows = ["Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
            "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
            "Data Source,Data Estimated,Data Estimation Method"]
    values = {}
    for k in range(hours):
        moment = to_epoch(start) + k * HOUR
        values[moment] = value = float(100 + (k * 37) % 250)
        rows.append(f"{from_epoch(moment):%Y-%m-%d %H:%M:%S},X,X,{zone},{value},{value},0,0,test,false,")
    (tmp_path / f"{zone}_2021_hourly.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return values


def test_a_replaying_deployment_answers_requested_at_from_its_recording(make_app, tmp_path):
    values = _recording(tmp_path, "NL", datetime(2021, 8, 20, tzinfo=timezone.utc), 30 * 24)
    client = make_app({"CARBON_PROVIDER": "file", "CARBON_DATA_DIR": str(tmp_path), "FILE_REPLAY": "true",
                       "FILE_FORECAST_HOURS": "24"}).test_client()
    requested = "2021-09-01T08:30:00Z"
    answer = client.post("/emissions/forecasts/batch", json=[
        {"requestedAt": requested, "location": "westeurope"},
        {"requestedAt": requested, "location": "NL", "dataStartAt": "2021-09-01T09:00:00Z",
         "dataEndAt": "2021-09-01T21:00:00Z", "windowSize": 120}])
    assert answer.status_code == 200, answer.get_json(force=True)
    whole, scoped = answer.get_json()
    assert list(whole) == FORECAST_KEYS and parse(whole["requestedAt"]) == parse("2021-09-01T08:30:00+00:00")
    # As known then: from the hour holding requestedAt, 24 hours of the recording.
    assert parse(whole["dataStartAt"]) == datetime(2021, 9, 1, 8, tzinfo=timezone.utc)
    assert [(to_epoch(parse(p["timestamp"])), p["value"]) for p in whole["forecastData"]] == \
        [(t, values[t]) for t in range(to_epoch(datetime(2021, 9, 1, 8, tzinfo=timezone.utc)),
                                       to_epoch(datetime(2021, 9, 2, 8, tzinfo=timezone.utc)), HOUR)]
    points = [(t, t + HOUR, v) for t, v in values.items()]
    start, end = to_epoch(parse("2021-09-01T09:00:00+00:00")), to_epoch(parse("2021-09-01T21:00:00+00:00"))
    best_start, best_mean = brute_best(points, start, end - 7200, 7200)
    assert scoped["windowSize"] == 120 and scoped["location"] == "NL"
    assert to_epoch(parse(scoped["optimalDataPoints"][0]["timestamp"])) == best_start
    assert scoped["optimalDataPoints"][0]["value"] == pytest.approx(best_mean, rel=1e-12)
    # A moment the recording does not cover: 400 naming requestedAt.
    assert_problem(client.post("/emissions/forecasts/batch", json=[
        {"requestedAt": "2020-01-01T00:00:00Z", "location": "NL"}]), 400, "requestedAt")
    # Measured history from the same recording.
    data = client.get("/emissions/bylocation?location=westeurope&time=2021-08-25T10:00:00Z"
                      "&toTime=2021-08-25T13:00:00Z").get_json()
    assert [(to_epoch(parse(d["time"])), d["rating"]) for d in data] == \
        [(t, values[t]) for t in range(to_epoch(datetime(2021, 8, 25, 10, tzinfo=timezone.utc)),
                                       to_epoch(datetime(2021, 8, 25, 13, tzinfo=timezone.utc)), HOUR)]
    # Further back than one history answer holds (240 h): read again, further back.
    early = client.get("/emissions/bylocations?location=NL&time=2021-08-20T00:00:00Z"
                       "&toTime=2021-09-15T00:00:00Z").get_json()
    assert len(early) == 26 * 24


# -- the API key ------------------------------------------------------------------------------------

ROUTES = [("GET", "/emissions/bylocation?location=eastus", None),
          ("GET", "/emissions/bylocations?location=eastus", None),
          ("GET", "/emissions/bylocations/best?location=eastus", None),
          ("GET", "/emissions/forecasts/current?location=eastus", None),
          ("POST", "/emissions/forecasts/batch", [{"location": "eastus", "requestedAt": "2021-09-01T08:30:00Z"}]),
          ("GET", "/emissions/average-carbon-intensity?location=eastus&startTime=2026-11-22T06:00:00Z"
                  "&endTime=2026-11-22T08:00:00Z", None),
          ("POST", "/emissions/average-carbon-intensity/batch",
           [{"location": "eastus", "startTime": "2026-11-22T06:00:00Z", "endTime": "2026-11-22T08:00:00Z"}]),
          ("GET", "/locations", None)]


def test_with_keys_every_route_needs_one_and_without_keys_every_route_is_open(make_app):
    keyed = make_app({"API_KEYS": KEY}).test_client()
    open_ = make_app({}).test_client()
    for method, path, body in ROUTES:
        assert keyed.open(path, method=method, json=body).status_code == 401, path
        assert keyed.open(path, method=method, json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        with_key = keyed.open(path, method=method, json=body, headers={"X-API-Key": KEY}).status_code
        without = open_.open(path, method=method, json=body).status_code
        assert with_key == without and without in (200, 501), (path, with_key)
    # A path no route serves is refused without a key all the same.
    assert keyed.get("/emissions/nothing").status_code == 401


# -- a remote provider: its cached history is only ever asked as of now ------------------------------

EM_BASE = "http://em.invalid/v3"


def _past_range(zone: str, end: datetime, values: list[float]) -> dict:
    """A past-range answer in Electricity Maps' wire format: hourly points ending before `end`."""
    def stamp(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    first = end - timedelta(hours=len(values))
    return {"zone": zone, "temporalGranularity": "hourly", "data": [
        {"zone": zone, "carbonIntensity": v, "datetime": stamp(first + timedelta(hours=i)),
         "updatedAt": stamp(first + timedelta(hours=i + 1)), "createdAt": stamp(first + timedelta(hours=i)),
         "emissionFactorType": "lifecycle", "isEstimated": False, "estimationMethod": None}
        for i, v in enumerate(values)]}


def test_a_remote_providers_history_is_asked_as_of_now_whatever_the_range(make_app, redis_prefix):
    import responses
    from responses import matchers

    from tests.support import TEST_REDIS_URL
    hour = FIXED_NOW.replace(minute=0, second=0)
    values = [float(200 + (i * 13) % 90) for i in range(240)]
    with responses.RequestsMock() as mock:
        mock.get(f"{EM_BASE}/carbon-intensity/past-range", json=_past_range("DE", hour, values),
                 match=[matchers.query_param_matcher({"zone": "DE", "end": "2026-11-23T10:00:00Z"},
                                                     strict_match=False)])
        client = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "FAKE-k",
                           "ELECTRICITY_MAPS_BASE_URL": EM_BASE, "UPSTREAM_RETRIES": "0",
                           "REDIS_URL": TEST_REDIS_URL, "CACHE_KEY_PREFIX": redis_prefix}).test_client()
        # A range years back: not in the ten days held, so 204; and it is not what gets cached.
        old = client.get("/emissions/bylocation?location=germanywestcentral&time=2022-01-01T00:00:00Z"
                         "&toTime=2022-01-02T00:00:00Z")
        assert old.status_code == 204
        recent = client.get("/emissions/bylocation?location=DE&time=2026-11-23T06:00:00Z"
                            "&toTime=2026-11-23T08:00:00Z").get_json()
        assert [(parse(d["time"]), d["rating"]) for d in recent] == [
            (hour - timedelta(hours=4), values[-4]), (hour - timedelta(hours=3), values[-3])]
        assert len([c for c in mock.calls if "past-range" in c.request.url]) == 1  # cached once, as of now


def test_rate_limits_apply_as_on_the_rest_of_the_api(make_app):
    client = make_app({"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_DEFAULT": "2 per minute",
                       "RATE_LIMIT_OPTIMIZE": "1 per minute"}).test_client()
    # The window searches spend the optimize budget, each route its own; the rest the shared default.
    assert client.get("/emissions/forecasts/current?location=eastus").status_code == 200
    limited = client.get("/emissions/forecasts/current?location=eastus")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert client.get("/emissions/bylocations/best?location=eastus").status_code == 200
    assert client.get("/emissions/bylocations/best?location=eastus").status_code == 429
    assert [client.get("/locations").status_code for _ in range(2)] == [200, 200]
    assert client.get("/emissions/bylocation?location=eastus").status_code == 429  # the shared default, spent


def test_best_without_to_time_is_the_window_from_time(client):
    time = "2026-11-22T06:20:00Z"
    points = _points(client, ["westeurope"], time, "2026-11-22T09:00:00Z")["westeurope"]
    best = client.get("/emissions/bylocations/best", query_string={
        "location": "westeurope", "time": time, "durationMinutes": "150"}).get_json()
    start = to_epoch(parse("2026-11-22T06:20:00+00:00"))
    assert to_epoch(parse(best[0]["time"])) == start
    assert best[0]["rating"] == pytest.approx(mean_over(points, start, 150 * 60), rel=1e-12)
    # A window longer than [time, toTime]: none fits.
    assert client.get("/emissions/bylocations/best", query_string={
        "location": "westeurope", "time": time, "toTime": "2026-11-22T07:00:00Z",
        "durationMinutes": "90"}).status_code == 204


@responses.activate
@pytest.mark.parametrize("path, extra", [
    ("/emissions/forecasts/current", {}),
    ("/emissions/bylocations", {"time": "2026-11-23T08:00:00Z", "toTime": "2026-11-23T09:00:00Z"}),
])
def test_a_slow_provider_holds_a_many_location_request_for_one_wait_not_one_each(make_app, path, extra):
    """Six locations, Electricity Maps hung: every zone is asked at once on the fetch pool (two
    threads here), the request answers the SDK's 503 after one deadline, and the locations the
    pool never started are not asked at all."""
    import threading
    base = "https://api.electricitymaps.test/v4"
    release, asked = threading.Event(), []

    def hung(request):
        asked.append(request.url)
        release.wait(30)
        return 503, {}, "{}"

    for endpoint in ("carbon-intensity/forecast", "carbon-intensity/past-range", "carbon-intensity/history"):
        responses.add_callback(responses.GET, f"{base}/{endpoint}", callback=hung)
    responses.add_callback(responses.GET, f"{base}/zones", callback=hung)
    app = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "FAKE-em-key-c2",
                    "ELECTRICITY_MAPS_BASE_URL": base, "UPSTREAM_RETRIES": "0",
                    "UPSTREAM_CONCURRENCY": "2", "UPSTREAM_DEADLINE_SECONDS": "1"})
    names = ["eastus", "westus", "westeurope", "northeurope", "uksouth", "japaneast"]
    try:
        answer = app.test_client().get(path, query_string=[("location", n) for n in names] + list(extra.items()))
        data_calls = [u for u in asked if "/zones" not in u]
        assert len(data_calls) <= 2 + 1, data_calls  # the pool's threads, not one per location
        if path.endswith("current"):
            assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
            assert int(answer.headers["Retry-After"]) > 0
        else:  # history only refines: none had in time, nothing measured to answer
            assert answer.status_code == 204
    finally:
        release.set()
        # The pool's calls finish here, inside this test's mock, not in a later test's.
        app_state(app).engine.close(wait=True)
