"""The Electricity Maps client against its wire format (mocked with `responses`)."""

from datetime import datetime, timezone

import numpy as np
import pytest
import responses
from responses import matchers

from carbon_optimizer.errors import InvalidToken, UpstreamUnavailable, ZoneNotEntitled, ZoneNotFound
from carbon_optimizer.data.providers.electricitymaps import ElectricityMapsProvider
from devkit.electricitymaps_stand_in import hourly_forecast

BASE = "https://api.electricitymaps.test/v3"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
FORECAST_URL = f"{BASE}/carbon-intensity/forecast"


def make_provider(retries=0, key="em-test-key", calls=None):
    observer = (lambda endpoint, outcome, seconds: calls.append((endpoint, outcome))) if calls is not None else None
    return ElectricityMapsProvider(BASE, api_key=lambda: key, horizon_hours=48, retries=retries,
                                   observer=observer)


@responses.activate
def test_forecast_request_and_parsing():
    responses.get(FORECAST_URL, json=hourly_forecast("DE", NOW, [300, 250.5, 200]), match=[
        matchers.query_param_matcher({"zone": "DE", "horizonHours": "48", "disableCallerLookup": "true",
                                      "emissionFactorType": "lifecycle"}),
        matchers.header_matcher({"auth-token": "em-test-key"}),
    ])
    calls = []
    series = make_provider(calls=calls).forecast("DE", NOW)
    assert series.zone == "DE" and series.provider == "electricitymaps"
    assert series.start == NOW and series.step_seconds == 3600
    assert list(series.values) == [300, 250.5, 200]
    assert series.updated_at == NOW and series.estimated is None
    assert calls == [("carbon-intensity/forecast", "200")]


@responses.activate
def test_null_and_missing_points_hold_the_previous_value_and_are_flagged():
    body = hourly_forecast("DE", NOW, [None, 100, None, 300, 400])
    del body["forecast"][3]  # a gap: 13:00 missing
    responses.get(FORECAST_URL, json=body)
    series = make_provider().forecast("DE", NOW)
    # The leading null is dropped; 12:00 (null) and 13:00 (missing) hold 11:00's value.
    assert series.start == datetime(2026, 11, 23, 11, tzinfo=timezone.utc)
    assert list(series.values) == [100, 100, 100, 400]
    assert list(series.estimated) == [False, True, True, False]


@responses.activate
def test_fifteen_minute_steps_are_kept():
    responses.get(FORECAST_URL, json=hourly_forecast("DE", NOW, [1, 2, 3, 4], step_minutes=15))
    series = make_provider().forecast("DE", NOW)
    assert series.step_seconds == 900 and len(series.values) == 4


@responses.activate
@pytest.mark.parametrize("status,body,error", [
    (401, {"message": "Invalid authentication credentials"}, InvalidToken),
    (401, {"status": "error", "message": "Zone 'FR' is not available with this token"}, ZoneNotEntitled),
    (404, {"status": "error", "message": "No data"}, ZoneNotFound),
    (500, {"message": "oops"}, UpstreamUnavailable),
    (200, b"<html>not json</html>", UpstreamUnavailable),
    (200, {"zone": "FR", "forecast": "soon"}, UpstreamUnavailable),
    (200, {"zone": "FR", "forecast": []}, UpstreamUnavailable),
    (200, {"zone": "FR", "forecast": [{"carbonIntensity": None, "datetime": "2026-11-23T10:00:00Z"}]},
     UpstreamUnavailable),
    (200, {"zone": "FR", "forecast": [{"carbonIntensity": 5, "datetime": "not a time"}]}, UpstreamUnavailable),
])
def test_failures_are_typed_and_name_the_zone(status, body, error):
    if isinstance(body, bytes):
        responses.get(FORECAST_URL, body=body, status=status)
    else:
        responses.get(FORECAST_URL, json=body, status=status)
    with pytest.raises(error) as raised:
        make_provider().forecast("FR", NOW)
    assert raised.value.zone == "FR"
    assert "em-test-key" not in str(raised.value)
    if error is not InvalidToken:
        assert "FR" in raised.value.message


@responses.activate
def test_retries_5xx_then_succeeds():
    responses.get(FORECAST_URL, status=503)
    responses.get(FORECAST_URL, status=429)
    responses.get(FORECAST_URL, json=hourly_forecast("DE", NOW, [42]))
    provider = ElectricityMapsProvider(BASE, api_key=lambda: "k", retries=2)
    provider._http._session.adapters["https://"].max_retries.backoff_factor = 0  # keep the test fast
    assert list(provider.forecast("DE", NOW).values) == [42]
    assert len(responses.calls) == 3


@responses.activate
def test_connection_error_is_unavailable():
    # No registered URL: `responses` refuses the connection.
    with pytest.raises(UpstreamUnavailable):
        make_provider().forecast("DE", NOW)


def test_missing_key_is_invalid_token_without_a_call():
    with pytest.raises(InvalidToken):
        make_provider(key=None).forecast("DE", NOW)


@responses.activate
def test_rotated_key_is_used_at_once():
    keys = iter(["old-key", "new-key"])
    current = {"key": next(keys)}
    provider = ElectricityMapsProvider(BASE, api_key=lambda: current["key"], retries=0)
    responses.get(FORECAST_URL, json=hourly_forecast("DE", NOW, [1]))
    provider.forecast("DE", NOW)
    current["key"] = next(keys)
    provider.forecast("DE", NOW)
    assert [c.request.headers["auth-token"] for c in responses.calls] == ["old-key", "new-key"]


@responses.activate
def test_history_and_latest():
    history = {"zone": "DE", "history": [
        {"zone": "DE", "carbonIntensity": 310, "datetime": "2026-11-22T10:00:00.000Z",
         "updatedAt": "2026-11-22T10:50:00.000Z", "isEstimated": False},
        {"zone": "DE", "carbonIntensity": 290, "datetime": "2026-11-22T11:00:00.000Z",
         "updatedAt": "2026-11-22T11:50:00.000Z", "isEstimated": True}]}
    responses.get(f"{BASE}/carbon-intensity/history", json=history)
    responses.get(f"{BASE}/carbon-intensity/latest", json={
        "zone": "DE", "carbonIntensity": 302, "datetime": "2026-11-23T10:00:00.000Z",
        "updatedAt": "2026-11-23T09:55:00.000Z", "isEstimated": True, "estimationMethod": "TIME_SLICER_AVERAGE"})
    provider = make_provider()
    series = provider.history("DE", NOW)
    assert np.array_equal(series.values, [310, 290])
    latest = provider.latest("DE")
    assert latest["carbon_intensity"] == 302 and latest["is_estimated"] is True
