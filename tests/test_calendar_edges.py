"""Issue 23.8: a timestamp or duration a client sends that takes the allowed window off the calendar
(before 0001-01-01T00:00:00Z or after 9999-12-31T23:59:59Z once in UTC) is a 400 naming the field
and the value, in every place a request carries one: optimize's single and batch forms (each
workload's earliest_start, deadline, latest_start, max_delay, and as_of at the top), never a 500.
GET /forecast takes no timestamp (zone, hours up to 744, history)."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from carbon_optimizer.timeseries import to_epoch

# Valid local times whose UTC instant is outside the years 1 to 9999: the seven variants the issue
# found and their neighbours, at odd seconds.
OFF_CALENDAR = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T13:59:59+14:00",
                "9999-12-31T10:00:01-14:00", "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01",
                "0001-01-01T05:17:43+05:30"]
FIELDS = ["earliest_start", "deadline", "latest_start"]


def _single(field: str, value: str) -> tuple[dict, str]:
    return {"duration": 47, "zones": ["DE"], field: value}, field


def _batch(field: str, value: str) -> tuple[dict, str]:
    workloads = [{"duration": "PT1H", "zones": ["DE"]}, {"duration": 47, "zones": ["FR"], field: value}]
    return {"workloads": workloads}, f"workloads[1].{field}"


@pytest.mark.parametrize("value", OFF_CALENDAR)
@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("form", [_single, _batch], ids=["single", "batch"])
def test_a_timestamp_off_the_calendar_is_a_400_naming_the_field_and_the_value(client, form, field, value):
    body, path = form(field, value)
    answer = client.post("/api/v1/optimize", json=body)
    assert answer.status_code == 400, answer.get_json()
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_request"
    [detail] = error["details"]
    assert detail["field"] == path
    assert value in detail["message"] and "9999-12-31T23:59:59Z" in detail["message"]


@pytest.mark.parametrize("value", OFF_CALENDAR[:4])
@pytest.mark.parametrize("batch", [False, True])
def test_as_of_off_the_calendar_is_a_400_naming_it_on_a_replaying_service(make_app, tmp_path, value, batch):
    # A replaying service, where as_of is taken: the field is refused before any replay.
    (tmp_path / "XX_2022_hourly.csv").write_text(
        "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO\u2082eq/kWh (direct),"
        "Carbon Intensity gCO\u2082eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
        "Data Source,Data Estimated,Data Estimation Method\n"
        + "".join(f"2022-01-01 {h:02d}:00:00,X,X,XX,{300 + h},{300 + h},0,0,test,false,\n" for h in range(24)),
        encoding="utf-8")
    client = make_app({"CARBON_PROVIDER": "file", "CARBON_DATA_DIR": str(tmp_path),
                       "FILE_REPLAY": "true"}).test_client()
    workload = {"duration": 47, "zones": ["XX"]}
    body = {"workloads": [workload], "as_of": value} if batch else {**workload, "as_of": value}
    answer = client.post("/api/v1/optimize", json=body)
    assert answer.status_code == 400, answer.get_json()
    [detail] = answer.get_json()["error"]["details"]
    assert detail["field"] == "as_of" and value in detail["message"]


@pytest.mark.parametrize("body, field, named", [
    # A window end past 9999-12-31 from a start near it, by max_delay or by the default window.
    ({"duration": 47, "zones": ["DE"], "earliest_start": "9999-12-31T22:13:07Z", "max_delay": "P9999D"},
     "max_delay", ["9999-12-31T22:13:07Z", "max_delay"]),
    ({"duration": 47, "zones": ["DE"], "earliest_start": "9999-12-31T22:13:07Z"},
     "earliest_start", ["9999-12-31T22:13:07Z", "default window"]),
    # A deadline so early that deadline - duration is before the year 1.
    ({"duration": 47, "zones": ["DE"], "deadline": "0001-01-01T00:13:07Z"},
     "deadline", ["0001-01-01T00:13:07Z", "47 min"]),
])
def test_a_window_arithmetic_past_the_calendar_is_a_400_naming_the_values(client, body, field, named):
    for form, path in ((body, field), ({"workloads": [body]}, f"workloads[0].{field}")):
        answer = client.post("/api/v1/optimize", json=form)
        assert answer.status_code == 400, answer.get_json()
        [detail] = answer.get_json()["error"]["details"]
        assert detail["field"] == path
        assert all(text in detail["message"] for text in named), detail


def test_a_timestamp_inside_the_calendar_with_any_offset_means_the_same_instant(client):
    # 10:47:13+05:30 is 05:17:13Z: both spellings give the same answer (and the same window).
    asked = [client.post("/api/v1/optimize", json={"duration": 47, "zones": ["DE"], "latest_start": t}).get_json()
             for t in ("2026-11-23T16:47:13+05:30", "2026-11-23T11:17:13Z")]
    # Each answer is a plan of its own (its plan_id); all else is the same.
    assert {k: v for k, v in asked[0].items() if k != "plan_id"} == \
        {k: v for k, v in asked[1].items() if k != "plan_id"} and asked[0]["status"] == "scheduled"
    assert asked[0]["start"] <= "2026-11-23T11:17:13Z"


def _reference_epoch(moment: datetime) -> int:
    """Seconds since 1970 from the local fields and the offset, by the calendar module's day count:
    independent of datetime's UTC conversion (which is what overflows)."""
    local = calendar.timegm((moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second))
    return local - int(moment.utcoffset().total_seconds())


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                           timezones=st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439))))
@example(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))))
@example(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))))
@example(datetime(1, 1, 1, 3, 7, 11, tzinfo=timezone(timedelta(hours=5, minutes=30))))
def test_to_epoch_takes_every_aware_datetime(moment):
    # A guard: subtracting aware datetimes does not convert to UTC, so the epoch exists at the
    # calendar's ends; what overflowed was astimezone(), now done once at validation.
    assert to_epoch(moment) == _reference_epoch(moment)
