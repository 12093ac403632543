"""A plain batch (no capacity) answers each workload exactly as it is answered alone: the same
fields, written the same way (each single answer's bytes appear as they are inside the batch's).
The web layer resolves each distinct location once per request and parses each distinct duration
and writes each distinct moment once; these tests check that those shortcuts change no answer and
no error, and that locations are still answered per workload."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from carbon_optimizer.web import request_models, response_models
from tests.conftest import FIXED_NOW

LOCATIONS = ["DE", "aws:eu-central-1", "FR", "azure:francecentral", "gcp:europe-west4", "NL", "ES",
             "PL", "gcp:europe-west3"]


def fifty_workloads() -> list[dict]:
    """50 workloads in the bench's shape, varied: odd-minute durations as minutes and as ISO text
    (repeated), starts at arbitrary seconds, zones and cloud regions of the same zones in
    different orders, energy or power or neither, some interruptible."""
    workloads = []
    for i in range(50):
        one: dict = {"id": f"job-{i}",
                     "duration": 37 + 15 * (i % 7) if i % 2 else f"PT{1 + i % 3}H{(7 * i) % 60}M",
                     "zones": [LOCATIONS[i % 9], LOCATIONS[(i + 4) % 9]][: 1 + i % 2],
                     "max_delay": f"PT{5 + i % 29}H"}
        if i % 5 == 1:
            one["earliest_start"] = (FIXED_NOW + timedelta(seconds=1237 * i + 11)).isoformat()
        if i % 3 == 0:
            one["power_kw"] = 1.5 + i
        elif i % 3 == 1:
            one["energy_kwh"] = 0.7 * i + 0.1
        if i % 8 == 3:
            one |= {"interruptible": True, "max_chunks": 3}
        workloads.append(one)
    return workloads


def test_a_50_workload_batch_answers_each_workload_as_its_single_answer_byte_for_byte(client):
    workloads = fifty_workloads()
    batch = client.post("/api/v1/optimize", json={"workloads": workloads})
    assert batch.status_code == 200
    results = batch.get_json()["results"]
    assert len(results) == 50
    for workload, result in zip(workloads, results):
        single = client.post("/api/v1/optimize", json=workload)
        assert single.status_code == 200
        answer = single.get_json()
        # Field by field, but for the plan's id: each answer is a plan of its own.
        assert result["plan_id"] != answer["plan_id"] and len(result["plan_id"]) == 32
        assert {**result, "plan_id": None} == {**answer, "plan_id": None}
        # And written alike.
        assert single.data.replace(answer["plan_id"].encode(), result["plan_id"].encode()) in batch.data
        asked = workload["zones"]
        assert result["location"] in asked and result["baseline"]["location"] == asked[0]
    assert {r["status"] for r in results} == {"scheduled"}
    assert any("chunks" in r for r in results)


def test_each_workload_keeps_its_own_location_for_a_zone_other_workloads_name_otherwise(client):
    # Three names for DE (a zone key and two cloud regions), two for FR, in one batch: each
    # workload's answer names the location it asked, not the one another workload asked first.
    names = [["aws:eu-central-1"], ["DE"], ["gcp:europe-west3"], ["FR"], ["azure:francecentral"],
             ["DE"], ["aws:eu-central-1"], ["gcp:europe-west4", "azure:francecentral"]]
    body = client.post("/api/v1/optimize", json={"workloads": [
        {"duration": 61, "zones": z, "max_delay": "PT9H"} for z in names]}).get_json()
    got = [(r["location"], r["zone"], r["baseline"]["location"], r["baseline"]["zone"])
           for r in body["results"]]
    expected_zone = {"aws:eu-central-1": "DE", "DE": "DE", "gcp:europe-west3": "DE", "FR": "FR",
                     "azure:francecentral": "FR", "gcp:europe-west4": "NL"}
    for asked, (location, zone, first, first_zone) in zip(names, got):
        assert location in asked and zone == expected_zone[location]
        assert (first, first_zone) == (asked[0], expected_zone[asked[0]])


def test_an_unknown_location_named_by_several_workloads_is_reported_at_every_field(client):
    answer = client.post("/api/v1/optimize", json={"workloads": [
        {"duration": 60, "zones": ["aws:mars-1"]},
        {"duration": 60, "zones": ["DE", "aws:mars-1"]},
        {"duration": 60, "zones": ["aws:eu-central-1"]},
        {"duration": 60, "zones": ["gcp:europe-west44", "aws:mars-1"]}]})
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "zone_not_found"
    fields = [d["field"] for d in error["details"]]
    assert fields == ["workloads[0].zones[0]", "workloads[1].zones[1]", "workloads[3].zones[0]",
                      "workloads[3].zones[1]"]
    mars = [d for d in error["details"] if "aws:mars-1" in d["message"]]
    assert len(mars) == 3 and all(d["suggestions"] == mars[0]["suggestions"] for d in mars)
    assert "gcp:europe-west4" in error["details"][2]["suggestions"]


def minutes_of(text: str) -> float:
    """An independent reading of the ISO durations used here (weeks, days, hours, minutes)."""
    import re
    match = re.fullmatch(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", text.strip())
    w, d, h, m = (int(g or 0) for g in match.groups())
    return ((w * 7 + d) * 24 + h) * 60 + m


def test_repeated_durations_are_each_read_as_written_and_bad_ones_still_refused(client):
    texts = ["PT1H7M", " PT1H7M ", "PT1H7M", "P1D", "PT90M", "P1W", "PT1H7M", "PT0000000000000000000000000000000000000001H"]
    batch = request_models.WorkloadBatch.model_validate({"workloads": [{"duration": t} for t in texts * 3]})
    assert [w.duration for w in batch.workloads] == [timedelta(minutes=minutes_of(t)) for t in texts * 3]
    answer = client.post("/api/v1/optimize", json={"workloads": [
        {"duration": "PT1H7M"}, {"duration": "PT1H7X"}, {"duration": "PT1H7M"}, {"duration": "P1Y"}]})
    assert answer.status_code == 400
    assert [d["field"] for d in answer.get_json()["error"]["details"]] == [
        "workloads[1].duration", "workloads[3].duration"]


moments = st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(9998, 12, 30),
                       timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                                  timezone(timedelta(hours=-8))]))


@settings(max_examples=300, deadline=None)
@given(moment=moments, other=moments)
def test_moments_are_written_in_utc_whichever_offset_was_written_first(moment, other):
    for one in (moment, moment.astimezone(timezone(timedelta(hours=-3))), other, moment):
        expected = one.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + "Z"
        assert response_models.Chunk(start=one, end=one, duration_minutes=0).to_json() == \
            f'{{"start":"{expected}","end":"{expected}","duration_minutes":0}}'
