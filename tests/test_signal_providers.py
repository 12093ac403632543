"""The signal a request asks for, answered by the real providers' clients (their wire formats
served by `responses`): NESO beside the demo (keyless, Great Britain, its region names, postcodes
and cloud regions located by coordinates), and Electricity Maps beside WattTime (average,
average_direct and marginal in one deployment, each in its own cache namespace). The runs are
checked against a brute force over every whole-minute start written here."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import responses
from responses import matchers

from devkit.electricitymaps_stand_in import electricitymaps_zones, hourly_forecast
from devkit.neso_stand_in import postcode_body, regional_body
from devkit.watttime_stand_in import forecast_body, my_access_body, region_body
from carbon_optimizer.web.app_state import app_state
from tests.conftest import FIXED_NOW
from tests.support import TEST_REDIS_URL

NESO = "https://api.neso-carbon.test"
EM = "https://api.electricitymaps.test/v4"
WT = "https://api.watttime.test"
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237


def _best(values: list[float], step: int, series_start: datetime, earliest: datetime,
          latest: datetime, minutes: int) -> float:
    """The least mean intensity of a `minutes` run over a piecewise-constant series, starting at
    the earliest start or at any whole minute of the clock up to the latest start (the service's
    candidate starts), each integrated exactly second by second over the points it overlaps."""
    origin = series_start.timestamp()

    def grams(a: float, b: float) -> float:
        total, t = 0.0, a
        while t < b:
            index = int((t - origin) // step)
            upto = min(b, origin + (index + 1) * step)
            total += values[index] * (upto - t)
            t = upto
        return total

    first, last = earliest.timestamp(), latest.timestamp()
    starts = [first] + list(range(int(first // 60 + 1) * 60, int(last) + 1, 60))
    end_of_data = origin + step * len(values)
    means = [grams(t, t + 60 * minutes) / (60 * minutes) for t in starts if t + 60 * minutes <= end_of_data]
    return min(means)


# -- NESO beside the demo -------------------------------------------------------------------------

NESO_ENV = {"CARBON_PROVIDERS": "demo,neso", "NESO_BASE_URL": NESO, "UPSTREAM_RETRIES": "0"}
HALF_HOUR_FROM = FIXED_NOW.replace(minute=0, second=0)  # 10:17:30 rounded down to the half hour
LONDON = [210, 190, 170, 160, 150, 140, 120, 95, 90, 110, 150, 180] * 8  # 48 h of half hours
READING = [250, 240, 230, 60, 70, 220] * 16


def _serve_neso():
    responses.get(re.compile(rf"{re.escape(NESO)}/regional/intensity/[^/]+/fw48h/regionid/13"),
                  json=regional_body(13, HALF_HOUR_FROM, LONDON))
    responses.get(re.compile(rf"{re.escape(NESO)}/regional/intensity/[^/]+/fw48h/regionid/12"),
                  json=regional_body(12, HALF_HOUR_FROM, READING))
    responses.get(f"{NESO}/regional/postcode/RG10", json=postcode_body("RG10", 12, HALF_HOUR_FROM))


@responses.activate
@pytest.mark.parametrize("location, zone, values", [
    ("aws:eu-west-2", "GB-13", LONDON),   # a cloud region, located by its coordinates
    ("london", "GB-13", LONDON),          # NESO's short name
    ("RG10", "GB-12", READING),           # an outward postcode, asked of NESO
    ("GB-13", "GB-13", LONDON),           # the zone key itself
])
def test_neso_answers_average_direct_for_its_names_and_cloud_regions(make_app, location, zone, values):
    _serve_neso()
    client = make_app(NESO_ENV).test_client()
    earliest = FIXED_NOW + timedelta(minutes=3, seconds=41)
    answer = client.post("/api/v1/optimize", json={
        "duration": 47, "zones": [location], "signal": "average_direct",
        "earliest_start": earliest.isoformat(), "max_delay": "PT11H"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["location"], body["zone"]) == (location, zone)
    provenance = body["provenance"]
    assert (provenance["provider"], provenance["signal"], provenance["units"]) == (
        "neso", "average_direct", "gCO2/kWh")
    assert "CC BY 4.0" in provenance["attribution"]
    best = _best(values, 1800, HALF_HOUR_FROM, earliest, earliest + timedelta(hours=11), 47)
    assert body["carbon_intensity"] == pytest.approx(best, abs=0.01)


@responses.activate
def test_the_default_signal_stays_the_demo_and_neso_names_are_not_its_zones(make_app):
    _serve_neso()
    client = make_app(NESO_ENV).test_client()
    answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["FR"]})
    assert answer.status_code == 200 and answer.get_json()["provenance"]["provider"] == "demo"
    refused = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["london"]})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "zone_not_found"
    marginal = client.post("/api/v1/optimize", json={"duration": 60, "signal": "marginal"})
    assert marginal.status_code == 400
    assert "average (demo), average_direct (neso)" in marginal.get_json()["error"]["message"]
    outside = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["aws:eu-west-3"],
                                                    "signal": "average_direct"})
    assert outside.status_code == 400
    assert "outside what the provider neso covers" in outside.get_json()["error"]["details"][0]["message"]


# -- Electricity Maps beside WattTime -------------------------------------------------------------

EM_WT_ENV = {"CARBON_PROVIDERS": "electricitymaps,watttime", "ELECTRICITY_MAPS_API_KEY": "FAKE-em-key-61a",
             "ELECTRICITY_MAPS_BASE_URL": EM, "WATTTIME_BASE_URL": WT,
             "WATTTIME_USERNAME": "wt-user", "WATTTIME_PASSWORD": "FAKE-wt-pass-3c9",
             "UPSTREAM_RETRIES": "0"}
HOUR_START = FIXED_NOW.replace(minute=0, second=0)
LIFECYCLE = [400, 380, 300, 250, 260, 330] * 12
DIRECT = [350, 330, 250, 300, 120, 280] * 12
MOER_LBS = [900.0 - 7 * (i % 37) for i in range(72 * 12)]  # 72 h of 5-minute points


def _serve_em_and_watttime():
    responses.get(f"{EM}/zones", json=electricitymaps_zones())
    for factors, values in (("lifecycle", LIFECYCLE), ("direct", DIRECT)):
        responses.get(f"{EM}/carbon-intensity/forecast",
                      json=hourly_forecast("DE", HOUR_START, values, emission_factor_type=factors, v4=True),
                      match=[matchers.query_param_matcher({"emissionFactorType": factors}, strict_match=False)])
    responses.get(f"{WT}/login", json={"token": "FAKE-wt-token-77"})
    responses.get(f"{WT}/v3/my-access", json=my_access_body({"CAISO_NORTH": ("v3/forecast", "v3/historical")}))
    responses.get(f"{WT}/v3/region-from-loc", json=region_body("CAISO_NORTH", "California ISO Northern"),
                  match=[matchers.query_param_matcher({"latitude": "37.77", "longitude": "-122.42"},
                                                      strict_match=False)])
    start = FIXED_NOW.replace(minute=15, second=0)
    responses.get(f"{WT}/v3/forecast", json=forecast_body("CAISO_NORTH", start, MOER_LBS))
    return start


@responses.activate
@pytest.mark.parametrize("signal, values, provider, units", [
    (None, LIFECYCLE, "electricitymaps", "gCO2eq/kWh"),
    ("average", LIFECYCLE, "electricitymaps", "gCO2eq/kWh"),
    ("average_direct", DIRECT, "electricitymaps", "gCO2eq/kWh"),
])
def test_electricity_maps_serves_average_and_average_direct_from_its_own_factors(make_app, signal, values,
                                                                                provider, units):
    _serve_em_and_watttime()
    client = make_app(EM_WT_ENV).test_client()
    earliest = FIXED_NOW + timedelta(seconds=17)
    asked = {"duration": 53, "zones": ["DE"], "earliest_start": earliest.isoformat(), "max_delay": "PT9H"}
    answer = client.post("/api/v1/optimize", json=asked if signal is None else {**asked, "signal": signal})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["provenance"]["provider"], body["provenance"]["signal"], body["provenance"]["units"]) == (
        provider, signal or "average", units)
    best = _best(values, 3600, HOUR_START, earliest, earliest + timedelta(hours=9), 53)
    assert body["carbon_intensity"] == pytest.approx(best, abs=0.01)


@responses.activate
def test_watttime_answers_marginal_for_a_cloud_region_it_locates(make_app, redis_client, redis_prefix):
    start = _serve_em_and_watttime()
    env = {**EM_WT_ENV, "REDIS_URL": TEST_REDIS_URL, "CACHE_KEY_PREFIX": redis_prefix}
    client = make_app(env).test_client()
    earliest = FIXED_NOW + timedelta(minutes=1, seconds=9)
    answer = client.post("/api/v1/optimize", json={
        "duration": 31, "zones": ["aws:us-west-1"], "signal": "marginal",
        "earliest_start": earliest.isoformat(), "max_delay": "PT5H"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["location"], body["zone"]) == ("aws:us-west-1", "CAISO_NORTH")
    assert (body["provenance"]["provider"], body["provenance"]["signal"], body["provenance"]["units"]) == (
        "watttime", "marginal", "gCO2/kWh")
    grams = [v * LBS_PER_MWH_TO_G_PER_KWH for v in MOER_LBS]
    best = _best(grams, 300, start, earliest, earliest + timedelta(hours=5), 31)
    assert body["carbon_intensity"] == pytest.approx(best, abs=0.01)
    # Its own cache namespace: the default's keys are not touched, so signals never mix.
    assert redis_client.exists(f"{redis_prefix}watttime.marginal:forecast:CAISO_NORTH")
    assert not redis_client.exists(f"{redis_prefix}forecast:CAISO_NORTH")
    # /zones says so for this worker: located and served under marginal (other lists only when held).
    listing = client.get("/api/v1/zones?signal=marginal").get_json()
    entry = next(r for r in listing["cloud_regions"] if r["location"] == "aws:us-west-1")
    other = next(r for r in listing["cloud_regions"] if r["location"] == "aws:eu-west-1")
    assert entry["served"] and "marginal" in entry["signals"]
    assert not other["served"] and "marginal" not in other["signals"]
    # Located once per worker: a second request asks WattTime no more.
    again = client.post("/api/v1/optimize", json={"duration": 31, "zones": ["aws:us-west-1"],
                                                  "signal": "marginal", "max_delay": "PT5H"})
    assert again.status_code == 200
    assert sum("region-from-loc" in c.request.url for c in responses.calls) == 1


@responses.activate
def test_zones_of_two_signals_in_one_request_are_refused_naming_the_signal_that_serves_them(make_app):
    _serve_em_and_watttime()
    client = make_app(EM_WT_ENV).test_client()
    listing = client.get("/api/v1/zones?signal=marginal").get_json()
    assert listing["zones"] == ["CAISO_NORTH"] and listing["provider"] == "watttime"
    assert [(s["name"], s["provider"]) for s in listing["signals"]] == [
        ("average", "electricitymaps"), ("average_direct", "electricitymaps"), ("marginal", "watttime")]
    mixed = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE", "CAISO_NORTH"]})
    assert mixed.status_code == 400
    detail = mixed.get_json()["error"]["details"][0]
    assert detail["field"] == "zones[1]" and "served for marginal (watttime)" in detail["message"]


@responses.activate
def test_locating_many_cloud_regions_costs_one_wait_not_one_a_region(make_app):
    """Twelve regions never located before, WattTime slow to answer: the request waits once for
    all of them (the zone-list wait), asks no more of WattTime than the fetch pool runs at once
    (the rest are cancelled unstarted), and refuses each region saying it could not be located
    just now, instead of holding its thread for twelve waits."""
    import threading
    _serve_em_and_watttime()
    release = threading.Event()
    asked = []

    def slow(request):
        asked.append(request.url)
        release.wait(30)
        return 200, {}, '{"region": "CAISO_NORTH", "region_full_name": "x", "signal_type": "co2_moer"}'

    responses.remove(responses.GET, f"{WT}/v3/region-from-loc")  # drop the quick answer
    responses.add_callback(responses.GET, f"{WT}/v3/region-from-loc", callback=slow)
    app = make_app({**EM_WT_ENV, "UPSTREAM_CONCURRENCY": "2"})
    client = app.test_client()
    regions = ["aws:us-east-1", "aws:us-east-2", "aws:us-west-1", "aws:us-west-2", "gcp:us-central1",
               "gcp:us-east1", "gcp:us-east4", "gcp:us-west1", "gcp:us-west2", "azure:eastus",
               "azure:centralus", "azure:westus2"]
    try:
        answer = client.post("/api/v1/optimize", json={"duration": 30, "zones": regions, "signal": "marginal"})
        assert answer.status_code == 400
        details = answer.get_json()["error"]["details"]
        assert len(asked) <= 2 + 1  # the pool's two threads (one may start as the wait ends)
        assert len(details) == 12 and all(
            "cannot be located by the provider watttime just now" in d["message"] and "within 1 s" in d["message"]
            for d in details), details
    finally:
        release.set()
        # The pool's calls finish here, inside this test's mock, not in a later test's.
        app_state(app).engine.close(wait=True)
