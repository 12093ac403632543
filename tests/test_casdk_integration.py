"""The Carbon Aware SDK's WebAPI integration tests, as our own, against Gunicorn (issue 28).

Source: Green-Software-Foundation/carbon-aware-sdk, `src/CarbonAware.WebApi/test/integrationTests/`
(CarbonAwareControllerTests.cs as stored at commit 0080ae8f, the newest copy in the index: it has the
`bylocation`, `bylocations` and `/metrics` cases and the ElectricityMapsFree fixture), with the
shapes from `src/CarbonAware.WebApi/src/Models/*.cs` and `GSF.CarbonAware.Models` (EmissionsData,
Location). The SDK runs each case against four fixtures (JSON file, WattTime, Electricity Maps,
Electricity Maps free) and ignores it for the ones that cannot answer; here one case runs against
the `demo` provider, which can answer all but the historical forecast batch, and that one case
runs against a recorded file with FILE_REPLAY (a source with historical forecasts, as WattTime is
in the SDK's tests). Every case checks more than the SDK's (which mostly checks status only): the
content type, and each field's name, casing, type and format as the DTOs write them.

Mirrored, file by file (SDK test name -> ours):

CarbonAwareControllerTests.cs
- HealthCheck_ReturnsOK -> test_health_check_returns_ok
- FakeEndPoint_ReturnsNotFound -> test_fake_endpoint_returns_not_found
- MetricsEndPoint_ReturnsOK -> test_metrics_endpoint_returns_ok
- ByLocationURI_ReturnsOK (eastus with Z; westus with +06:00) -> test_bylocation_returns_ok
- ByLocation_EmptyLocationQueryString_ReturnsBadRequest (empty `location`; no `location`)
  -> test_bylocation_without_location_is_bad_request
- ByLocationsURI_ReturnsOK -> test_bylocations_returns_ok
- ByLocations_EmptyLocationQueryString_ReturnsBadRequest -> test_bylocations_without_location_is_bad_request
- BestLocations_ReturnsOK -> test_best_locations_returns_ok
- BestLocations_EmptyLocationQueryString_ReturnsBadRequest -> test_best_without_location_is_bad_request
- EmissionsForecastsCurrent_SupportedDataSources_ReturnsOk -> test_forecasts_current_returns_ok
- EmissionsForecastsCurrent_StartAndEndOutsideWindow_ReturnsBadRequest
  -> test_forecasts_current_outside_the_forecast_is_bad_request
- EmissionsForecastsCurrent_InvalidLocationQueryString_ReturnsBadRequest (two cases)
  -> test_forecasts_current_without_location_is_bad_request
- EmissionsForecastsBatch_MissingRequiredParams_ReturnsBadRequest (four cases)
  -> test_forecasts_batch_missing_or_malformed_is_bad_request
- EmissionsForecastsBatch_SupportedDataSources_ReturnsOk (one element; three elements)
  -> test_forecasts_batch_returns_ok (recorded file, FILE_REPLAY); and, for the fixtures the SDK
  ignores it on (a source without historical forecasts), test_forecasts_batch_without_history_is_501
- EmissionsMarginalCarbonIntensity_ReturnsOk (full datetime; offset +06:00)
  -> test_average_carbon_intensity_returns_ok
- EmissionsMarginalCarbonIntensity_EmptyLocationQueryString_ReturnsBadRequest (two cases)
  -> test_average_carbon_intensity_without_location_is_bad_request
- EmissionsMarginalCarbonIntensityBatch_MissingRequiredParams_ReturnsBadRequest (five cases)
  -> test_average_carbon_intensity_batch_missing_or_malformed_is_bad_request
- EmissionsMarginalCarbonIntensityBatch_SupportedDataSources_ReturnsOk (one element; three elements)
  -> test_average_carbon_intensity_batch_returns_ok

LocationsControllerTests.cs
- GetLocations_ReturnsOk -> test_locations_returns_ok

WebApiEndpointTests.cs
- HealthCheck_ReturnsOK, FakeEndPoint_ReturnsNotFound: the same two cases as above (one test each).

UnconfiguredWebApiTests.cs
- HealthCheck_ReturnsOK, FakeEndPoint_ReturnsNotFound with no data source configured
  -> test_unconfigured_service_is_healthy_and_404s_unknown_paths (CARBON_PROVIDER left at `auto`
  with no Electricity Maps key).

Not an SDK test, but the controller's own branch (`NoContent()` when nothing is found):
test_bylocations_with_no_data_is_204.

Not mirrored: SciScoreControllerTests.cs (`/sci-scores/marginal-carbon-intensity`), a route the
SDK removed before v1.8 and issue 28 does not ask for; the mocks/*.cs files (they stand in for
the SDK's upstreams; the demo provider and the recorded file stand in for ours).

Adapted dates: the SDK's JSON fixture serves fixed 2021-2022 data; the demo provider's history is
the last 24 hours, so the bylocation and average cases ask about a now-relative range with the
SDK's shape (a whole day less the hours at either end, one case in UTC with `Z`, one with a +06:00
offset), formatted as the SDK's client sends them. The historical forecast batch keeps the SDK's
own dates (2021-09-01), served from a file recorded for those days.
"""

from __future__ import annotations

import csv
import json
import math
import re
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest
import requests

from carbon_optimizer.data.cloud_regions import read_table
from carbon_optimizer.data.providers.demo import DemoProvider
from carbon_optimizer.data.providers.portal_csv import (DATETIME_COLUMN, INTENSITY_COLUMN,
                                                        ZONE_COLUMN)
from devkit.redis_server import delete_keys
from devkit.service_process import GunicornProcess
from tests.conftest import checked_redis
from tests.support import TEST_REDIS_URL

pytestmark = pytest.mark.slow

# The zones behind the SDK's Azure names, from our cloud-region table (azure:<name>).
_TABLE = read_table()
AZURE_ZONES = {name: _TABLE[f"azure:{name}"].zone for name in ("eastus", "westus", "northeurope")}
HOUR = timedelta(hours=1)

# --- what the SDK's DTOs write --------------------------------------------------------------------
# Field names exactly as serialized (ASP.NET's camelCase policy or the DTO's JsonPropertyName).
# Exact sets, not subsets: openapi-generator's strict clients (Java) reject unknown fields.
EMISSIONS_DATA_FIELDS = {"location", "time", "rating", "duration"}        # GSF.CarbonAware.Models
EMISSIONS_DATA_DTO_FIELDS = {"location", "timestamp", "duration", "value"}  # EmissionsDataDTO.cs
FORECAST_DTO_FIELDS = {"generatedAt", "requestedAt", "location", "dataStartAt", "dataEndAt",
                       "windowSize", "optimalDataPoints", "forecastData"}  # EmissionsForecastDTO.cs
CARBON_INTENSITY_DTO_FIELDS = {"location", "startTime", "endTime", "carbonIntensity"}
LOCATION_FIELDS = {"latitude", "longitude", "name"}                        # GSF.CarbonAware.Models
# ValidationProblemDetails (RFC 7807 plus `errors`); extensions such as traceId are allowed.
PROBLEM_FIELDS = {"type", "title", "status"}

# System.Text.Json writes a DateTimeOffset as ISO 8601 with its offset (up to 7 fraction digits).
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})$")
# A .NET TimeSpan in its constant ("c") format: [-][d.]hh:mm:ss[.fffffff].
_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")


def parse_timestamp(text: Any) -> datetime:
    """A DTO timestamp: a string with an explicit offset, as an aware datetime."""
    assert isinstance(text, str) and _TIMESTAMP.match(text), f"not a timestamp with offset: {text!r}"
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() is not None
    return moment


def parse_timespan(text: Any) -> timedelta:
    """EmissionsData.duration: .NET writes a TimeSpan as a string such as `01:00:00`, never a number."""
    assert isinstance(text, str), f"a TimeSpan is a string, got {text!r}"
    match = _TIMESPAN.match(text)
    assert match, f"not a .NET TimeSpan: {text!r}"
    sign, days, hours, minutes, seconds, fraction = match.groups()
    assert int(hours) < 24 and int(minutes) < 60 and int(seconds) < 60, text
    span = timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=int(seconds),
                     microseconds=int((fraction or "0").ljust(7, "0")) // 10)
    return -span if sign else span


def is_number(value: Any) -> bool:
    """A JSON number for a .NET double: .NET writes 400.0 as 400, so ints count; booleans do not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def dotnet_round_trip(moment: datetime) -> str:
    """How the SDK's test client sends a DateTimeOffset (`{start:O}`): 7 fraction digits and the
    offset written out, e.g. 2022-01-01T04:05:06.0000000+00:00."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0" \
        + moment.strftime("%z")[:3] + ":" + moment.strftime("%z")[3:]


def dotnet_loose(moment: datetime) -> str:
    """A date as the SDK's average-carbon-intensity cases write it (`2022-1-1T04:05:06Z`): month and
    day without leading zeros, which .NET's query binding accepts. Identical to ISO 8601 on days
    from the 10th of October on."""
    offset = moment.strftime("%z")
    zone = "Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"
    return f"{moment.year}-{moment.month}-{moment.day}T{moment:%H:%M:%S}{zone}"


def check_emissions_data(item: Any, location: str) -> tuple[datetime, timedelta]:
    """One EmissionsData as `bylocation(s)` and `bylocations/best` return it."""
    assert isinstance(item, dict) and set(item) == EMISSIONS_DATA_FIELDS, item
    # The client's own name comes back: it is how a caller of bylocations/best learns which won.
    assert item["location"] == location
    assert is_number(item["rating"]) and item["rating"] > 0, item
    return parse_timestamp(item["time"]), parse_timespan(item["duration"])


def check_emissions_data_dto(item: Any, location: str) -> datetime:
    """One EmissionsDataDTO (forecastData, optimalDataPoints): duration in whole minutes."""
    assert isinstance(item, dict) and set(item) == EMISSIONS_DATA_DTO_FIELDS, item
    assert item["location"] == location
    assert is_whole(item["duration"]) and item["duration"] > 0, item
    assert is_number(item["value"]) and item["value"] > 0, item
    return parse_timestamp(item["timestamp"])


def check_forecast_dto(forecast: Any, location: str, bounded: bool = False) -> dict:
    """One EmissionsForecastDTO; its points checked, the optimum no worse than any listed point.

    The SDK keeps the points that overlap the scope (IntervalHelper.FilterByDuration: a point
    ending at or after dataStartAt and starting by dataEndAt), rolled into windows only when a
    windowSize is given; unbounded, dataEndAt is the last point's start (FromEmissionsForecast);
    a window asked for (`bounded`) ends by dataEndAt."""
    assert isinstance(forecast, dict) and set(forecast) == FORECAST_DTO_FIELDS, forecast
    assert forecast["location"] == location
    for name in ("generatedAt", "requestedAt", "dataStartAt", "dataEndAt"):
        parse_timestamp(forecast[name])
    assert is_whole(forecast["windowSize"]) and forecast["windowSize"] >= 0
    assert isinstance(forecast["forecastData"], list) and isinstance(forecast["optimalDataPoints"], list)
    start, end = parse_timestamp(forecast["dataStartAt"]), parse_timestamp(forecast["dataEndAt"])
    for point in forecast["forecastData"] + forecast["optimalDataPoints"]:
        moment = check_emissions_data_dto(point, location)
        assert moment + timedelta(minutes=point["duration"]) >= start and moment <= end, (
            point, forecast["dataStartAt"], forecast["dataEndAt"])
    if forecast["forecastData"]:
        # Null or empty only when nothing is left to choose from (EmissionsForecastDTO.cs).
        assert forecast["optimalDataPoints"], forecast
        lowest = min(p["value"] for p in forecast["forecastData"])
        # Ours come from an exact search over every whole-minute start, so they may fall between
        # the listed points, but are never worse than the best of them.
        assert all(p["value"] <= lowest + 1e-6 for p in forecast["optimalDataPoints"]), forecast
    return forecast


def weighted_mean(hourly: Callable[[datetime], float], start: datetime, end: datetime) -> float:
    """The mean over [start, end) of an hourly series, each hour weighted by how much of it falls
    inside: the SDK's AverageOverPeriod, for a window or an average-carbon-intensity range."""
    assert end > start
    hour = start.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    total = 0.0
    while hour < end:
        overlap = min(end, hour + HOUR) - max(start, hour)
        if overlap > timedelta(0):
            total += hourly(hour) * (overlap / (end - start))
        hour += HOUR
    return total


def check_point_values(points: list[dict], hourly: Callable[[datetime], float]) -> None:
    """Each forecast point's value is the mean of the data over the window it names."""
    for point in points:
        start = parse_timestamp(point["timestamp"])
        expected = weighted_mean(hourly, start, start + timedelta(minutes=point["duration"]))
        assert point["value"] == pytest.approx(expected, abs=0.051), point


def check_carbon_intensity_dto(item: Any, location: str, start: datetime, end: datetime) -> float:
    assert isinstance(item, dict) and set(item) == CARBON_INTENSITY_DTO_FIELDS, item
    assert item["location"] == location
    # DateTimeOffset equality (the SDK's Is.EqualTo) compares instants, whatever the offset.
    assert parse_timestamp(item["startTime"]) == start
    assert parse_timestamp(item["endTime"]) == end
    assert is_number(item["carbonIntensity"]) and item["carbonIntensity"] > 0, item
    return item["carbonIntensity"]


def check_json(answer: requests.Response, status: int = 200) -> Any:
    assert answer.status_code == status, (answer.status_code, answer.text[:500])
    assert answer.headers["Content-Type"].split(";")[0].strip() == "application/json", answer.headers
    return answer.json()


def check_problem(answer: requests.Response, status: int, names: Iterable[str] = ()) -> dict:
    """ASP.NET's ValidationProblemDetails as `application/problem+json`, naming each parameter in
    `names` (in an `errors` key, as model validation does, or in `detail`); any case, any prefix
    (ASP.NET writes a body field as `$[0].requestedAt` or `[0].Location`)."""
    assert answer.status_code == status, (answer.status_code, answer.text[:500])
    assert answer.headers["Content-Type"].split(";")[0].strip() == "application/problem+json", \
        answer.headers
    body = answer.json()
    assert isinstance(body, dict) and PROBLEM_FIELDS <= set(body), body
    assert body["status"] == status
    assert isinstance(body["type"], str) and isinstance(body["title"], str) and body["title"]
    errors = body.get("errors", {})
    assert isinstance(errors, dict), body
    assert all(isinstance(v, list) and all(isinstance(m, str) for m in v) for v in errors.values()), body
    said = " ".join(list(errors) + [str(body.get("detail") or "")]).lower()
    for name in names:
        assert name.lower() in said, f"the {status} does not name {name}: {body}"
    return body


@lru_cache(maxsize=1)
def _demo() -> DemoProvider:
    return DemoProvider(horizon_hours=1)


def demo_value(zone: str, hour_start: datetime) -> float:
    """The demo provider's value for the hour starting at `hour_start`: the same in every process."""
    return float(_demo().forecast(zone, hour_start).values[0])


def past_range(offset_hours: int = 0) -> tuple[datetime, datetime]:
    """The SDK's day-long range (04:05:06 to 04:05:06 next day), adapted to the demo's history (the
    last 24 h): from 22 h ago to 2 h ago at a few seconds past, written at the given UTC offset."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = (now - timedelta(hours=22)).replace(minute=5, second=6)
    end = (now - timedelta(hours=2)).replace(minute=5, second=6)
    if end > now - timedelta(hours=1):
        end -= HOUR
    local = timezone(timedelta(hours=offset_hours))
    return start.astimezone(local), end.astimezone(local)


# --- the services --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_for_module():
    return checked_redis()


@contextmanager
def _run(env: dict[str, str], redis_client, tmp: Path) -> Iterator[GunicornProcess]:
    prefix = f"casdk-{uuid.uuid4().hex[:8]}:"
    env = {"REDIS_URL": TEST_REDIS_URL, "CACHE_KEY_PREFIX": prefix,
           "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"), **env}
    try:
        with GunicornProcess(env, workers=2, threads=4, log_path=tmp / "gunicorn.log") as process:
            yield process
    finally:
        delete_keys(redis_client, prefix)


@pytest.fixture(scope="module")
def service(redis_for_module, tmp_path_factory):
    """The demo provider: zones such as eastus's grid, forecasts from the current hour, 24 h of history."""
    with _run({"CARBON_PROVIDER": "demo"}, redis_for_module, tmp_path_factory.mktemp("casdk-demo")) as process:
        yield process


# The SDK's batch-forecast days, recorded hourly with a daily shape, for the zones behind the
# Azure names its cases use. Made up (the SDK's WattTime mock serves made-up values too).
RECORDED_FROM = datetime(2021, 8, 30, tzinfo=timezone.utc)
RECORDED_HOURS = 24 * 5


def recorded_value(zone: str, moment: datetime) -> float:
    base = 400.0 if zone == "US-MIDA-PJM" else 250.0
    return round(base + 60 * math.sin(2 * math.pi * moment.hour / 24), 1)


@pytest.fixture(scope="module")
def replay_service(redis_for_module, tmp_path_factory):
    """A recorded data-portal file with FILE_REPLAY: it knows what was forecast at any past moment."""
    tmp = tmp_path_factory.mktemp("casdk-replay")
    data = tmp / "data"
    data.mkdir()
    with open(data / "recorded.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([DATETIME_COLUMN, ZONE_COLUMN, INTENSITY_COLUMN])
        for zone in (AZURE_ZONES["eastus"], AZURE_ZONES["westus"]):
            for i in range(RECORDED_HOURS):
                moment = RECORDED_FROM + i * HOUR
                writer.writerow([moment.strftime("%Y-%m-%d %H:%M:%S"), zone, recorded_value(zone, moment)])
    # 48 h of forecast from each moment, so the SDK's 24-hour window after 08:30 is inside it.
    with _run({"CARBON_PROVIDER": "file", "CARBON_DATA_DIR": str(data), "FILE_REPLAY": "true",
               "FILE_FORECAST_HOURS": "48"}, redis_for_module, tmp) as process:
        yield process


# --- WebApiEndpointTests / UnconfiguredWebApiTests / the first CarbonAwareControllerTests ---------

def test_health_check_returns_ok(service):
    assert requests.get(f"{service.url}/health", timeout=10).status_code == 200


def test_fake_endpoint_returns_not_found(service):
    assert requests.get(f"{service.url}/fake-endpoint", timeout=10).status_code == 404


def test_metrics_endpoint_returns_ok(service):
    answer = requests.get(f"{service.url}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")


def test_unconfigured_service_is_healthy_and_404s_unknown_paths(redis_for_module, tmp_path):
    # The SDK's DataSourceType.None: no data source named. Ours: CARBON_PROVIDER left at `auto` with
    # no Electricity Maps key (GunicornProcess passes on none of the developer's settings).
    with _run({}, redis_for_module, tmp_path) as process:
        assert requests.get(f"{process.url}/health", timeout=10).status_code == 200
        assert requests.get(f"{process.url}/fake-endpoint", timeout=10).status_code == 404


# --- bylocation, bylocations, bylocations/best ---------------------------------------------------

# The SDK's two cases: eastus in UTC, westus at +06:00 (dates adapted, see the module docstring).
RANGE_CASES = [pytest.param("eastus", 0, id="eastus-utc"), pytest.param("westus", 6, id="westus-plus-6")]


def _emissions(service, path: str, locations: list[str], start: datetime, end: datetime):
    # requests percent-encodes the offset's `+`, as the SDK's HttpUtility query builder does.
    params = [("location", name) for name in locations]
    params += [("time", dotnet_round_trip(start)), ("toTime", dotnet_round_trip(end))]
    return requests.get(f"{service.url}{path}", params=params, timeout=30)


def _check_observed(items: Any, location: str, start: datetime, end: datetime) -> dict[datetime, float]:
    """Observed points for one location: hourly, inside the range, with the demo's own values."""
    assert isinstance(items, list) and items, items
    seen = {}
    for item in items:
        moment, duration = check_emissions_data(item, location)
        assert duration == HOUR and item["duration"] == "01:00:00", item  # the demo is hourly
        assert moment.minute == moment.second == 0, item
        assert moment + duration > start and moment < end, (item, start, end)
        seen[moment] = item["rating"]
        assert item["rating"] == pytest.approx(demo_value(AZURE_ZONES[location], moment), abs=1e-6)
    # Every whole hour inside the range is there.
    first = (start + HOUR).replace(minute=0, second=0)
    hour = first
    while hour + HOUR <= end:
        assert hour in seen, f"{hour} missing from {sorted(seen)}"
        hour += HOUR
    return seen


@pytest.mark.parametrize("location, offset", RANGE_CASES)
def test_bylocation_returns_ok(service, location, offset):
    start, end = past_range(offset)
    answer = requests.get(f"{service.url}/emissions/bylocation", timeout=30, params={
        "location": location, "time": dotnet_round_trip(start), "toTime": dotnet_round_trip(end)})
    _check_observed(check_json(answer), location, start, end)


@pytest.mark.parametrize("location, offset", RANGE_CASES)
def test_bylocations_returns_ok(service, location, offset):
    start, end = past_range(offset)
    answer = _emissions(service, "/emissions/bylocations", [location], start, end)
    _check_observed(check_json(answer), location, start, end)


@pytest.mark.parametrize("location, offset", RANGE_CASES)
def test_best_locations_returns_ok(service, location, offset):
    start, end = past_range(offset)
    best = check_json(_emissions(service, "/emissions/bylocations/best", [location], start, end))
    observed = check_json(_emissions(service, "/emissions/bylocations", [location], start, end))
    # The best of the observed points: the lowest rating among those bylocations lists.
    assert isinstance(best, list) and best, best
    lowest = min(item["rating"] for item in observed)
    for item in best:
        moment, _ = check_emissions_data(item, location)
        assert item["rating"] == pytest.approx(lowest)
        assert any(parse_timestamp(o["time"]) == moment for o in observed), item


def test_bylocations_with_no_data_is_204(service):
    # Nothing is measured yet in a range that lies ahead (the demo's profile covers any past
    # moment): the controller answers 204, no body.
    ahead = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
    answer = _emissions(service, "/emissions/bylocations", ["eastus"], ahead, ahead + timedelta(days=1))
    assert answer.status_code == 204 and answer.content == b""


# The SDK's two bad-request cases for every GET route that requires `location`.
NO_LOCATION = [pytest.param({"location": ""}, id="empty-location"),
               pytest.param({"non-location-param": ""}, id="no-location-param")]


@pytest.mark.parametrize("query", NO_LOCATION)
def test_bylocation_without_location_is_bad_request(service, query):
    check_problem(requests.get(f"{service.url}/emissions/bylocation", params=query, timeout=30),
                  400, ["location"])


@pytest.mark.parametrize("query", NO_LOCATION)
def test_bylocations_without_location_is_bad_request(service, query):
    check_problem(requests.get(f"{service.url}/emissions/bylocations", params=query, timeout=30),
                  400, ["location"])


@pytest.mark.parametrize("query", NO_LOCATION)
def test_best_without_location_is_bad_request(service, query):
    check_problem(requests.get(f"{service.url}/emissions/bylocations/best", params=query, timeout=30),
                  400, ["location"])


# --- forecasts/current ---------------------------------------------------------------------------

def test_forecasts_current_returns_ok(service):
    before = datetime.now(timezone.utc)
    answer = requests.get(f"{service.url}/emissions/forecasts/current", params={"location": "westus"},
                          timeout=30)
    forecasts = check_json(answer)
    assert isinstance(forecasts, list) and len(forecasts) == 1
    forecast = check_forecast_dto(forecasts[0], "westus")
    # A current forecast is requested now (a clock check, not a timing one: minutes of slack).
    requested = parse_timestamp(forecast["requestedAt"])
    assert before - timedelta(minutes=5) <= requested <= datetime.now(timezone.utc) + timedelta(minutes=5)
    # No windowSize given: one forecast point's duration (the demo's hour), as the DTO documents
    # the default, and every listed point covers that window. (FromEmissionsForecast at the SDK
    # commits read does not copy windowSize, so the SDK itself may write 0: the documented value
    # is the one a client can use.)
    assert forecast["windowSize"] == 60
    assert forecast["forecastData"] and all(p["duration"] == 60 for p in forecast["forecastData"])
    assert all(p["duration"] == 60 for p in forecast["optimalDataPoints"])
    zone = AZURE_ZONES["westus"]
    check_point_values(forecast["forecastData"] + forecast["optimalDataPoints"],
                       lambda hour: demo_value(zone, hour))
    # With no bounds the whole forecast is used: dataStartAt and dataEndAt are its first and last points.
    stamps = [parse_timestamp(p["timestamp"]) for p in forecast["forecastData"]]
    assert stamps == sorted(stamps)
    assert parse_timestamp(forecast["dataStartAt"]) == stamps[0]
    assert parse_timestamp(forecast["dataEndAt"]) == stamps[-1]


def test_forecasts_current_outside_the_forecast_is_bad_request(service):
    # The SDK's own dates: always in the past, so outside any current forecast.
    answer = requests.get(f"{service.url}/emissions/forecasts/current", timeout=30, params={
        "location": "westus", "dataStartAt": "1999-01-01T00:00:00Z", "dataEndAt": "1999-01-02T00:00:00Z"})
    body = check_problem(answer, 400)
    said = " ".join(list(body.get("errors", {})) + [str(body.get("detail") or "")]).lower()
    assert "datastartat" in said or "dataendat" in said, body


@pytest.mark.parametrize("query", NO_LOCATION)
def test_forecasts_current_without_location_is_bad_request(service, query):
    check_problem(requests.get(f"{service.url}/emissions/forecasts/current", params=query, timeout=30),
                  400, ["location"])


# --- forecasts/batch -----------------------------------------------------------------------------

@pytest.mark.parametrize("location, requested_at, named", [
    pytest.param(None, None, ["location", "requestedAt"], id="missing-location-and-requestedAt"),
    pytest.param("eastus", None, ["requestedAt"], id="missing-requestedAt"),
    pytest.param(None, "2021-09-01T08:30:00Z", ["location"], id="missing-location"),
    pytest.param("eastus", "2021-9-1T08:30:00Z", ["requestedAt"], id="wrong-date-format"),
])
def test_forecasts_batch_missing_or_malformed_is_bad_request(service, location, requested_at, named):
    # The SDK's client serializes an anonymous object: absent values are sent as JSON nulls.
    answer = requests.post(f"{service.url}/emissions/forecasts/batch", timeout=30,
                           json=[{"location": location, "requestedAt": requested_at}])
    check_problem(answer, 400, named)


@pytest.mark.parametrize("requested_at, start, end, location, count", [
    pytest.param("2021-09-01T08:30:00Z", "2021-09-01T09:00:00Z", "2021-09-01T12:00:00Z", "eastus", 1,
                 id="single-element"),
    pytest.param("2021-09-01T08:30:00Z", "2021-09-01T08:30:00Z", "2021-09-02T08:30:00Z", "westus", 3,
                 id="multiple-elements"),
])
def test_forecasts_batch_returns_ok(replay_service, requested_at, start, end, location, count):
    body = [{"requestedAt": requested_at, "dataStartAt": start, "dataEndAt": end, "location": location}
            for _ in range(count)]
    answer = requests.post(f"{replay_service.url}/emissions/forecasts/batch", json=body, timeout=60)
    forecasts = check_json(answer)
    assert isinstance(forecasts, list) and len(forecasts) == count
    asked_at = parse_timestamp(requested_at)
    for forecast in forecasts:
        check_forecast_dto(forecast, location, bounded=True)
        assert parse_timestamp(forecast["requestedAt"]) == asked_at
        assert parse_timestamp(forecast["dataStartAt"]) == parse_timestamp(start)
        assert parse_timestamp(forecast["dataEndAt"]) == parse_timestamp(end)
        # The most recent forecast as of requestedAt: made no later than that.
        assert parse_timestamp(forecast["generatedAt"]) <= asked_at
        assert forecast["forecastData"], forecast
        # No windowSize: the recorded points themselves (the SDK rolls no average when the duration
        # is unset), those overlapping [dataStartAt, dataEndAt]: from 08:30 the first is the 08:00
        # point (IntervalHelper.FilterByDuration keeps a point that ends after the start).
        assert all(p["duration"] == 60 for p in forecast["forecastData"]), forecast
        first = parse_timestamp(forecast["forecastData"][0]["timestamp"])
        assert first <= parse_timestamp(start) < first + timedelta(hours=1)
        zone = AZURE_ZONES[location]
        check_point_values(forecast["forecastData"] + forecast["optimalDataPoints"],
                           lambda hour: recorded_value(zone, hour))


def test_forecasts_batch_without_history_is_501(service):
    # The SDK ignores the batch case for sources with no historical forecasts (Electricity Maps);
    # asked anyway, it refuses with 501 (NotImplementedException through HttpResponseExceptionFilter).
    # The demo provider has none: recorded history is only the replay and file providers'.
    answer = requests.post(f"{service.url}/emissions/forecasts/batch", timeout=30, json=[{
        "requestedAt": "2021-09-01T08:30:00Z", "dataStartAt": "2021-09-01T09:00:00Z",
        "dataEndAt": "2021-09-01T12:00:00Z", "location": "eastus"}])
    check_problem(answer, 501)


# --- average-carbon-intensity --------------------------------------------------------------------

@pytest.mark.parametrize("location, offset", [
    pytest.param("eastus", 0, id="full-datetime"), pytest.param("westus", 6, id="offset-plus-6")])
def test_average_carbon_intensity_returns_ok(service, location, offset):
    start, end = past_range(offset)
    # The SDK passes its case strings through unparsed (`2022-1-1T04:05:06Z`): loose .NET dates.
    answer = requests.get(f"{service.url}/emissions/average-carbon-intensity", timeout=30, params={
        "location": location, "startTime": dotnet_loose(start), "endTime": dotnet_loose(end)})
    value = check_carbon_intensity_dto(check_json(answer), location, start, end)
    _check_average(value, location, start, end)


def _check_average(value: float, location: str, start: datetime, end: datetime) -> None:
    """The SDK's average: each hour of the demo's history weighted by its share of the range."""
    expected = weighted_mean(lambda hour: demo_value(AZURE_ZONES[location], hour), start, end)
    assert value == pytest.approx(expected, abs=0.051), (value, expected)


@pytest.mark.parametrize("query", NO_LOCATION)
def test_average_carbon_intensity_without_location_is_bad_request(service, query):
    check_problem(requests.get(f"{service.url}/emissions/average-carbon-intensity", params=query,
                               timeout=30), 400, ["location"])


@pytest.mark.parametrize("location, start, end, named", [
    pytest.param(None, None, None, ["location", "startTime", "endTime"], id="missing-all"),
    pytest.param("eastus", None, None, ["startTime", "endTime"], id="missing-startTime-endTime"),
    pytest.param("eastus", "2022-03-01T15:30:00Z", None, ["endTime"], id="missing-endTime"),
    pytest.param("eastus", None, "2022-03-01T18:00:00Z", ["startTime"], id="missing-startTime"),
    pytest.param("westus", "2022-3-1T15:30:00Z", "2022-3-1T18:00:00Z", [], id="wrong-date-format"),
])
def test_average_carbon_intensity_batch_missing_or_malformed_is_bad_request(service, location, start,
                                                                           end, named):
    answer = requests.post(f"{service.url}/emissions/average-carbon-intensity/batch", timeout=30,
                           json=[{"location": location, "startTime": start, "endTime": end}])
    body = check_problem(answer, 400, named)
    if not named:  # a JSON body is strict ISO 8601: the unpadded date is what is named
        said = " ".join(list(body.get("errors", {})) + [str(body.get("detail") or "")]).lower()
        assert "starttime" in said or "endtime" in said, body


@pytest.mark.parametrize("location, offset, count", [
    pytest.param("eastus", 0, 1, id="single-element"), pytest.param("westus", 6, 3, id="multiple-elements")])
def test_average_carbon_intensity_batch_returns_ok(service, location, offset, count):
    start, end = past_range(offset)
    # In a JSON body the SDK's cases are strict ISO 8601 (`2022-01-01T04:05:06Z`, `...+06:00`).
    body = [{"location": location, "startTime": start.isoformat().replace("+00:00", "Z"),
             "endTime": end.isoformat().replace("+00:00", "Z")} for _ in range(count)]
    answer = requests.post(f"{service.url}/emissions/average-carbon-intensity/batch", json=body, timeout=30)
    values = check_json(answer)
    assert isinstance(values, list) and len(values) == count
    for item in values:
        value = check_carbon_intensity_dto(item, location, start, end)
        _check_average(value, location, start, end)
    # The same question asked three times has one answer.
    assert len({item["carbonIntensity"] for item in values}) == 1


# --- LocationsControllerTests --------------------------------------------------------------------

def test_locations_returns_ok(service):
    locations = check_json(requests.get(f"{service.url}/locations", timeout=30))
    # A JSON object keyed by the names a client may send (IDictionary<string, Location>).
    assert isinstance(locations, dict)
    assert "eastus" in locations and "northeurope" in locations
    for key, location in locations.items():
        assert isinstance(location, dict) and set(location) == LOCATION_FIELDS, (key, location)
        assert is_number(location["latitude"]) and -90 <= location["latitude"] <= 90, (key, location)
        assert is_number(location["longitude"]) and -180 <= location["longitude"] <= 180, (key, location)
        assert isinstance(location["name"], str) and location["name"], (key, location)
    # The coordinates are our cloud-region table's.
    for region in ("eastus", "northeurope"):
        row = _TABLE[f"azure:{region}"]
        assert locations[region]["latitude"] == pytest.approx(row.latitude)
        assert locations[region]["longitude"] == pytest.approx(row.longitude)


# --- the checks themselves, on the SDK's documented examples (no service needed) -----------------

def test_checks_accept_the_sdk_examples_and_refuse_near_misses():
    # EmissionsData as the SDK writes it: TimeSpan duration, offset timestamp.
    good = {"location": "eastus", "time": "2022-06-01T14:45:00+00:00", "rating": 359.23,
            "duration": "01:00:00"}
    assert check_emissions_data(good, "eastus") == (datetime(2022, 6, 1, 14, 45, tzinfo=timezone.utc), HOUR)
    for bad in ({**good, "duration": 60}, {**good, "duration": "PT1H"}, {**good, "time": "2022-06-01T14:45:00"},
                {**good, "Rating": 1.0}, {**good, "extra": 1}, {**good, "rating": True},
                {**good, "location": "azure:eastus"}):
        with pytest.raises(AssertionError):
            check_emissions_data(bad, "eastus")
    # EmissionsDataDTO in a forecast: whole minutes.
    dto = {"location": "eastus", "timestamp": "2022-06-01T14:45:00Z", "duration": 30, "value": 359.23}
    check_emissions_data_dto(dto, "eastus")
    for bad in ({**dto, "duration": "00:30:00"}, {**dto, "duration": 30.5}, {**dto, "time": dto["timestamp"]}):
        with pytest.raises(AssertionError):
            check_emissions_data_dto(bad, "eastus")
    forecast = {"generatedAt": "2022-06-01T00:00:00Z", "requestedAt": "2022-06-01T00:03:30Z",
                "location": "eastus", "dataStartAt": "2022-06-01T12:00:00Z",
                "dataEndAt": "2022-06-01T18:00:00Z", "windowSize": 30, "optimalDataPoints": [dto],
                "forecastData": [{**dto, "timestamp": "2022-06-01T14:40:00Z", "value": 380.99}, dto]}
    check_forecast_dto(forecast, "eastus")
    with pytest.raises(AssertionError):  # an "optimum" worse than a listed point
        check_forecast_dto({**forecast, "optimalDataPoints": [{**dto, "value": 400.0}]}, "eastus")
    with pytest.raises(AssertionError):
        check_forecast_dto({**forecast, "windowSize": "30"}, "eastus")
    start = datetime(2022, 3, 1, 15, 30, tzinfo=timezone.utc)
    check_carbon_intensity_dto({"location": "eastus", "startTime": "2022-03-01T21:30:00+06:00",
                                "endTime": "2022-03-01T18:30:00Z", "carbonIntensity": 345.434},
                               "eastus", start, start + 3 * HOUR)


def test_time_formats_as_the_sdk_client_sends_and_dotnet_writes_them():
    moment = datetime(2022, 1, 1, 4, 5, 6, tzinfo=timezone.utc)
    assert dotnet_round_trip(moment) == "2022-01-01T04:05:06.0000000+00:00"
    assert parse_timestamp(dotnet_round_trip(moment)) == moment
    plus6 = datetime(2021, 12, 25, tzinfo=timezone(timedelta(hours=6)))
    assert dotnet_round_trip(plus6) == "2021-12-25T00:00:00.0000000+06:00"
    assert dotnet_loose(moment) == "2022-1-1T04:05:06Z"
    assert dotnet_loose(plus6) == "2021-12-25T00:00:00+06:00"
    assert parse_timespan("01:00:00") == HOUR
    assert parse_timespan("1.02:03:04.5") == timedelta(days=1, hours=2, minutes=3, seconds=4.5)
    for bad in ("1:00:00", "01:00", "PT1H", 60, "01:60:00"):
        with pytest.raises(AssertionError):
            parse_timespan(bad)
    start, end = past_range(6)
    assert start.utcoffset() == timedelta(hours=6) and end - start <= timedelta(hours=20)
    assert end <= datetime.now(timezone.utc) - HOUR


def test_weighted_mean_weighs_each_hour_by_its_share_as_the_sdk_does():
    # The SDK's AverageOverPeriod example: hours of 30, 100 and 50 from 01:00, averaged over
    # 01:30-03:30, give 30/4 + 100/2 + 50/4.
    day = datetime(2022, 3, 1, tzinfo=timezone.utc)
    values = {day + timedelta(hours=1): 30.0, day + timedelta(hours=2): 100.0, day + timedelta(hours=3): 50.0}
    assert weighted_mean(values.__getitem__, day + timedelta(hours=1, minutes=30),
                         day + timedelta(hours=3, minutes=30)) == pytest.approx(70.0)
    assert weighted_mean(values.__getitem__, day + HOUR, day + 2 * HOUR) == 30.0
    points = [{"timestamp": "2022-03-01T01:30:00Z", "duration": 60, "value": 65.0}]
    check_point_values(points, values.__getitem__)
    with pytest.raises(AssertionError):
        check_point_values([{**points[0], "value": 30.0}], values.__getitem__)


def test_problem_check_wants_problem_json_naming_the_parameter():
    def answer(status: int, body: dict, content_type: str = "application/problem+json") -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response.headers["Content-Type"] = content_type
        response._content = json.dumps(body).encode()
        return response

    problem = {"type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
               "title": "One or more validation errors occurred.", "status": 400,
               "errors": {"$[0].requestedAt": ["The JSON value could not be converted."]}}
    check_problem(answer(400, problem), 400, ["requestedAt"])
    for bad, names in ((answer(400, problem, "application/json"), []),
                       (answer(400, problem), ["location"]),
                       (answer(400, {**problem, "status": "400"}), []),
                       (answer(400, {"error": {"code": "bad_request"}}), [])):
        with pytest.raises(AssertionError):
            check_problem(bad, 400, names)
