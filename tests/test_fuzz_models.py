"""hypothesis on the request models (directly and through the app) and on the optimizer with
arbitrary series: nulls, a single point, irregular steps, huge and tiny values, starts off the
minute grid. The optimizer is checked against a brute force that expands the series to one value
per second and tries every allowed whole-minute start."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st
from pydantic import ValidationError

from carbon_optimizer.errors import FieldError
from carbon_optimizer.scheduling import window as optimizer
from carbon_optimizer.web import request_models as schemas
from carbon_optimizer.timeseries import series_from_points, to_epoch

NOW = datetime(2026, 11, 23, 10, 17, 30, tzinfo=timezone.utc)
FIELDS = ["id", "duration", "zones", "earliest_start", "deadline", "latest_start", "max_delay",
          "power_kw", "energy_kwh", "workloads"]
SETTINGS = settings(max_examples=250, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
                | st.sampled_from(["PT2H", "P1D", "PT0S", "PT1.5M", "P99999999D", "DE", "de", "US-CAL-CISO",
                                   "2026-11-23T08:00:00Z", "2026-11-23T08:00:00", "9999-12-31T23:59:59Z",
                                   "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1e308", "-1", "", " "]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
workload_like = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=6)


@pytest.fixture
def unlimited_client(make_app):
    """The demo app without rate limits: hundreds of requests from one client on purpose."""
    return make_app({"RATE_LIMIT_ENABLED": "false"}).test_client()


@SETTINGS
@given(body=workload_like)
def test_workload_model_accepts_or_raises_validation_error_only(body):
    try:
        workload = schemas.Workload.model_validate(body)
    except ValidationError:
        return
    try:
        job = workload.to_job(NOW, ["DE"], timedelta(hours=24))
    except ValueError:
        return
    assert 60 <= job.duration <= 7 * 86400 and job.duration % 60 == 0
    assert job.earliest_start <= job.latest_start <= job.earliest_start + 31 * 86400
    assert job.zones and all(isinstance(zone, str) for zone in job.zones)


@SETTINGS
@given(body=workload_like | st.builds(lambda ws: {"workloads": ws}, st.lists(workload_like, max_size=3))
       | json_values)
def test_any_json_body_gets_a_json_answer_never_a_500(unlimited_client, body):
    client = unlimited_client
    raw = json.dumps(body, allow_nan=True)  # NaN and Infinity too: Python's json reads them
    answer = client.post("/api/v1/optimize", data=raw, content_type="application/json")
    assert answer.status_code in (200, 400, 422), (answer.status_code, raw)
    payload = answer.get_json()
    if answer.status_code != 200:
        assert set(payload) == {"error"} and payload["error"]["code"] and payload["error"]["message"]
        for detail in payload["error"].get("details", []):
            assert isinstance(detail["field"], str) and isinstance(detail["message"], str)


# Local times within a day of the calendar's ends, at any second, with offsets up to 14 h either
# way: some are still inside the years 1 to 9999 once in UTC, some not (issue 23.8).
near_the_ends = st.builds(
    lambda local, minutes: local.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(datetime(1, 1, 1), datetime(1, 1, 1, 23, 59, 59))
    | st.datetimes(datetime(9999, 12, 31), datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(-14 * 60, 14 * 60))


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(field=st.sampled_from(["earliest_start", "deadline", "latest_start", "as_of"]), moment=near_the_ends,
       duration=st.integers(1, 7 * 24 * 60), window_end=st.sampled_from([None, "max_delay"]))
@example(field="latest_start", moment=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))), duration=47,
         window_end=None)
@example(field="deadline", moment=datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
         duration=47, window_end=None)
@example(field="as_of", moment=datetime(1, 1, 1, 13, 59, 59, tzinfo=timezone(timedelta(hours=14))), duration=61,
         window_end="max_delay")
def test_timestamps_at_the_calendar_ends_are_refused_by_field_or_taken(field, moment, duration, window_end):
    body = {"duration": duration, field: moment.isoformat()}
    if window_end and field in ("earliest_start", "as_of"):
        body["max_delay"] = "P30D"
    try:
        utc = moment.astimezone(timezone.utc)
    except OverflowError:
        utc = None  # off the calendar in UTC: the model must refuse it, naming the field and value
    try:
        workload = schemas.Workload.model_validate(body)
    except ValidationError as exc:
        [error] = exc.errors()
        assert utc is None and error["loc"] == (field,) and moment.isoformat() in error["msg"]
        return
    assert utc is not None and getattr(workload, field) == utc
    try:
        workload.to_job(NOW, ["DE"], timedelta(hours=24))
    except FieldError as exc:
        assert exc.field in ("earliest_start", "deadline", "latest_start", "max_delay", "duration")


@SETTINGS
@given(minutes=st.integers(1, 7 * 24 * 60),
       text=st.builds(lambda d, h, m: f"P{d}DT{h}H{m}M" if d else f"PT{h}H{m}M",
                      st.integers(0, 6), st.integers(0, 23), st.integers(0, 59)))
def test_durations_as_minutes_and_iso_text(minutes, text):
    assert schemas.Workload.model_validate({"duration": minutes}).duration == timedelta(minutes=minutes)
    days, rest = (text[1:].split("DT") if "DT" in text else ("0", text[2:]))
    hours, mins = rest.rstrip("M").split("H")
    expected = timedelta(days=int(days), hours=int(hours), minutes=int(mins))
    try:
        parsed = schemas.Workload.model_validate({"duration": text}).duration
    except ValidationError:
        assert expected == timedelta(0)  # PT0H0M: not a duration a workload can have
        return
    assert parsed == expected


# -- the optimizer on arbitrary series ------------------------------------------------------------

value = st.one_of(st.none(), st.floats(0, 1e5), st.sampled_from([0.0, 1e-12, 1e-6, 7.0, 1e9, 1e12]))


@st.composite
def raw_series(draw):
    """(epoch, value-or-None) points at irregular times, possibly one point, off the minute grid."""
    t0 = to_epoch(NOW) + draw(st.integers(-3600, 3600))  # any second: starts off the grid too
    gaps = draw(st.lists(st.integers(30, 4 * 3600), min_size=0, max_size=25))
    times = [t0]
    for gap in gaps:
        times.append(times[-1] + gap)
    assume(times[-1] - t0 <= 12 * 3600)  # bounded per-second brute force
    values = [draw(value) for _ in times]
    return [(datetime.fromtimestamp(t, timezone.utc), v) for t, v in zip(times, values)]


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(points=raw_series(), data=st.data())
def test_best_window_matches_a_per_second_brute_force(points, data):
    try:
        series = series_from_points("ZZ", "fuzz", points)
    except ValueError:
        assert all(v is None for _, v in points)
        return
    values = series.values
    assert np.isfinite(values).all() and (values >= 0).all()
    boundaries = series.boundaries()
    start, end, step = int(boundaries[0]), int(boundaries[-1]), series.step_seconds
    span_minutes = (end - start) // 60
    duration = 60 * data.draw(st.integers(1, max(1, span_minutes + 1)), label="duration minutes")
    earliest = data.draw(st.integers(start - 3600, end), label="earliest")
    latest = data.draw(st.integers(earliest, end + 3600), label="latest")

    found = optimizer.best_window(boundaries, values, duration, earliest, latest)
    bounds = optimizer.start_range(boundaries, duration, earliest, latest)
    if bounds is None:
        assert found is None
        return
    lo, hi = bounds
    assert found is not None and lo <= found.start <= hi and found.start % 60 == 0
    assert found.end - found.start == duration

    per_second = np.repeat(values, step)  # exact: each point holds for its step
    cumulative = np.concatenate(([0.0], np.cumsum(per_second)))
    starts = np.arange(lo, hi + 1, 60)
    emissions = cumulative[starts - start + duration] - cumulative[starts - start]
    scale = max(float(cumulative[-1]), 1.0)
    ours = cumulative[found.start - start + duration] - cumulative[found.start - start]
    assert ours <= emissions.min() + 1e-9 * scale
    assert found.mean_intensity == pytest.approx(ours / duration, rel=1e-9, abs=1e-9 * scale / duration)
    # Ties go to the earliest start: nothing clearly better starts earlier.
    earlier = emissions[starts < found.start]
    assert not (earlier < ours - 1e-9 * scale).any()


@settings(max_examples=100, deadline=None, database=None)
@given(values=st.lists(st.floats(0, 1e12) | st.sampled_from([0.0, 1e-300, 5e-324]), min_size=1, max_size=50),
       step=st.sampled_from([60, 300, 900, 3600]), zones=st.integers(1, 4), data=st.data())
def test_best_window_across_zones_picks_the_cleanest(values, step, zones, data):
    t0 = to_epoch(NOW.replace(second=0))
    series = []
    for z in range(zones):
        shuffled = data.draw(st.permutations(values), label=f"zone {z}")
        series.append((t0 + step * np.arange(len(values) + 1, dtype=np.int64), np.asarray(shuffled)))
    duration = 60 * data.draw(st.integers(1, len(values) * step // 60))
    chosen = optimizer.best_window_across(series, duration, t0, t0 + len(values) * step)
    assert chosen is not None
    means = [optimizer.best_window(b, v, duration, t0, t0 + len(values) * step).mean_intensity
             for b, v in series]
    assert chosen.mean_intensity <= min(means) * (1 + 1e-9) + 1e-9
