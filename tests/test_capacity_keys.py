"""Capacity keys (capacity.max_concurrent per zone, capacity.max_power_kw) are resolved as workload
zones are: a cloud region limits its zone, a near miss is answered with the same close matches, a
key that limits nothing or names a zone twice is refused, and every error names the key a client
wrote (capacity.max_concurrent.de), never pydantic's names for its types. Through the Flask test
client on the demo provider."""

import json
from datetime import datetime, timedelta

import pytest

from carbon_optimizer.web.app_state import app_state

# Off every grid: a start at odd seconds, runs of odd minutes.
EARLIEST = "2026-11-23T11:03:17Z"
IN_IE = [{"id": "by-region", "duration": 67, "zones": ["aws:eu-west-1"], "earliest_start": EARLIEST,
          "max_delay": "PT2H", "power_kw": 5},
         {"id": "by-zone", "duration": 67, "zones": ["IE"], "earliest_start": EARLIEST,
          "max_delay": "PT2H", "power_kw": 5}]
IN_DE = {"id": "de", "duration": 43, "zones": ["DE"], "earliest_start": EARLIEST, "max_delay": "PT3H"}
INVALID = "the request is not valid; see details"


def post(client, capacity, workloads=None):
    body = {"workloads": workloads or IN_IE + [IN_DE]}
    return client.post("/api/v1/optimize", json=body if capacity is None else {**body, "capacity": capacity})


def spans(body):
    def parse(text):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return {r["id"]: (parse(r["start"]), parse(r["end"])) for r in body["results"]}


def overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.parametrize("capacity", [{"max_concurrent": {"aws:eu-west-1": 1}},
                                      {"max_power_kw": {"aws:eu-west-1": 8}}])
def test_a_cloud_region_key_limits_the_zone_it_resolves_to(client, capacity):
    free = post(client, None)
    assert free.status_code == 200, free.get_json()
    alone = spans(free.get_json())
    # Each alone, both IE workloads take the same cleanest 67 minutes: the limit has to bite.
    assert alone["by-region"] == alone["by-zone"]
    limited = post(client, capacity)
    assert limited.status_code == 200, limited.get_json()
    body = limited.get_json()
    assert [(r["id"], r["status"], r["zone"]) for r in body["results"]] == [
        ("by-region", "scheduled", "IE"), ("by-zone", "scheduled", "IE"), ("de", "scheduled", "DE")]
    placed = spans(body)
    assert not overlap(placed["by-region"], placed["by-zone"])
    for start, end in placed.values():
        assert start.second == 0 and end - start in (timedelta(minutes=67), timedelta(minutes=43))


def test_a_key_no_workload_can_use_is_refused(client):
    response = post(client, {"max_concurrent": {"FR": 1}, "max_power_kw": {"gcp:europe-west1": 3}})
    assert response.status_code == 400
    assert response.get_json() == {"error": {"code": "invalid_request", "message": INVALID, "details": [
        {"field": "capacity.max_concurrent.FR",
         "message": "no workload of this batch may run in FR, so this limit would limit nothing; "
                    "the batch's zones are DE, IE"},
        {"field": "capacity.max_power_kw.gcp:europe-west1",
         "message": "no workload of this batch may run in gcp:europe-west1 (zone BE), so this limit "
                    "would limit nothing; the batch's zones are DE, IE"}]}}


def test_two_keys_for_one_zone_are_refused_naming_both(client):
    response = post(client, {"max_concurrent": {"IE": 1, "aws:eu-west-1": 2},
                             "max_power_kw": {"aws:eu-west-1": 8, "DE": 4}})
    assert response.status_code == 400
    assert response.get_json() == {"error": {"code": "invalid_request", "message": INVALID, "details": [
        {"field": "capacity.max_concurrent.aws:eu-west-1",
         "message": "IE and aws:eu-west-1 both name zone IE: give one limit per zone"}]}}


@pytest.mark.parametrize("key", ["de", "aws:eu-wst-1", "XX"])
def test_an_unknown_key_gets_what_an_unknown_workload_zone_gets(client, key):
    as_zone = client.post("/api/v1/optimize", json={"workloads": [{**IN_DE, "zones": [key]}]})
    as_key = post(client, {"max_concurrent": {key: 1}})
    assert as_zone.status_code == as_key.status_code == 400
    expected = as_zone.get_json()
    [detail] = expected["error"]["details"]
    assert detail.pop("field") == "workloads[0].zones[0]"
    assert as_key.get_json() == {"error": {**expected["error"], "details": [
        {"field": f"capacity.max_concurrent.{key}", **detail}]}}


def test_a_lowercase_key_names_the_zone_it_meant(client):
    response = post(client, {"max_power_kw": {"de": 3}})
    assert response.status_code == 400
    assert response.get_json() == {"error": {
        "code": "zone_not_found", "message": "unknown zone or cloud region; see details", "details": [
            {"field": "capacity.max_power_kw.de",
             "message": "de is neither a zone the carbon-data provider serves nor a cloud region "
                        "(written provider:region); did you mean DE?",
             "suggestions": ["DE"]}]}}


@pytest.mark.parametrize("capacity, details", [
    ({"max_concurrent": {"DE": -1, "a b": 1, "IE": "2", "aws:eu-west-1": True}}, [
        {"field": "capacity.max_concurrent.DE", "message": "must be a whole number from 0 to 100000 (got -1)"},
        {"field": "capacity.max_concurrent.a b",
         "message": "must be an Electricity Maps zone key such as DE, or a cloud region such as aws:eu-west-1"},
        {"field": "capacity.max_concurrent.IE", "message": "must be a whole number from 0 to 100000 (got '2')"},
        {"field": "capacity.max_concurrent.aws:eu-west-1",
         "message": "must be a whole number from 0 to 100000 (got true)"}]),
    ({"max_concurrent": 0}, [
        {"field": "capacity.max_concurrent",
         "message": "must be a whole number from 1 to 100000 (got 0), or an object of zone key or "
                    "cloud region -> a whole number from 0 to 100000"}]),
    ({"max_concurrent": [1]}, [
        {"field": "capacity.max_concurrent",
         "message": "must be a whole number from 1 to 100000 (got a list), or an object of zone key "
                    "or cloud region -> a whole number from 0 to 100000"}]),
    ({"max_power_kw": {"DE": 0, "IE": 2.5e9}}, [
        {"field": "capacity.max_power_kw.DE", "message": "must be a number of kW above 0 and at most 1000000000 (got 0)"},
        {"field": "capacity.max_power_kw.IE",
         "message": "must be a number of kW above 0 and at most 1000000000 (got 2500000000.0)"}]),
    ({"max_power_kw": 8}, [
        {"field": "capacity.max_power_kw", "message": "must be an object of zone key or cloud region -> kW (got 8)"}]),
])
def test_bad_limits_are_named_by_the_key_written(client, capacity, details):
    response = post(client, capacity)
    assert response.status_code == 400
    assert response.get_json() == {"error": {"code": "invalid_request", "message": INVALID,
                                             "details": details}}


def test_the_openapi_document_says_how_keys_are_read(client):
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    fields = schemas["FleetCapacity"]["properties"]
    rule = ("Keys are zone keys or cloud regions (aws:eu-west-1), resolved as workload zones are: "
            "each must resolve to a zone some workload of the batch may run in (a limit anywhere "
            "else would limit nothing), and each zone may be named once")
    assert fields["max_concurrent"]["description"] == (
        "workloads running at once: one number for all zones, or per zone. " + rule)
    assert fields["max_power_kw"]["description"] == (
        "per zone: the sum of running workloads' power_kw. " + rule)
    keys = {"pattern": "^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$"}
    number, per_zone = fields["max_concurrent"]["anyOf"][0]["oneOf"]
    assert (number["type"], number["minimum"], number["maximum"]) == ("integer", 1, 100000)
    assert per_zone["propertyNames"] == keys and per_zone["additionalProperties"] == {
        "type": "integer", "minimum": 0, "maximum": 100000}
    power = fields["max_power_kw"]["anyOf"][0]
    assert power["propertyNames"] == keys and power["additionalProperties"] == {
        "type": "number", "exclusiveMinimum": 0, "maximum": 1000000000}


def test_capacity_keys_are_bounded_as_workload_locations_are(client, monkeypatch):
    """Close matches (a search over every zone and region) for the first few unknown keys only, the
    first 20 details listed and the rest counted; more keys than a batch may name locations are
    refused before any is looked up."""
    engine = app_state(client.application).engine
    searched = []
    real = engine.regions.resolve
    monkeypatch.setattr(engine.regions, "resolve", lambda name, served, suggest=True:
                        searched.append((name, suggest)) or real(name, served, suggest))
    response = post(client, {"max_concurrent": {f"Q{k}": 1 for k in range(30)}})
    assert response.status_code == 400
    details = response.get_json()["error"]["details"]
    assert [d["field"] for d in details] == [f"capacity.max_concurrent.Q{k}" for k in range(20)] + ["capacity"]
    assert details[-1]["message"] == "and 10 more like these, not listed"
    assert [name for name, suggest in searched if name.startswith("Q") and suggest] == [
        f"Q{k}" for k in range(5)]
    searched.clear()
    response = post(client, {"max_power_kw": {f"Z{k}": 1 for k in range(101)}})
    assert response.status_code == 400
    assert [name for name, _ in searched] == ["aws:eu-west-1", "IE", "DE"]  # the workloads' only
    assert response.get_json()["error"]["details"] == [
        {"field": "capacity.max_power_kw", "message": "at most 100 zones and cloud regions (got 101)"}]


@pytest.mark.parametrize("raw", [b"1" + b"0" * 400, b"-1" + b"0" * 400, b"1e400", b"NaN", b"Infinity"])
def test_a_power_limit_off_every_float_is_a_400_naming_it(client, raw):
    """JSON integers have no size limit and Python's json reads NaN and Infinity: none may reach a
    float conversion that raises (a 500), each is refused naming the key."""
    body = json.dumps({"workloads": IN_IE + [IN_DE], "capacity": {"max_power_kw": {"IE": 0}}})
    response = client.post("/api/v1/optimize", data=body.replace('"IE": 0', '"IE": ' + raw.decode()),
                           content_type="application/json")
    assert response.status_code == 400, response.get_data()[:300]
    [detail] = response.get_json()["error"]["details"]
    assert detail["field"] == "capacity.max_power_kw.IE"
