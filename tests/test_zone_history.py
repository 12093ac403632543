"""Each zone's own history: fetched from Electricity Maps past-range (mocked in its wire format),
cached per zone for hours; and replay over HTTP with `as_of` on the file provider."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import responses
from responses import matchers

from carbon_optimizer.data.providers.electricitymaps import ElectricityMapsProvider
from tests.conftest import FIXED_NOW
from devkit.electricitymaps_stand_in import hourly_forecast
from tests.support import TEST_REDIS_URL

BASE = "http://em.invalid/v3"
NOW = datetime(2026, 11, 23, 10, 30, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def past_range(zone: str, end: datetime, values) -> dict:
    """A past-range answer as Electricity Maps sends it: hourly points ending before `end`."""
    first = end - HOUR * len(values)
    return {"zone": zone, "temporalGranularity": "hourly", "data": [
        {"zone": zone, "carbonIntensity": v, "datetime": stamp(first + HOUR * i),
         "updatedAt": stamp(first + HOUR * (i + 1)), "createdAt": stamp(first + HOUR * i),
         "emissionFactorType": "lifecycle", "isEstimated": False, "estimationMethod": None}
        for i, v in enumerate(values)]}


@responses.activate
def test_history_is_ten_days_from_past_range():
    hour = NOW.replace(minute=0)
    responses.get(f"{BASE}/carbon-intensity/past-range", json=past_range("DE", hour, [300.0] * 239 + [200.0]),
                  match=[matchers.query_param_matcher({
                      "zone": "DE", "disableCallerLookup": "true",
                      "start": "2026-11-13T10:00:00Z", "end": "2026-11-23T10:00:00Z",
                      "emissionFactorType": "lifecycle"}),
                      matchers.header_matcher({"auth-token": "FAKE-k"})])
    provider = ElectricityMapsProvider(BASE, api_key=lambda: "FAKE-k", retries=0)
    series = provider.history("DE", NOW)
    assert len(series.values) == 240 and series.values[-1] == 200.0
    assert series.start == hour - 240 * HOUR and series.step_seconds == 3600


@responses.activate
def test_without_past_range_the_last_day_from_history():
    responses.get(f"{BASE}/carbon-intensity/past-range", status=401,
                  json={"status": "error", "message": "Your token does not give access to this zone/endpoint"})
    responses.get(f"{BASE}/carbon-intensity/history", json={"zone": "DE", "history": [
        {"zone": "DE", "carbonIntensity": 310, "datetime": "2026-11-23T08:00:00.000Z"},
        {"zone": "DE", "carbonIntensity": 290, "datetime": "2026-11-23T09:00:00.000Z"}]})
    series = ElectricityMapsProvider(BASE, api_key=lambda: "FAKE-k", retries=0).history("DE", NOW)
    assert list(series.values) == [310, 290]


@responses.activate
def test_a_zones_history_is_fetched_once_and_feeds_its_estimates(make_app, redis_prefix):
    hour = FIXED_NOW.replace(minute=0, second=0, microsecond=0)
    # Ten days that repeat, lowest at 12:00 UTC (the first point is at `hour` - 240 h, 10:00 UTC).
    utc_hours = (np.arange(240) + hour.hour) % 24
    days = 300 + 100 * np.cos(utc_hours / 24 * 2 * np.pi)
    # A two-hour forecast that continues them (10:00 and 11:00 UTC): noon lies past it.
    ahead = (300 + 100 * np.cos((np.arange(2) + hour.hour) / 24 * 2 * np.pi)).tolist()
    for zone in ("DE", "FR"):
        responses.get(f"{BASE}/carbon-intensity/forecast",
                      json=hourly_forecast(zone, hour, ahead),
                      match=[matchers.query_param_matcher({"zone": zone}, strict_match=False)])
        responses.get(f"{BASE}/carbon-intensity/past-range",
                      json=past_range(zone, hour, days.tolist()),
                      match=[matchers.query_param_matcher({"zone": zone}, strict_match=False)])
    client = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "FAKE-k",
                       "ELECTRICITY_MAPS_BASE_URL": BASE, "UPSTREAM_RETRIES": "0",
                       "REDIS_URL": TEST_REDIS_URL, "CACHE_KEY_PREFIX": redis_prefix}).test_client()
    asked = {"duration": "PT1H", "zones": ["DE"], "max_delay": "PT60H"}
    first = client.post("/api/v1/optimize", json=asked).get_json()
    # The zone's own ten days say 12:00 UTC runs lower than anything in the forecast, by more
    # than the estimates' stated error (none here: the days repeat): an estimated noon is chosen.
    assert first["provenance"]["estimated"] is True
    assert datetime.fromisoformat(first["start"].replace("Z", "+00:00")).hour == 12
    part = first["provenance"]["estimated_part"]
    assert first["carbon_intensity"] < min(ahead) - part["expected_error"]
    assert part["error_coverage"] == 0.9 and part["estimator"] in ("blend", "daily_profile")
    again = client.post("/api/v1/optimize", json=asked).get_json()
    assert again["start"] == first["start"]
    client.post("/api/v1/optimize", json={**asked, "zones": ["FR"]})
    ranges = [c.request.params["zone"] for c in responses.calls if "past-range" in c.request.url]
    assert ranges == ["DE", "FR"]  # one upstream call per zone; the second DE answer from the cache


# -- replay over HTTP --------------------------------------------------------------------------------

AS_OF = datetime(2022, 1, 10, tzinfo=timezone.utc)


@pytest.fixture
def recording(tmp_path):
    """Twenty days of zone XX at 300, but 150 at as_of + 5 h (inside a 24 h forecast) and 1 at
    as_of + 30 h (past it), as a data-portal export."""
    start = datetime(2022, 1, 1, tzinfo=timezone.utc)
    rows = ["Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
            "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
            "Data Source,Data Estimated,Data Estimation Method"]
    for k in range(20 * 24):
        moment = start + k * HOUR
        value = {AS_OF + 5 * HOUR: 150.0, AS_OF + 30 * HOUR: 1.0}.get(moment, 300.0)
        rows.append(f"{moment:%Y-%m-%d %H:%M:%S},X,X,XX,{value},{value},0,0,test,false,")
    (tmp_path / "XX_2022_hourly.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path


def replaying(make_app, directory, **env):
    return make_app({"CARBON_PROVIDER": "file", "CARBON_DATA_DIR": str(directory),
                     "FILE_REPLAY": "true", **env}).test_client()


def test_as_of_answers_as_if_it_were_that_moment(make_app, recording):
    client = replaying(make_app, recording)
    body = client.post("/api/v1/optimize", json={
        "duration": 60, "zones": ["XX"], "max_delay": "PT47H", "extend_horizon": False,
        "as_of": "2022-01-10T00:00:00Z"}).get_json()
    assert body["start"] == "2022-01-10T05:00:00Z" and body["start_in_seconds"] == 5 * 3600
    # Nothing past as_of + FILE_FORECAST_HOURS (24) is visible: the 1 at +30 h is not seen.
    assert body["provenance"]["forecast_end"] == "2022-01-11T00:00:00Z"
    assert body["provenance"]["search_limited_by_horizon"] is True
    assert body["carbon_intensity"] == 150.0
    # With estimates past the forecast, they come from what lay before as_of (flat 300): no 1 there.
    extended = client.post("/api/v1/optimize", json={
        "duration": 60, "zones": ["XX"], "max_delay": "PT47H", "as_of": "2022-01-10T00:00:00Z"}).get_json()
    assert extended["start"] == "2022-01-10T05:00:00Z" and extended["carbon_intensity"] == 150.0


def test_file_forecast_hours_sets_what_is_revealed(make_app, recording):
    client = replaying(make_app, recording, FILE_FORECAST_HOURS="36")
    body = client.post("/api/v1/optimize", json={
        "duration": 60, "zones": ["XX"], "max_delay": "PT47H", "extend_horizon": False,
        "as_of": "2022-01-10T00:00:00Z"}).get_json()
    assert body["start"] == "2022-01-11T06:00:00Z" and body["start_in_seconds"] == 30 * 3600


def test_as_of_at_the_top_of_a_batch(make_app, recording):
    client = replaying(make_app, recording)
    body = client.post("/api/v1/optimize", json={
        "as_of": "2022-01-10T02:00:00+02:00",  # midnight UTC
        "workloads": [{"duration": 60, "zones": ["XX"], "max_delay": "PT20H"}]}).get_json()
    assert body["results"][0]["start"] == "2022-01-10T05:00:00Z"
    assert body["results"][0]["start_in_seconds"] == 5 * 3600
    inside = client.post("/api/v1/optimize", json={
        "workloads": [{"duration": 60, "zones": ["XX"], "as_of": "2022-01-10T00:00:00Z"}]})
    assert inside.status_code == 400
    assert inside.get_json()["error"]["details"][0]["field"] == "workloads[0].as_of"


@pytest.mark.parametrize("env", [{"CARBON_PROVIDER": "file", "FILE_REPLAY": "false"}, {}])
def test_as_of_without_replay_is_a_400_naming_the_field(make_app, recording, env):
    if env:
        env = {**env, "CARBON_DATA_DIR": str(recording)}
    client = make_app(env).test_client()
    answer = client.post("/api/v1/optimize", json={"duration": 60, "as_of": "2022-01-10T00:00:00Z"})
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_request" and error["details"][0]["field"] == "as_of"
    assert "FILE_REPLAY" in error["details"][0]["message"]


def test_as_of_outside_the_recording_is_a_422_naming_it(make_app, recording):
    client = replaying(make_app, recording)
    answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["XX"],
                                                   "as_of": "2030-01-01T00:00:00Z"})
    assert answer.status_code == 422 and "Retry-After" not in answer.headers
    error = answer.get_json()["error"]
    assert error["code"] == "window_not_covered"
    assert "2030-01-01T00:00:00Z (as_of)" in error["message"] and "2022-01-01T00:00:00Z" in error["message"]
    inside = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["XX"],
                                                   "as_of": "2022-01-10T00:00:00Z"}).get_json()
    assert inside["provenance"]["provider"] == "file"
