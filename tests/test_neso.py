"""The NESO Carbon Intensity client against its wire format (mocked with `responses`, and the
loopback stand-in where a real socket matters), and the engine's choice over a NESO forecast
against a brute force over every whole-minute start."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import requests
import responses
from hypothesis import HealthCheck, given, settings, strategies as st

from carbon_optimizer.data.cache import ForecastCache
from carbon_optimizer.data.providers import neso
from carbon_optimizer.data.providers.base import (SIGNALS, CanLocate, HasHistory, HasZoneList, Provider,
                                                  attribution)
from carbon_optimizer.data.providers.neso import NesoProvider
from carbon_optimizer.engine import CarbonEngine
from carbon_optimizer.errors import UpstreamUnavailable, ZoneNotFound
from carbon_optimizer.scheduling.model import Job, Schedule
from carbon_optimizer.timeseries import to_epoch
from devkit.neso_stand_in import NesoStandIn, national_body, regional_body

BASE = "https://api.carbonintensity.test"
FIXTURES = Path(__file__).parent / "fixtures" / "neso"
NOW = datetime(2026, 11, 23, 10, 17, 31, tzinfo=timezone.utc)
FROM = "2026-11-23T10:00Z"
NATIONAL_URL = f"{BASE}/intensity/{FROM}/fw48h"
LONDON_URL = f"{BASE}/regional/intensity/{FROM}/fw48h/regionid/13"
MINUTE = 60


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def make_provider(retries=0, calls=None, **kwargs):
    observer = (lambda endpoint, outcome, seconds: calls.append((endpoint, outcome))) if calls is not None else None
    return NesoProvider(BASE, retries=retries, observer=observer, **kwargs)


def test_the_provider_declares_its_signal_unit_capabilities_and_credit():
    provider = make_provider()
    assert isinstance(provider, Provider) and provider.name == "neso" and provider.shared_cache
    assert provider.signal == "average_direct" and provider.signal in SIGNALS
    assert provider.units == "gCO2/kWh"
    assert all(isinstance(provider, capability) for capability in (HasHistory, HasZoneList, CanLocate))
    credit = attribution(provider)
    assert "NESO" in credit and "carbonintensity.org.uk" in credit and "CC BY 4.0" in credit
    assert provider.zones() == sorted(["GB"] + [f"GB-{i}" for i in range(1, 18)])


# -- {from} on the half hour ------------------------------------------------------------------------

@responses.activate
@pytest.mark.parametrize("now, expected", [
    (datetime(2026, 11, 23, 10, 17, 31, tzinfo=timezone.utc), "2026-11-23T10:00Z"),
    (datetime(2026, 11, 23, 10, 30, 0, tzinfo=timezone.utc), "2026-11-23T10:30Z"),
    (datetime(2026, 11, 23, 10, 59, 59, 999_999, tzinfo=timezone.utc), "2026-11-23T10:30Z"),
    (datetime(2026, 11, 23, 10, 29, 59, tzinfo=timezone.utc), "2026-11-23T10:00Z"),
    (datetime(2026, 12, 31, 23, 45, 7, tzinfo=timezone.utc), "2026-12-31T23:30Z"),
    (datetime(2027, 1, 1, 0, 0, 1, tzinfo=timezone.utc), "2027-01-01T00:00Z"),
    # An aware time in another zone is asked in UTC: 11:44 at +01:00 is 10:44Z.
    (datetime(2026, 6, 1, 11, 44, 12, tzinfo=timezone(timedelta(hours=1))), "2026-06-01T10:30Z"),
])
def test_from_is_now_rounded_down_to_the_half_hour_in_utc(now, expected):
    start = datetime.fromisoformat(expected.replace("Z", "+00:00")) - timedelta(minutes=30)
    responses.get(f"{BASE}/intensity/{expected}/fw48h", json=national_body(start, [100, 110, 120]))
    responses.get(f"{BASE}/regional/intensity/{expected}/fw48h/regionid/7",
                  json=regional_body(7, start, [300, 310]))
    provider = make_provider()
    national = provider.forecast("GB", now)
    regional = provider.forecast("GB-7", now)
    assert [c.request.url for c in responses.calls] == [
        f"{BASE}/intensity/{expected}/fw48h", f"{BASE}/regional/intensity/{expected}/fw48h/regionid/7"]
    # The forecast starts at the half hour before {from}, so at or before now.
    assert national.start == regional.start == start <= now


@responses.activate
def test_every_now_within_one_half_hour_asks_the_same_url():
    responses.get(NATIONAL_URL, json=fixture("national_fw48h.json"))
    provider = make_provider()
    for seconds in (0, 1, 59, 61, 17 * 60 + 31, 29 * 60 + 59):
        provider.forecast("GB", NOW.replace(minute=0, second=0) + timedelta(seconds=seconds))
    assert {c.request.url for c in responses.calls} == {NATIONAL_URL}


@responses.activate
def test_a_horizon_within_a_day_asks_fw24h():
    responses.get(f"{BASE}/intensity/{FROM}/fw24h", json=fixture("national_fw48h.json"))
    assert len(make_provider(horizon_hours=24).forecast("GB", NOW).values) == 6


# -- parsing ----------------------------------------------------------------------------------------

@responses.activate
def test_national_forecast_parsing_holds_a_null_and_flags_it():
    responses.get(NATIONAL_URL, json=fixture("national_fw48h.json"),
                  match=[responses.matchers.header_matcher({"Accept": "application/json"})])
    calls = []
    series = make_provider(calls=calls).forecast("GB", NOW)
    assert series.zone == "GB" and series.provider == "neso"
    assert series.start == datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc) and series.step_seconds == 1800
    # The forecast, not the first half hour's actual (205); the null 10:30 holds 10:00's value.
    assert list(series.values) == [212, 198, 198, 187, 176, 181]
    assert list(series.estimated) == [False, False, True, False, False, False]
    assert calls == [("intensity/forecast", "200")]


@responses.activate
@pytest.mark.parametrize("name", ["regional_fw48h_regionid_13.json", "regional_fw48h_regionid_13_documented.json"])
def test_regional_forecast_parsing_reads_the_live_and_the_documented_shape(name):
    responses.get(LONDON_URL, json=fixture(name))
    series = make_provider().forecast("GB-13", NOW)
    assert series.zone == "GB-13" and series.step_seconds == 1800
    assert series.start == datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc)
    assert list(series.values) == [143, 151, 160, 160, 122, 98]
    assert list(series.estimated) == [False, False, False, True, False, False]


@responses.activate
def test_a_missing_half_hour_is_held_and_flagged():
    body = fixture("national_fw48h.json")
    del body["data"][3]  # 11:00 missing
    responses.get(NATIONAL_URL, json=body)
    series = make_provider().forecast("GB", NOW)
    assert list(series.values) == [212, 198, 198, 198, 176, 181]
    assert list(series.estimated) == [False, False, True, True, False, False]


# -- failures ---------------------------------------------------------------------------------------

HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>cloudfront</body></html>"


@responses.activate
@pytest.mark.parametrize("zone, url", [("GB", NATIONAL_URL), ("GB-13", LONDON_URL)])
@pytest.mark.parametrize("status, body", [
    (500, fixture("error_500.json")),
    (502, HTML_PAGE),
    (503, b""),
    (504, HTML_PAGE),
    (429, {"message": "slow down"}),
    (200, HTML_PAGE),
    (200, b'{"data": [{"from": "2026-11-23T09:30Z"'),
    (200, {}),  # what the regional routes answered during an outage (api-definitions issue #20)
    (200, {"data": []}),
    (200, {"data": {}}),
    (200, {"data": "soon"}),
    (200, fixture("error_500.json")),
    (200, {"data": [{"from": "2026-11-23T09:30Z", "to": "2026-11-23T10:00Z",
                     "intensity": {"forecast": None, "actual": None, "index": None}}]}),
    (200, {"data": [{"from": "not a time", "intensity": {"forecast": 5}}]}),
    (200, {"data": [{"from": "2026-11-23T09:30Z", "intensity": "high"}]}),
])
def test_outages_and_malformed_answers_are_unavailable_and_name_the_zone(zone, url, status, body):
    if zone != "GB" and isinstance(body, dict) and isinstance(body.get("data"), list) and body["data"]:
        body = {"data": {"regionid": 13, "shortname": "London", "data": body["data"]}}
    if isinstance(body, bytes):
        responses.get(url, body=body, status=status, content_type="text/html")
    else:
        responses.get(url, json=body, status=status)
    with pytest.raises(UpstreamUnavailable) as raised:
        make_provider().forecast(zone, NOW)
    assert raised.value.zone == zone and zone in raised.value.message


@responses.activate
@pytest.mark.parametrize("failure", [requests.exceptions.ConnectTimeout("connect timed out"),
                                     requests.exceptions.ReadTimeout("read timed out"),
                                     requests.exceptions.ConnectionError("refused")])
def test_timeouts_and_refusals_are_unavailable(failure):
    responses.get(LONDON_URL, body=failure)
    with pytest.raises(UpstreamUnavailable) as raised:
        make_provider().forecast("GB-13", NOW)
    assert raised.value.zone == "GB-13"


def test_a_hung_neso_is_cut_at_the_call_deadline():
    with NesoStandIn(national=[100] * 4, delay=60) as stand_in:
        provider = NesoProvider(stand_in.url, retries=0, call_seconds=0.3, read_timeout=0.2)
        with pytest.raises(UpstreamUnavailable) as raised:
            provider.forecast("GB", NOW)
        assert raised.value.zone == "GB" and stand_in.calls == [f"/intensity/{FROM}/fw48h"]


@responses.activate
def test_5xx_is_retried_then_answered():
    responses.get(NATIONAL_URL, status=503)
    responses.get(NATIONAL_URL, json=fixture("national_fw48h.json"))
    provider = make_provider(retries=2)
    provider._http._session.adapters["https://"].max_retries.backoff_factor = 0  # keep the test fast
    assert len(provider.forecast("GB", NOW).values) == 6 and len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize("zone", ["GB-0", "GB-18", "GB-99", "GB-", "FR", "gb-13", "DE-GB", ""])
def test_an_unknown_zone_is_not_found_without_a_call(zone):
    with pytest.raises(ZoneNotFound) as raised:
        make_provider().forecast(zone, NOW)
    assert raised.value.zone == zone and len(responses.calls) == 0


@responses.activate
@pytest.mark.parametrize("status", [400, 404])
def test_a_region_neso_refuses_is_not_found(status):
    responses.get(LONDON_URL, json={"error": {"code": f"{status}", "message": "Region not found."}}, status=status)
    with pytest.raises(ZoneNotFound) as raised:
        make_provider().forecast("GB-13", NOW)
    assert raised.value.zone == "GB-13" and "GB-13" in raised.value.message


# -- region names and postcodes -----------------------------------------------------------------------

@responses.activate
@pytest.mark.parametrize("name, key", [
    ("london", "GB-13"), ("LONDON", "GB-13"), ("North Scotland", "GB-1"), ("  north   scotland ", "GB-1"),
    ("North Wales & Merseyside", "GB-6"), ("north wales and merseyside", "GB-6"), ("yorkshire", "GB-5"),
    ("South East England", "GB-14"), ("wales", "GB-17"), ("Scotland", "GB-16"), ("England", "GB-15"),
    ("GB", "GB"), ("gb", "GB"), ("GB-7", "GB-7"), ("gb-17", "GB-17"),
])
def test_short_names_and_zone_keys_resolve_without_asking_neso(name, key):
    assert make_provider().region_key(name) == key
    assert len(responses.calls) == 0


@responses.activate
@pytest.mark.parametrize("asked", ["RG10", "rg10", " Rg10 ", "RG10 8AA", "rg10 8aa", "RG108AA"])
def test_an_outward_postcode_is_asked_of_neso_in_the_documented_shape(asked):
    responses.get(f"{BASE}/regional/postcode/RG10", json=fixture("postcode_documented.json"))
    assert make_provider().region_key(asked) == "GB-12"
    assert [c.request.url for c in responses.calls] == [f"{BASE}/regional/postcode/RG10"]


@responses.activate
def test_the_live_shape_with_a_mismatched_id_resolves_by_short_name():
    # BN3 answered as an object, regionid 13 beside "South East England" (14 in the region list).
    responses.get(f"{BASE}/regional/postcode/BN3", json=fixture("postcode_object_issue8.json"))
    assert make_provider().region_key("BN3") == "GB-14"


@responses.activate
def test_an_unknown_short_name_falls_back_to_the_region_id():
    body = fixture("postcode_documented.json")
    body["data"][0]["shortname"] = "Southern England"
    responses.get(f"{BASE}/regional/postcode/SO14", json=body)
    assert make_provider().region_key("SO14") == "GB-12"


@responses.activate
def test_a_postcode_is_asked_once_and_the_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(neso, "POSTCODE_CACHE_SIZE", 2)
    for outward in ("RG10", "SW1A", "M1"):
        body = fixture("postcode_documented.json")
        body["data"][0]["postcode"] = outward
        responses.get(f"{BASE}/regional/postcode/{outward}", json=body)
    provider = make_provider()
    for asked in ("RG10", "rg10", "RG10 8AA", "SW1A", "RG10"):
        assert provider.region_key(asked) == "GB-12"
    assert len(responses.calls) == 2  # RG10 and SW1A, once each
    provider.region_key("M1")  # evicts SW1A, the least recently used
    provider.region_key("RG10")
    provider.region_key("SW1A")
    assert [c.request.url.rsplit("/", 1)[1] for c in responses.calls] == ["RG10", "SW1A", "M1", "SW1A"]


@responses.activate
def test_a_postcode_neso_does_not_know_is_not_found_and_not_remembered():
    responses.get(f"{BASE}/regional/postcode/W2", json=fixture("postcode_400.json"), status=400)
    provider = make_provider()
    for _ in range(2):
        with pytest.raises(ZoneNotFound) as raised:
            provider.region_key("W2")
        assert raised.value.zone == "W2" and "W2" in raised.value.message
    assert len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize("body", [{}, {"data": []}, {"data": [{}]}, {"data": [{"regionid": 12}, {"regionid": 13}]}])
def test_an_empty_postcode_answer_is_unavailable_and_not_remembered(body):
    responses.get(f"{BASE}/regional/postcode/S45", json=body)
    responses.get(f"{BASE}/regional/postcode/S45", json=fixture("postcode_documented.json"))
    provider = make_provider()
    with pytest.raises(UpstreamUnavailable) as raised:
        provider.region_key("S45")
    assert raised.value.zone == "S45"
    assert provider.region_key("S45") == "GB-12"


@responses.activate
def test_a_postcode_placed_outside_the_regions_is_not_found():
    body = fixture("postcode_documented.json")
    body["data"][0].update(regionid=18, shortname="GB")
    responses.get(f"{BASE}/regional/postcode/XX1", json=body)
    with pytest.raises(ZoneNotFound):
        make_provider().region_key("XX1")


@responses.activate
@pytest.mark.parametrize("name", ["Atlantis", "RG", "12345", "RG10 8A", "London Road", "GB-18", "SW1A 1AA 1"])
def test_neither_a_name_nor_a_postcode_is_not_found_without_a_call(name):
    with pytest.raises(ZoneNotFound):
        make_provider().region_key(name)
    assert len(responses.calls) == 0


def test_the_stand_in_serves_forecasts_and_postcodes_over_a_socket():
    with NesoStandIn(national=[200, 180], regional={11: [90, 80, 70]}, postcodes={"EX1": 11}) as stand_in:
        provider = NesoProvider(stand_in.url, retries=0)
        key = provider.region_key("ex1 2aa")
        series = provider.forecast(key, NOW)
        assert key == "GB-11" and list(series.values) == [90, 80, 70]
        assert list(provider.forecast("GB", NOW).values) == [200, 180]
        with pytest.raises(ZoneNotFound):
            provider.region_key("ZZ9")
        with pytest.raises(ZoneNotFound):
            provider.forecast("GB-3", NOW)  # the stand-in answers 400 for a region it has no data for


# -- history ----------------------------------------------------------------------------------------

@responses.activate
def test_national_history_is_the_actual_else_the_forecast_in_one_call():
    responses.get(f"{BASE}/intensity/2026-11-13T10:00Z/2026-11-23T10:00Z", json=fixture("national_range.json"))
    calls = []
    series = make_provider(calls=calls).history("GB", NOW)
    assert series.zone == "GB" and series.step_seconds == 1800
    assert series.start == datetime(2026, 11, 23, 7, 30, tzinfo=timezone.utc)
    assert list(series.values) == [224, 219, 210, 205]  # actual where NESO has one, else forecast
    assert calls == [("intensity/history", "200")]


def chunks(days, now=NOW):
    end = now.replace(minute=0, second=0)
    edges = [end - timedelta(days=days)]
    while edges[-1] < end:
        edges.append(min(edges[-1] + timedelta(days=14), end))
    fmt = "%Y-%m-%dT%H:%MZ"
    return [(a, b, f"{a.strftime(fmt)}/{b.strftime(fmt)}") for a, b in zip(edges, edges[1:])]


@responses.activate
@pytest.mark.parametrize("days, calls", [(10, 1), (14, 1), (15, 2), (30, 3), (40, 3)])
def test_national_history_is_split_into_calls_of_at_most_14_days(days, calls):
    spans = chunks(days)
    for a, b, span in spans:
        count = int((b - a) / timedelta(minutes=30))
        # As NESO answers: from the half hour ending at {from} to the one ending at {to}.
        responses.get(f"{BASE}/intensity/{span}",
                      json=national_body(a - timedelta(minutes=30), [300.0] * (count + 1), [250.0] * (count + 1)))
    series = make_provider(history_days=days).history("GB", NOW)
    assert len(responses.calls) == len(spans) == calls
    assert all(b - a <= timedelta(days=14) for a, b, _ in spans)
    assert series.start == spans[0][0] - timedelta(minutes=30) and series.end == spans[-1][1]
    assert set(series.values) == {250.0} and series.estimated is None  # contiguous: no gap at a seam


@responses.activate
def test_regional_history_is_forecasts_split_into_calls():
    spans = chunks(20)
    for i, (a, b, span) in enumerate(spans):
        count = int((b - a) / timedelta(minutes=30)) + 1
        responses.get(f"{BASE}/regional/intensity/{span}/regionid/2",
                      json=regional_body(2, a - timedelta(minutes=30), [40.0 + i] * count))
    series = make_provider(history_days=20).history("GB-2", NOW)
    assert [c.request.url for c in responses.calls] == [
        f"{BASE}/regional/intensity/{span}/regionid/2" for _, _, span in spans]
    assert len(spans) == 2 and series.zone == "GB-2"
    assert series.values[0] == 40.0 and series.values[-1] == 41.0 and series.end == spans[-1][1]


@responses.activate
def test_history_failures_are_typed():
    with pytest.raises(ZoneNotFound):
        make_provider().history("GB-40", NOW)
    responses.get(f"{BASE}/intensity/2026-11-13T10:00Z/2026-11-23T10:00Z", status=502, body=HTML_PAGE)
    with pytest.raises(UpstreamUnavailable) as raised:
        make_provider().history("GB", NOW)
    assert raised.value.zone == "GB"


# -- locate -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("place, lat, lon, key", [
    ("London", 51.507, -0.128, "GB-13"), ("Inverness", 57.478, -4.225, "GB-1"),
    ("Lerwick", 60.155, -1.145, "GB-1"), ("Stornoway", 58.209, -6.389, "GB-1"),
    ("Glasgow", 55.864, -4.252, "GB-2"), ("Edinburgh", 55.953, -3.189, "GB-2"),
    ("Manchester", 53.481, -2.243, "GB-3"), ("Newcastle", 54.978, -1.618, "GB-4"),
    ("Leeds", 53.801, -1.549, "GB-5"), ("Liverpool", 53.408, -2.992, "GB-6"),
    ("Cardiff", 51.482, -3.179, "GB-7"), ("Birmingham", 52.486, -1.890, "GB-8"),
    ("Nottingham", 52.955, -1.158, "GB-9"), ("Norwich", 52.631, 1.297, "GB-10"),
    ("Bristol", 51.455, -2.588, "GB-11"), ("Plymouth", 50.376, -4.143, "GB-11"),
    ("Penzance", 50.118, -5.537, "GB-11"), ("Southampton", 50.910, -1.404, "GB-12"),
    ("Brighton", 50.823, -0.137, "GB-14"), ("Canterbury", 51.280, 1.079, "GB-14"),
])
def test_locate_finds_the_region_of_a_city(place, lat, lon, key):
    assert make_provider().locate(lat, lon) == key, place


@pytest.mark.parametrize("place, lat, lon", [
    ("Paris", 48.857, 2.352), ("Dublin", 53.350, -6.260), ("Belfast", 54.597, -5.930),
    ("Douglas, Isle of Man", 54.150, -4.482), ("Jersey", 49.214, -2.131), ("Amsterdam", 52.370, 4.895),
    ("Torshavn", 62.01, -6.77), ("New York", 40.71, -74.0), ("Derry", 54.997, -7.309),
])
def test_locate_outside_great_britain_is_not_found(place, lat, lon):
    with pytest.raises(ZoneNotFound):
        make_provider().locate(lat, lon)


# -- the engine over a NESO forecast against a brute force ------------------------------------------

ENGINE_NOW = datetime(2026, 11, 23, 10, 17, 31, tzinfo=timezone.utc)
FIRST = datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc)  # the half hour ending at {from}
VALUES = np.random.default_rng(27).integers(20, 320, 97).astype(float)  # 48 h and the first half hour


def brute_force_grams(earliest, latest, duration, kw):
    """Least grams over every whole-minute start from the earliest (rounded up to the minute) to
    the latest whose run ends inside the forecast, with each half hour's value held through it."""
    first = to_epoch(FIRST)
    end = first + 1800 * len(VALUES)
    per_minute = np.repeat(VALUES, 30)
    best = None
    for start in range(-(-earliest // MINUTE) * MINUTE, min(latest, end - duration) + 1, MINUTE):
        at = (start - first) // MINUTE
        mean = per_minute[at:at + duration // MINUTE].sum() / (duration // MINUTE)
        grams = mean * kw * duration / 3600
        best = grams if best is None else min(best, grams)
    return best


@pytest.fixture
def neso_engine():
    """Built once for all the examples of the test (hypothesis runs them inside one call), and
    its mock ends with the test, so no later test's real socket meets it."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.get(f"{BASE}/intensity/2026-11-23T10:00Z/fw48h", json=national_body(FIRST, list(VALUES)))
        cache = ForecastCache(redis_url=None, ttl=3600, stale_ttl=7200, lock_seconds=5, failure_backoff=0)
        engine = CarbonEngine(make_provider(), cache)
        try:
            yield engine, mocked
        finally:
            engine.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(minutes=st.integers(0, 11 * 60).map(lambda m: 2 * m + 1),  # odd: 1 .. 1321 minutes
       offset=st.integers(0, 20 * 3600), delay=st.integers(0, 24 * 3600), kw=st.sampled_from([0.5, 3.0]))
def test_the_engine_picks_the_brute_force_optimum_of_a_neso_forecast(neso_engine, minutes, offset, delay, kw):
    engine, mocked = neso_engine
    earliest = to_epoch(ENGINE_NOW) + offset  # arbitrary seconds
    duration = minutes * MINUTE
    forecast_end = to_epoch(FIRST) + 1800 * len(VALUES)
    latest = min(earliest + delay, forecast_end - duration)
    if -(-earliest // MINUTE) * MINUTE > latest:
        latest = -(-earliest // MINUTE) * MINUTE  # a window without a whole minute gets its first
    job = Job(duration=duration, zones=("GB",), earliest_start=earliest, latest_start=latest,
              power_kw=kw, extend_horizon=False)
    outcome = engine.optimize([job], ENGINE_NOW)[0]
    expected = brute_force_grams(earliest, latest, duration, kw)
    if expected is None:  # the run cannot end inside the forecast
        assert not isinstance(outcome, Schedule)
        return
    assert isinstance(outcome, Schedule), outcome
    (start, end), = outcome.intervals
    assert start % MINUTE == 0 and earliest <= start <= latest
    assert end - start == duration and outcome.zone == "GB"
    assert outcome.emissions_grams == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # One NESO call served every example: {from} is the same half hour, and the cache kept it.
    assert len(mocked.calls) == 1


@responses.activate
def test_a_window_past_the_forecast_is_planned_with_neso_history():
    """The engine reaches past NESO's 48 h on estimates from its regional history (one 10-day call)."""
    responses.get(LONDON_URL, json=regional_body(13, FIRST, [200.0] * 97))
    end = ENGINE_NOW.replace(minute=0, second=0)
    responses.get(f"{BASE}/regional/intensity/2026-11-13T10:00Z/2026-11-23T10:00Z/regionid/13",
                  json=regional_body(13, end - timedelta(days=10, minutes=30), [150.0] * 481))
    cache = ForecastCache(redis_url=None, ttl=3600, stale_ttl=7200, lock_seconds=5, failure_backoff=0)
    engine = CarbonEngine(make_provider(), cache)
    try:
        at = to_epoch(ENGINE_NOW)
        job = Job(duration=3600, zones=("GB-13",), earliest_start=at, latest_start=at + 72 * 3600, power_kw=1)
        outcome = engine.optimize([job], ENGINE_NOW)[0]
    finally:
        engine.close()
    assert isinstance(outcome, Schedule) and outcome.zone == "GB-13"
    assert [c.request.url for c in responses.calls] == [
        LONDON_URL, f"{BASE}/regional/intensity/2026-11-13T10:00Z/2026-11-23T10:00Z/regionid/13"]
