"""Electricity Maps v4 (the default base) and v3 side by side, the emission factor type each
provider instance asks for (the signal it serves), and the zone at coordinates (`locate`).
Upstream is mocked with `responses` in its wire format (tests/fixtures/electricitymaps/)."""

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import responses
from responses import matchers

from carbon_optimizer.data.providers.base import SIGNALS, CanLocate, HasHistory, HasZoneList, Provider
from carbon_optimizer.data.providers.electricitymaps import ElectricityMapsProvider, api_version
from carbon_optimizer.errors import InvalidToken, UpstreamUnavailable, ZoneNotEntitled, ZoneNotFound
from carbon_optimizer.settings import Settings
from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast

FIXTURES = Path(__file__).parent / "fixtures" / "electricitymaps"
V4 = "https://api.electricitymaps.test/v4"
V3 = "https://api.electricitymaps.test/v3"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def provider(base=V4, **kwargs) -> ElectricityMapsProvider:
    return ElectricityMapsProvider(base, api_key=lambda: "em-test-key", retries=0, **kwargs)


def test_the_default_base_is_v4_and_the_base_url_names_the_version():
    assert Settings().electricity_maps_base_url == "https://api.electricitymaps.com/v4"
    assert Settings(ELECTRICITY_MAPS_BASE_URL=V3).electricity_maps_base_url == V3
    assert api_version("https://api.electricitymaps.com/v4") == "v4"
    assert api_version("https://api.electricitymaps.com/v3/") == "v3"
    assert api_version("https://api.electricitymaps.com/V3") == "v3"
    # A proxy at its own path speaks what the default speaks.
    assert api_version("http://proxy.internal/electricitymaps") == "v4"
    assert provider(V3).api_version == "v3" and provider().api_version == "v4"


@responses.activate
def test_v4_forecast_path_parameters_and_fields():
    responses.get(f"{V4}/carbon-intensity/forecast", json=fixture("v4_forecast_DE.json"), match=[
        matchers.query_param_matcher({"zone": "DE", "horizonHours": "72", "disableCallerLookup": "true",
                                      "emissionFactorType": "lifecycle"}),
        matchers.header_matcher({"auth-token": "em-test-key"})])
    series = provider(horizon_hours=72).forecast("DE", NOW)
    assert list(series.values) == [312, 298, 281]
    assert series.start == NOW and series.step_seconds == 3600
    assert series.updated_at == datetime(2026, 11, 23, 9, 42, 10, tzinfo=timezone.utc)


@responses.activate
@pytest.mark.parametrize("configured,asked_v4,asked_v3", [(1, 6, 1), (20, 24, 20), (24, 24, 24),
                                                          (50, 72, 50), (168, 72, 168)])
def test_v4_is_asked_the_next_horizon_it_accepts(configured, asked_v4, asked_v3):
    for base in (V4, V3):
        responses.get(f"{base}/carbon-intensity/forecast", json=hourly_forecast("DE", NOW, [1, 2]))
        provider(base, horizon_hours=configured).forecast("DE", NOW)
    asked = [c.request.params["horizonHours"] for c in responses.calls]
    assert asked == [str(asked_v4), str(asked_v3)]


@responses.activate
def test_v4_history_is_past_range_then_history_under_v4():
    responses.get(f"{V4}/carbon-intensity/past-range", status=401,
                  json={"status": "error", "message": "Your token does not give access to this zone/endpoint"})
    responses.get(f"{V4}/carbon-intensity/history", json={"zone": "DE", "history": [
        {"zone": "DE", "carbonIntensity": 310, "datetime": "2026-11-23T08:00:00.000Z",
         "emissionFactorType": "lifecycle", "isEstimated": False, "estimationMethod": None},
        {"zone": "DE", "carbonIntensity": 290, "datetime": "2026-11-23T09:00:00.000Z",
         "emissionFactorType": "lifecycle", "isEstimated": False, "estimationMethod": None}],
        "temporalGranularity": "hourly"})
    series = provider().history("DE", NOW)
    assert list(series.values) == [310, 290]
    assert [c.request.path_url.split("?")[0] for c in responses.calls] == [
        "/v4/carbon-intensity/past-range", "/v4/carbon-intensity/history"]


@responses.activate
def test_v4_zone_list_is_keyed_by_zone_like_v3():
    responses.get(f"{V4}/zones", json=fixture("v4_zones.json"))
    assert provider().zones() == ["DE", "FR", "US-CAL-CISO"]


# -- emission factors: lifecycle ("average") and direct ("average_direct") ---------------------------

def test_the_emission_factor_type_sets_the_signal():
    lifecycle, direct = provider(), provider(emission_factor_type="direct")
    assert (lifecycle.signal, lifecycle.emission_factor_type) == ("average", "lifecycle")
    assert (direct.signal, direct.emission_factor_type) == ("average_direct", "direct")
    assert {lifecycle.signal, direct.signal} <= set(SIGNALS)
    assert ElectricityMapsProvider.signal == "average"  # an instance's choice does not leak
    with pytest.raises(ValueError, match="operational"):
        provider(emission_factor_type="operational")


@responses.activate
@pytest.mark.parametrize("base", [V4, V3])
def test_direct_is_asked_of_every_carbon_intensity_endpoint(base):
    direct_only = [matchers.query_param_matcher({"emissionFactorType": "direct"}, strict_match=False)]
    points = fixture("v4_past_range_DE_direct.json")
    responses.get(f"{base}/carbon-intensity/forecast", match=direct_only,
                  json=hourly_forecast("DE", NOW, [200, 180], emission_factor_type="direct"))
    responses.get(f"{base}/carbon-intensity/past-range", match=direct_only, json=points)
    responses.get(f"{base}/carbon-intensity/latest", match=direct_only, json={
        **fixture("v4_latest_by_coordinates.json"), "zone": "DE", "emissionFactorType": "direct"})
    em = provider(base, emission_factor_type="direct")
    assert list(em.forecast("DE", NOW).values) == [200, 180]
    assert list(em.history("DE", NOW).values) == [265, 258, 249]
    assert em.latest("DE")["carbon_intensity"] == 38
    assert len(responses.calls) == 3


@responses.activate
def test_lifecycle_and_direct_instances_serve_different_numbers_for_one_zone():
    responses.get(f"{V4}/carbon-intensity/forecast", json=fixture("v4_forecast_DE.json"),
                  match=[matchers.query_param_matcher({"emissionFactorType": "lifecycle"}, strict_match=False)])
    responses.get(f"{V4}/carbon-intensity/forecast",
                  json=hourly_forecast("DE", NOW, [250, 240, 230], emission_factor_type="direct", v4=True),
                  match=[matchers.query_param_matcher({"emissionFactorType": "direct"}, strict_match=False)])
    assert list(provider().forecast("DE", NOW).values) == [312, 298, 281]
    assert list(provider(emission_factor_type="direct").forecast("DE", NOW).values) == [250, 240, 230]


@responses.activate
def test_an_answer_with_other_factors_than_asked_is_refused():
    # An upstream (or a proxy) that ignored the parameter: lifecycle numbers must not be served as direct.
    responses.get(f"{V4}/carbon-intensity/forecast", json=fixture("v4_forecast_DE.json"))
    responses.get(f"{V4}/carbon-intensity/latest", json=fixture("v4_latest_by_coordinates.json"))
    direct = provider(emission_factor_type="direct")
    with pytest.raises(UpstreamUnavailable) as raised:
        direct.forecast("DE", NOW)
    assert raised.value.zone == "DE"
    assert "lifecycle" in raised.value.message and "direct" in raised.value.message
    with pytest.raises(UpstreamUnavailable, match="lifecycle"):
        direct.latest("DE")


# -- locate -------------------------------------------------------------------------------------------

def test_the_provider_has_every_capability():
    em = provider()
    assert isinstance(em, Provider) and isinstance(em, HasHistory)
    assert isinstance(em, HasZoneList) and isinstance(em, CanLocate)


@responses.activate
@pytest.mark.parametrize("base", [V4, V3])
def test_locate_asks_latest_by_coordinates_and_returns_the_zone_it_resolved(base):
    responses.get(f"{base}/carbon-intensity/latest", json=fixture("v4_latest_by_coordinates.json"), match=[
        matchers.query_param_matcher({"lat": "48.856600", "lon": "2.352200", "disableCallerLookup": "true",
                                      "shouldUseFallbackCallerLookup": "false"}),
        matchers.header_matcher({"auth-token": "em-test-key"})])
    calls = []
    em = ElectricityMapsProvider(base, api_key=lambda: "em-test-key", retries=0,
                                 observer=lambda endpoint, outcome, seconds: calls.append((endpoint, outcome)))
    assert em.locate(48.8566, 2.3522) == "FR"
    assert "zone" not in responses.calls[0].request.params
    assert calls == [("carbon-intensity/latest", "200")]


@responses.activate
@pytest.mark.parametrize("status,body,error", [
    (404, {"status": "error", "message": "No zone found for the given coordinates"}, ZoneNotFound),
    (400, {"status": "error", "message": "Could not find a zone"}, ZoneNotFound),
    (401, {"message": "Invalid authentication credentials"}, InvalidToken),
    (401, {"status": "error", "message": "Zone 'CN' is not available with this token"}, ZoneNotEntitled),
    (503, {"message": "unavailable"}, UpstreamUnavailable),
    (200, {"carbonIntensity": 38, "datetime": "2026-11-23T10:00:00.000Z"}, UpstreamUnavailable),
    (200, {"zone": "", "carbonIntensity": 38}, UpstreamUnavailable),
    (200, b"<html>not json</html>", UpstreamUnavailable),
])
def test_locate_failures_are_typed_and_name_the_coordinates(status, body, error):
    kwargs = {"body": body} if isinstance(body, bytes) else {"json": body}
    responses.get(f"{V4}/carbon-intensity/latest", status=status, **kwargs)
    with pytest.raises(error) as raised:
        provider().locate(-75.1, 123.4)
    assert "em-test-key" not in raised.value.message
    if error is not InvalidToken:
        assert "-75.1000, 123.4000" in raised.value.message


@responses.activate
@pytest.mark.parametrize("latitude,longitude", [(91, 0), (0, 181), (float("nan"), 0), (0, float("inf"))])
def test_locate_refuses_what_are_not_coordinates_without_a_call(latitude, longitude):
    with pytest.raises(ZoneNotFound, match="not coordinates"):
        provider().locate(latitude, longitude)
    assert len(responses.calls) == 0


def test_locate_without_a_key_is_invalid_token():
    with pytest.raises(InvalidToken):
        ElectricityMapsProvider(V4, api_key=lambda: None).locate(52.52, 13.40)


# -- the loopback stand-in serves both versions -------------------------------------------------------

def test_the_stand_in_answers_under_v4_and_v3_and_refuses_other_versions():
    with ElectricityMapsStandIn() as stand_in:
        stand_in.responses["DE"] = (200, hourly_forecast("DE", NOW, [100, 90], v4=True))
        assert stand_in.url.endswith("/v4") and stand_in.url_v3.endswith("/v3")
        for base in (stand_in.url, stand_in.url_v3):
            em = ElectricityMapsProvider(base, api_key=lambda: "k", retries=0)
            assert list(em.forecast("DE", NOW).values) == [100, 90]
            assert "DE" in em.zones()
        with pytest.raises(ZoneNotFound):
            ElectricityMapsProvider(stand_in.url.replace("/v4", "/v2"), api_key=lambda: "k",
                                    retries=0).forecast("DE", NOW)
        assert stand_in.versions == {"v4": 2, "v3": 2, "v2": 1}
        assert stand_in.upstream_calls("forecast", "DE") == 3


def test_the_stand_in_resolves_coordinates_it_knows():
    with ElectricityMapsStandIn() as stand_in:
        stand_in.places[(48.86, 2.35)] = "FR"
        em = ElectricityMapsProvider(stand_in.url, api_key=lambda: "k", retries=0)
        assert em.locate(48.8566, 2.3522) == "FR"
        with pytest.raises(ZoneNotFound):
            em.locate(0.0, -30.0)  # mid-Atlantic
        assert stand_in.upstream_calls("latest") == 2
