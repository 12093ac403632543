"""While the provider's zone list cannot be had, unknown zone keys reach the provider only a few at
a time (issue 23, point 6: one request made 1,857 upstream calls in its deadline and left
thousands of failure keys in Redis).

Zone keys still pass unchecked then (an outage of the list fails no request that would otherwise
succeed), but at most 5 unchecked zones a request and 30 a worker a minute are sent upstream; the
rest are answered upstream_unavailable, per workload and zone, without a call. Zones known
otherwise (the region table's, those the provider has answered for) are not capped.

The provider is the Electricity Maps stand-in (its v3 wire format; /v3/zones failing with 503);
Redis is the machine's. Upstream calls are counted at the stand-in, keys in Redis.
"""

from __future__ import annotations

from tests.conftest import FIXED_NOW
from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast
from tests.support import TEST_REDIS_URL

START = FIXED_NOW.replace(minute=0, second=0)
PER_REQUEST, PER_MINUTE = 5, 30  # the documented caps, written out


def em_env(url: str, prefix: str) -> dict:
    return {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "test-key",
            "ELECTRICITY_MAPS_BASE_URL": url, "REDIS_URL": TEST_REDIS_URL, "CACHE_KEY_PREFIX": prefix,
            "UPSTREAM_RETRIES": "0", "UPSTREAM_FAILURE_BACKOFF_SECONDS": "30"}


def unknown_calls(stand_in: ElectricityMapsStandIn) -> int:
    return sum(n for (endpoint, zone), n in stand_in.calls.items()
               if endpoint == "forecast" and zone.startswith("XQ"))


def test_unchecked_zones_go_upstream_a_few_a_request_and_a_few_a_minute(make_app, redis_client, redis_prefix):
    with ElectricityMapsStandIn() as stand_in:
        stand_in.zone_list = (503, {"status": "error", "message": "temporarily unavailable"})
        stand_in.responses["DE"] = (200, hourly_forecast("DE", START, [300.0 - i for i in range(48)]))
        client = make_app(em_env(stand_in.url, redis_prefix)).test_client()

        # 20 workloads, each DE and 4 zone keys nobody serves: 80 unchecked zones in one request.
        batch = {"workloads": [{"id": f"w{i}", "duration": 61, "max_delay": "PT3H7M",
                                "zones": ["DE"] + [f"XQ{i:02d}{k}" for k in range(4)]} for i in range(20)]}
        answer = client.post("/api/v1/optimize", json=batch)
        assert answer.status_code == 200, answer.get_json()
        assert unknown_calls(stand_in) == PER_REQUEST
        assert stand_in.upstream_calls("forecast", "DE") == 1  # a known zone is not capped
        sent = {zone for (endpoint, zone) in stand_in.calls if zone.startswith("XQ")}
        for workload, result in zip(batch["workloads"], answer.get_json()["results"]):
            assert (result["status"], result["zone"]) == ("scheduled", "DE")
            failed = {u["zone"]: u["code"] for u in result["unavailable_zones"]}
            assert set(failed) == set(workload["zones"][1:])  # every unchecked zone is accounted for
            for zone, code in failed.items():
                # Sent: the provider's own answer (it knows no such zone); held back: no call.
                assert code == ("zone_not_found" if zone in sent else "upstream_unavailable"), (zone, code)
        held_back = next(u for r in answer.get_json()["results"] for u in r["unavailable_zones"]
                         if u["code"] == "upstream_unavailable")
        assert "zone list" in held_back["message"] and held_back["location"] == held_back["zone"]

        # More requests, each with zones never asked before: the worker's minute cap holds.
        for n in range(8):
            client.post("/api/v1/optimize", json={"workloads": [
                {"duration": 61, "zones": ["DE"] + [f"XQ{n}R{k:02d}" for k in range(40)]}]})
        assert unknown_calls(stand_in) == PER_MINUTE

        # A single workload of unchecked zones only: 503 with Retry-After, and no call.
        alone = client.post("/api/v1/optimize", json={"duration": 61, "zones": ["XQZZ1", "XQZZ2"]})
        assert alone.status_code == 503 and alone.headers["Retry-After"]
        assert alone.get_json()["error"]["code"] == "upstream_unavailable"
        forecast = client.get("/api/v1/forecast", query_string={"zone": "XQZZ3"})
        assert forecast.status_code == 503 and forecast.get_json()["error"]["code"] == "upstream_unavailable"
        assert unknown_calls(stand_in) == PER_MINUTE

    # What the cache wrote: one failure key per zone sent, none for the zones held back.
    failures = list(redis_client.scan_iter(match=f"{redis_prefix}forecast:XQ*", count=500))
    assert len(failures) == PER_MINUTE and all(k.endswith(":failure-code") for k in failures)
