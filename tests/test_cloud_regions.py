"""Cloud regions as locations, the up-front zone check in every provider, and GET /api/v1/zones.

The expected zones below are written out from the providers' public region pages (the test's own
reference), not read from the table under test.
"""

from __future__ import annotations

import csv
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import responses

from carbon_optimizer.data.providers.base import SIGNALS

from carbon_optimizer.data.cloud_regions import TABLE_PATH, read_table
from carbon_optimizer.data.providers.demo import DemoProvider
from carbon_optimizer.errors import ConfigError
from carbon_optimizer.settings import load_settings
from tests.conftest import FIXED_NOW
from devkit.electricitymaps_stand_in import electricitymaps_zones, hourly_forecast
from tests.support import TEST_REDIS_URL

BASE = "https://api.electricitymaps.test/v3"
EM = {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "FAKE-em-key-9d1",
      "ELECTRICITY_MAPS_BASE_URL": BASE, "UPSTREAM_RETRIES": "0"}
HOUR_START = FIXED_NOW.replace(minute=0, second=0)


def table_rows() -> list[dict]:
    with open(TABLE_PATH, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def upstream_calls(path: str) -> int:
    return sum(f"/v3/{path}" in call.request.url for call in responses.calls)


# -- resolution ------------------------------------------------------------------------------------

@pytest.mark.parametrize("location,zone", [
    ("aws:eu-central-1", "DE"),        # Frankfurt
    ("gcp:europe-west4", "NL"),        # Eemshaven
    ("azure:francecentral", "FR"),     # Paris
    ("aws:us-west-1", "US-CAL-CISO"),  # Northern California
    ("AWS:EU-West-1", "IE"),           # providers' names are case-insensitive
])
def test_a_cloud_region_resolves_to_its_zone_and_the_answer_names_both(client, location, zone):
    answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": [location],
                                                   "max_delay": "PT6H"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["location"], body["zone"]) == (location, zone)
    assert (body["baseline"]["location"], body["baseline"]["zone"]) == (location, zone)
    forecast = client.get("/api/v1/forecast", query_string={"zone": location})
    assert forecast.status_code == 200
    assert (forecast.get_json()["location"], forecast.get_json()["zone"]) == (location, zone)


def test_regions_and_zones_mix_and_each_answer_echoes_what_was_asked(client):
    asked = ["aws:eu-central-1", "gcp:europe-west4", "azure:francecentral", "ES"]
    single = client.post("/api/v1/optimize", json={"duration": 60, "zones": asked, "max_delay": "PT6H"})
    body = single.get_json()
    assert single.status_code == 200
    assert {"aws:eu-central-1": "DE", "gcp:europe-west4": "NL", "azure:francecentral": "FR",
            "ES": "ES"}[body["location"]] == body["zone"]
    assert body["baseline"]["location"] == "aws:eu-central-1"  # the first location asked
    batch = client.post("/api/v1/optimize", json={"workloads": [
        {"duration": 60, "zones": ["gcp:europe-west4"]}, {"duration": 30, "zones": ["FR"]}]})
    results = batch.get_json()["results"]
    assert batch.status_code == 200
    assert [(r["location"], r["zone"]) for r in results] == [("gcp:europe-west4", "NL"), ("FR", "FR")]


def test_two_regions_in_one_zone_count_once_as_the_first_named(client):
    body = client.post("/api/v1/optimize", json={
        "duration": 60, "zones": ["gcp:europe-west3", "aws:eu-central-1"]}).get_json()
    assert (body["location"], body["zone"]) == ("gcp:europe-west3", "DE")


def test_an_unknown_region_is_a_400_naming_the_field_and_close_matches(client):
    answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE", "aws:mars-1"]})
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "zone_not_found"
    [detail] = error["details"]
    assert detail["field"] == "zones[1]" and "aws:mars-1" in detail["message"]
    known = {f"{r['provider']}:{r['region']}" for r in table_rows()}
    assert detail["suggestions"] and set(detail["suggestions"]) <= known
    assert all(s.startswith("aws:") for s in detail["suggestions"])
    assert all(s in detail["message"] for s in detail["suggestions"])

    batch = client.post("/api/v1/optimize", json={"workloads": [
        {"duration": 60, "zones": ["DE"]}, {"duration": 60, "zones": ["FR", "gcp:europe-west44"]}]})
    [detail] = batch.get_json()["error"]["details"]
    assert batch.status_code == 400 and detail["field"] == "workloads[1].zones[1]"
    assert "gcp:europe-west4" in detail["suggestions"]

    forecast = client.get("/api/v1/forecast", query_string={"zone": "aws:mars-1"})
    assert forecast.status_code == 400
    assert forecast.get_json()["error"]["details"][0]["field"] == "zone"
    assert forecast.get_json()["error"]["details"][0]["suggestions"]


@pytest.mark.parametrize("asked,expected", [
    ("de", "DE"),                      # a zone key in the wrong case
    ("eu-west-1", "aws:eu-west-1"),    # a region without its provider
    ("gcp:eu-west-1", "aws:eu-west-1"),  # a region under the wrong provider
    ("azure:west-europe", "azure:westeurope"),
    ("US-CAL-CIS0", "US-CAL-CISO"),
])
def test_near_misses_suggest_what_was_meant(client, asked, expected):
    answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": [asked]})
    assert answer.status_code == 400
    assert expected in answer.get_json()["error"]["details"][0]["suggestions"]


def test_a_default_zone_from_configuration_may_be_a_region(make_app):
    client = make_app({"DEFAULT_ZONES": "gcp:europe-west4,FR"}).test_client()
    body = client.post("/api/v1/optimize", json={"duration": 60, "max_delay": "PT4H"}).get_json()
    assert {body["baseline"]["location"], body["baseline"]["zone"]} == {"gcp:europe-west4", "NL"}


# -- the table -------------------------------------------------------------------------------------

def test_the_region_table_has_no_duplicate_and_every_row_a_source():
    rows = table_rows()
    names = Counter((r["provider"], r["region"].lower()) for r in rows)
    assert [name for name, n in names.items() if n > 1] == []
    for row in rows:
        assert row["source"].startswith("https://"), row
        assert row["location"].strip() and row["zone"].strip(), row
    per_provider = Counter(r["provider"] for r in rows)
    assert per_provider["aws"] >= 25 and per_provider["gcp"] >= 35 and per_provider["azure"] >= 40
    assert len(read_table()) == len(rows)


def test_every_zone_of_the_table_is_served_by_the_demo_and_by_electricity_maps():
    zones = {r["zone"] for r in table_rows()}
    assert zones - set(DemoProvider().zones()) == set()
    assert zones - set(electricitymaps_zones()) == set()


def test_a_duplicate_or_unsourced_row_fails_loading(tmp_path: Path):
    text = TABLE_PATH.read_text(encoding="utf-8")
    first_row = text.splitlines()[1]
    twice = tmp_path / "twice.csv"
    twice.write_text(text + first_row + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="appears twice"):
        read_table(twice)
    unsourced = tmp_path / "unsourced.csv"
    unsourced.write_text("provider,region,zone,location,source\naws,xx-east-1,DE,Somewhere,\n")
    with pytest.raises(ValueError, match="no https source"):
        read_table(unsourced)


def test_overrides_change_and_add_regions(make_app):
    client = make_app({"CLOUD_REGION_OVERRIDES": "aws:eu-west-1=GB, acme:dc-1=FR"}).test_client()
    body = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["aws:eu-west-1"]}).get_json()
    assert (body["location"], body["zone"]) == ("aws:eu-west-1", "GB")
    body = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["acme:dc-1"]}).get_json()
    assert (body["location"], body["zone"]) == ("acme:dc-1", "FR")
    listed = {r["location"]: r for r in client.get("/api/v1/zones").get_json()["cloud_regions"]}
    assert listed["aws:eu-west-1"]["zone"] == "GB" and listed["aws:eu-west-1"]["place"] == "Ireland"
    assert "CLOUD_REGION_OVERRIDES" in listed["acme:dc-1"]["source"]


@pytest.mark.parametrize("value", ["aws:eu-west-1", "aws:eu-west-1=de", "eu-west-1=IE"])
def test_a_malformed_override_stops_start_up_naming_the_variable(value):
    with pytest.raises(ConfigError, match="CLOUD_REGION_OVERRIDES"):
        load_settings({"CLOUD_REGION_OVERRIDES": value})


# -- unknown zones, up front, in every provider ------------------------------------------------------

def test_demo_refuses_a_zone_it_does_not_have(client):
    for body in ({"duration": 60, "zones": ["XX"]}, {"workloads": [{"duration": 60, "zones": ["US-CA"]}]}):
        answer = client.post("/api/v1/optimize", json=body)
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "zone_not_found"
    assert client.get("/api/v1/forecast?zone=XX").status_code == 400


def portal_export(path: Path, zone: str, hours: int = 72) -> None:
    """A data-portal export as Electricity Maps writes it (the columns the file provider reads)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["Datetime (UTC)", "Country", "Zone Name", "Zone Id",
                      "Carbon Intensity gCO₂eq/kWh (direct)", "Carbon Intensity gCO₂eq/kWh (LCA)"])
        for hour in range(hours):
            moment = HOUR_START.replace(hour=0) + timedelta(hours=hour)
            out.writerow([moment.strftime("%Y-%m-%d %H:%M:%S"), "Spain", "Spain", zone, 100 + hour, 120 + hour])


def test_file_provider_refuses_a_zone_not_in_its_files_and_lists_its_zones(make_app, tmp_path):
    portal_export(tmp_path / "ES_2026_hourly.csv", "ES")
    client = make_app({"CARBON_PROVIDER": "file", "CARBON_DATA_DIR": str(tmp_path)}).test_client()
    assert client.post("/api/v1/optimize", json={"duration": 60, "zones": ["aws:eu-south-2"]}).get_json()[
        "zone"] == "ES"
    refused = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]})
    assert refused.status_code == 400 and refused.get_json()["error"]["details"][0]["field"] == "zones[0]"
    # A region whose zone the files lack is refused too, saying which zone.
    region = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["aws:eu-central-1"]})
    assert region.status_code == 400 and "DE" in region.get_json()["error"]["details"][0]["message"]
    listed = client.get("/api/v1/zones").get_json()
    assert listed["provider"] == "file" and listed["zones"] == ["ES"]
    served = {r["location"] for r in listed["cloud_regions"] if r["served"]}
    assert served == {f"{r['provider']}:{r['region']}" for r in table_rows() if r["zone"] == "ES"}


@responses.activate
def test_electricity_maps_refuses_a_zone_off_its_list_without_asking_for_a_forecast(make_app):
    responses.get(f"{BASE}/zones", json=electricitymaps_zones())
    responses.get(f"{BASE}/carbon-intensity/forecast", json=hourly_forecast("NL", HOUR_START, [200.0] * 48))
    client = make_app(EM).test_client()
    refused = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["XX"]})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "zone_not_found"
    assert client.get("/api/v1/forecast?zone=XX").status_code == 400
    assert upstream_calls("carbon-intensity") == 0
    body = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["gcp:europe-west4"]}).get_json()
    assert (body["location"], body["zone"], body["provenance"]["provider"]) == (
        "gcp:europe-west4", "NL", "electricitymaps")
    assert upstream_calls("zones") == 1


@responses.activate
def test_without_the_zone_list_zone_keys_pass_and_the_provider_answers_for_them(make_app):
    responses.get(f"{BASE}/zones", status=503)
    responses.get(f"{BASE}/carbon-intensity/forecast", json=hourly_forecast("DE", HOUR_START, [300.0] * 48))
    client = make_app({**EM, "UPSTREAM_FAILURE_BACKOFF_SECONDS": "30"}).test_client()
    for _ in range(2):
        answer = client.post("/api/v1/optimize", json={"duration": 60, "zones": ["aws:eu-central-1"]})
        assert answer.status_code == 200 and answer.get_json()["zone"] == "DE"
    assert upstream_calls("zones") == 1  # the failure is remembered for the backoff
    listing = client.get("/api/v1/zones")
    assert listing.status_code == 503 and int(listing.headers["Retry-After"]) > 0
    assert listing.get_json()["error"]["code"] == "upstream_unavailable"


# -- GET /api/v1/zones -----------------------------------------------------------------------------

def test_zones_lists_the_demo_zones_and_every_cloud_region(client):
    answer = client.get("/api/v1/zones")
    assert answer.status_code == 200
    body = answer.get_json()
    with open(TABLE_PATH.parent / "providers" / "demo_zones.csv", newline="", encoding="utf-8") as handle:
        expected = sorted({row["zone"] for row in csv.DictReader(handle)} | {"ES", "US-CAL-CISO"})
    assert body["provider"] == "demo" and body["zones"] == expected
    rows = table_rows()
    assert len(body["cloud_regions"]) == len(rows)
    entry = next(r for r in body["cloud_regions"] if r["location"] == "azure:francecentral")
    assert entry == {"location": "azure:francecentral", "provider": "azure", "region": "francecentral",
                     "zone": "FR", "place": "Paris, France", "served": True, "signals": ["average"],
                     "source": "https://learn.microsoft.com/en-us/azure/reliability/regions-list"}
    assert body["signal"] == "average" and body["signals"] == [
        {"name": "average", "description": SIGNALS["average"].description, "provider": "demo",
         "units": "gCO2eq/kWh", "attribution": None, "default": True}]
    assert all(r["served"] for r in body["cloud_regions"])


@responses.activate
def test_zones_from_electricity_maps_are_cached_in_redis_for_hours(make_app, redis_client, redis_prefix):
    recorded = electricitymaps_zones()
    responses.get(f"{BASE}/zones", json=recorded)
    env = {**EM, "REDIS_URL": TEST_REDIS_URL, "CACHE_KEY_PREFIX": redis_prefix}
    first = make_app(env).test_client().get("/api/v1/zones")
    assert first.status_code == 200
    assert first.get_json()["provider"] == "electricitymaps"
    assert first.get_json()["zones"] == sorted(recorded)
    assert responses.calls[0].request.headers["auth-token"] == "FAKE-em-key-9d1"
    # Another worker (a second app on the same Redis) answers from the cache: no upstream call.
    second = make_app(env).test_client().get("/api/v1/zones")
    assert second.get_json() == first.get_json()
    assert upstream_calls("zones") == 1
    ttl = redis_client.ttl(f"{redis_prefix}zones")
    assert 3 * 3600 < ttl <= 6 * 3600
