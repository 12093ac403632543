"""Asking again at `replan_at`: a run chosen inside a forecast that ends before the job's window
does is not final. The answer says to ask again at its start, when a newer forecast covers more of
the window; a client that does (as `carbon-optimizer wait` does) never ends with a dirtier run than
the first answer, and ends where a rolling search over each moment's forecast ends. Checked against
a brute force over whole-minute starts written here, with arrivals at arbitrary seconds and
durations in odd minutes."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from carbon_optimizer.scheduling.horizon import MIN_REPLAN_SECONDS
from carbon_optimizer.scheduling.model import Job, Schedule, ZoneSeries
from carbon_optimizer.scheduling.planner import plan
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, to_epoch

HOUR = 3600
MINUTE = 60
T0 = 1_800_000_000 // HOUR * HOUR
DAYS = 6
HORIZON = 24 * HOUR


def truth(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(50.0, 500.0, DAYS * 24)


def forecast_at(values: np.ndarray, now: int, horizon: int = HORIZON) -> dict[str, ZoneSeries]:
    """A perfect forecast issued at `now`: from the hour holding it to the last hour that ends by
    now + horizon (as the replay provider reveals it)."""
    first = (now - T0) // HOUR
    last = (now + horizon - T0) // HOUR
    series = ForecastSeries("XX", from_epoch(T0 + first * HOUR), HOUR, values[first:last], "test")
    return {"XX": ZoneSeries(forecast=series)}


def follow(values: np.ndarray, now: int, duration: int, latest: int) -> tuple[Schedule, Schedule, int]:
    """The client's rule: while replan_at comes no later than the start, ask again then with what
    is left of the window. The first answer, the last one, and how many times it asked again."""
    job = Job(duration=duration, zones=("XX",), earliest_start=now, latest_start=latest,
              extend_horizon=False)
    first = answer = plan(job, forecast_at(values, now), now)
    asks = 0
    while isinstance(answer, Schedule) and answer.coverage.replan_at is not None \
            and answer.coverage.replan_at <= answer.start:
        moment = answer.coverage.replan_at
        # Each question moves on by at least the minimum gap, inside the window.
        assert moment >= now + MIN_REPLAN_SECONDS and moment <= latest
        now = moment
        job = replace(job, earliest_start=now)
        answer = plan(job, forecast_at(values, now), now)
        asks += 1
        assert asks < 1000
    return first, answer, asks


def grams(values: np.ndarray, start: int, duration: int) -> float:
    """Exact emissions (intensity x seconds) of [start, start + duration), whole minutes."""
    per_minute = np.repeat(values, 60)
    a, b = (start - T0) // MINUTE, (start + duration - T0) // MINUTE
    return float(per_minute[a:b].sum() * MINUTE)


def rolling(values: np.ndarray, now: int, duration: int, latest: int) -> int:
    """The reference: at each moment take the cleanest whole-minute start the forecast of that
    moment covers; stop when it is less than an hour (the step) away or when the forecast already
    covers the whole window; else look again then."""
    t = now
    while True:
        forecast_end = T0 + (t + HORIZON - T0) // HOUR * HOUR
        lo = -(-t // MINUTE) * MINUTE
        hi = min(latest, forecast_end - duration) // MINUTE * MINUTE
        best = min(range(lo, hi + 1, MINUTE), key=lambda s: grams(values, s, duration))
        if latest + duration <= forecast_end or best - t < max(HOUR, MIN_REPLAN_SECONDS):
            return best
        t = best


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), offset=st.integers(0, 86_399),
       minutes=st.integers(30, 210).map(lambda k: 2 * k + 1),
       slack=st.integers(25 * HOUR, 72 * HOUR))
def test_following_replan_at_is_the_rolling_search_and_never_worse(seed, offset, minutes, slack):
    values = truth(seed)
    now = T0 + offset
    duration = minutes * MINUTE
    first, last, asks = follow(values, now, duration, now + slack)
    assert isinstance(first, Schedule) and isinstance(last, Schedule)
    ours = grams(values, last.start, duration)
    assert ours <= grams(values, first.start, duration) * (1 + 1e-12)  # never worse than the first
    assert ours == np.float64(grams(values, rolling(values, now, duration, now + slack), duration))
    # and never better than the best start of the whole window (the measuring stick)
    lo = -(-now // MINUTE) * MINUTE
    oracle = min(grams(values, s, duration) for s in range(lo, (now + slack) // MINUTE * MINUTE + 1, MINUTE))
    assert ours >= oracle


def test_a_later_forecast_finds_what_the_first_could_not():
    """Hour 5 is the best the first forecast shows (120); hour 28 (20) comes into view only later:
    asking again at hour 5 finds it."""
    values = np.full(DAYS * 24, 300.0)
    values[5], values[28] = 120.0, 20.0
    first, last, asks = follow(values, T0 + 17, HOUR, T0 + 48 * HOUR)
    assert first.start == T0 + 5 * HOUR
    assert first.coverage.replan_at == first.start
    # There, the window still runs past the forecast: one more question, at its start, confirms it.
    assert last.start == T0 + 28 * HOUR and last.coverage.replan_at is None and asks == 2


def test_no_replan_when_there_is_nothing_left_to_learn():
    values = np.full(DAYS * 24, 300.0)
    values[5] = 120.0
    # The whole window inside the forecast: a newer forecast adds nothing.
    inside, _, _ = follow(values, T0, HOUR, T0 + 20 * HOUR)
    assert inside.start == T0 + 5 * HOUR and inside.coverage.replan_at is None
    # The run starts sooner than a newer forecast can come (one step of the series, and at least
    # MIN_REPLAN_SECONDS): it is simply run.
    values[1] = 50.0
    soon, _, _ = follow(values, T0 + 10 * MINUTE, 30 * MINUTE, T0 + 40 * HOUR)
    assert soon.start == T0 + HOUR and soon.coverage.replan_at is None
    values[1], values[2] = 300.0, 50.0
    later, _, _ = follow(values, T0 + 10 * MINUTE, 30 * MINUTE, T0 + 40 * HOUR)
    assert later.start == T0 + 2 * HOUR
    assert later.coverage.replan_at == T0 + 2 * HOUR


def test_with_a_five_minute_series_the_gap_is_fifteen_minutes():
    """A newer forecast of a 5-minute series may come in 5 minutes, but asking again sooner than
    MIN_REPLAN_SECONDS only keeps a client busy."""
    start = from_epoch(T0)
    for best, replanned in ((10, False), (15, True), (40, True)):
        values = np.full(24 * 12, 300.0)
        values[best // 5] = 100.0  # the 5-minute point at T0 + best minutes
        series = ForecastSeries("XX", start, 300, values, "test")
        job = Job(duration=5 * MINUTE, zones=("XX",), earliest_start=T0, latest_start=T0 + 30 * HOUR)
        found = plan(job, {"XX": ZoneSeries(forecast=series)}, T0)
        assert found.start == T0 + best * MINUTE
        expected = found.start if replanned else None
        assert found.coverage.replan_at == expected, best


def test_a_zone_with_a_shorter_forecast_keeps_the_question_open():
    """The run is chosen in zone A, whose forecast covers the whole window; zone B's covers only
    24 h, and a newer forecast of B may show a cleaner run: ask again, as for B alone."""
    values = np.full(DAYS * 24, 300.0)
    values[5] = 100.0
    long = ForecastSeries("A", from_epoch(T0), HOUR, values[:96], "test")
    short = ForecastSeries("B", from_epoch(T0), HOUR, np.full(24, 200.0), "test")
    zones = {"A": ZoneSeries(forecast=long), "B": ZoneSeries(forecast=short)}
    job = Job(duration=HOUR, zones=("A", "B"), earliest_start=T0, latest_start=T0 + 48 * HOUR,
              extend_horizon=False)
    found = plan(job, zones, T0)
    assert found.zone == "A" and found.start == T0 + 5 * HOUR
    assert found.coverage.replan_at == T0 + 5 * HOUR
    alone = plan(replace(job, zones=("A",)), zones, T0)
    assert alone.start == T0 + 5 * HOUR and alone.coverage.replan_at is None


def test_other_zones_count_only_when_they_have_data_and_never_past_the_latest_start():
    """A zone that failed has no forecast to wait for; a run at the latest start has nothing
    later to choose, whatever a shorter forecast of another zone would show."""
    from carbon_optimizer.errors import FailureCode
    from carbon_optimizer.scheduling.model import ZoneFailure

    values = np.full(DAYS * 24, 300.0)
    values[5] = 100.0
    long = ForecastSeries("A", from_epoch(T0), HOUR, values[:96], "test")
    short = ForecastSeries("B", from_epoch(T0), HOUR, np.full(24, 200.0), "test")
    failed = ZoneFailure("B", FailureCode.UPSTREAM_UNAVAILABLE, "down")
    job = Job(duration=HOUR, zones=("A", "B"), earliest_start=T0, latest_start=T0 + 48 * HOUR,
              extend_horizon=False)
    found = plan(job, {"A": ZoneSeries(forecast=long), "B": failed}, T0)
    assert found.start == T0 + 5 * HOUR and found.coverage.replan_at is None
    values[5], values[48] = 300.0, 100.0  # the cleanest hour is the latest start
    long = ForecastSeries("A", from_epoch(T0), HOUR, values[:96], "test")
    found = plan(job, {"A": ZoneSeries(forecast=long), "B": ZoneSeries(forecast=short)}, T0)
    assert found.zone == "A" and found.start == T0 + 48 * HOUR and found.coverage.replan_at is None


def test_asking_a_moment_late_finds_the_run_in_hand_a_minute_later():
    """A question arrives a moment after replan_at: starts are whole minutes from the moment
    asked, so the run in hand is offered from the next whole minute (one minute of hour 6 at 300
    in place of one of hour 5 at 100)."""
    values = np.full(DAYS * 24, 300.0)
    values[5] = 100.0
    job = Job(duration=HOUR, zones=("XX",), earliest_start=T0, latest_start=T0 + 48 * HOUR,
              extend_horizon=False)
    first = plan(job, forecast_at(values, T0), T0)
    for late, start in ((0, first.start), (1, first.start + MINUTE), (59, first.start + MINUTE),
                        (61, first.start + 2 * MINUTE)):
        moment = first.coverage.replan_at + late
        again = plan(replace(job, earliest_start=moment), forecast_at(values, moment), moment)
        assert again.start == start and again.coverage.replan_at is None, late
        assert again.mean_intensity == pytest.approx(100.0 + 200.0 * (start - first.start) / HOUR)


def test_a_batch_under_capacity_is_not_replanned_job_by_job(client):
    """Only a job planned on its own is followed: a batch under capacity is placed jointly."""
    body = client.post("/api/v1/optimize", json={
        "workloads": [{"id": "a", "duration": 60, "zones": ["DE"], "max_delay": "PT160H"}],
        "capacity": {"max_concurrent": 1}}).get_json()
    assert body["results"][0]["status"] == "scheduled"
    assert body["results"][0]["provenance"]["replan_at"] is None


def test_over_http_the_replayed_answer_says_when_and_asking_then_finds_more(make_app, tmp_path):
    """The file provider replaying a recording with a 27 h forecast: at midnight the best hour in
    view is 05:00 (150) and replan_at says to ask again then; asked as of then (as
    `wait` would, with the same window), the 06:00 hour of the next day (1) is in view and chosen."""
    as_of = datetime(2022, 1, 10, tzinfo=timezone.utc)
    start = datetime(2022, 1, 1, tzinfo=timezone.utc)
    rows = ["Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
            "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
            "Data Source,Data Estimated,Data Estimation Method"]
    special = {to_epoch(as_of) + 5 * HOUR: 150.0, to_epoch(as_of) + 30 * HOUR: 1.0}
    for k in range(20 * 24):
        moment = to_epoch(start) + k * HOUR
        value = special.get(moment, 300.0)
        rows.append(f"{from_epoch(moment):%Y-%m-%d %H:%M:%S},X,X,XX,{value},{value},0,0,test,false,")
    (tmp_path / "XX_2022_hourly.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    client = make_app({"CARBON_PROVIDER": "file", "CARBON_DATA_DIR": str(tmp_path),
                       "FILE_REPLAY": "true", "FILE_FORECAST_HOURS": "27"}).test_client()
    window = {"duration": 60, "zones": ["XX"], "earliest_start": "2022-01-10T00:00:00Z",
              "latest_start": "2022-01-11T23:00:00Z", "extend_horizon": False}
    first = client.post("/api/v1/optimize", json={**window, "as_of": "2022-01-10T00:00:00Z"}).get_json()
    assert first["start"] == "2022-01-10T05:00:00Z" and first["carbon_intensity"] == 150.0
    assert first["provenance"]["replan_at"] == "2022-01-10T05:00:00Z"
    again = client.post("/api/v1/optimize", json={**window, "as_of": first["provenance"]["replan_at"]})
    assert again.status_code == 200, again.get_json()
    body = again.get_json()
    assert body["start"] == "2022-01-11T06:00:00Z" and body["carbon_intensity"] == 1.0
    assert body["start_in_seconds"] == 25 * HOUR
    # The window still runs past this forecast (to 2022-01-12T00:00Z): ask again at the start.
    assert body["provenance"]["replan_at"] == body["start"]


# -- replan_at never after the start ----------------------------------------------------------------
# A question after the run has started comes too late to change it: whatever the path that sets
# replan_at (a forecast covering the estimated part, the run on estimates turned down, the best run
# inside the forecast kept open, the at-start question), it is before the start or at it.

def zone_with_estimates(name: str, rng: np.random.Generator, now: int, hours: int, until: int,
                        error: float) -> ZoneSeries:
    """A forecast of `hours` hourly points from the hour holding `now`, followed by estimates
    (random values, flagged) up to `until`, whose measured error grows with the lead from `error`."""
    first = now // HOUR * HOUR
    forecast = ForecastSeries(name, from_epoch(first), HOUR, rng.uniform(50.0, 500.0, hours), "test")
    count = max(0, -(-(until - forecast.end_epoch) // HOUR))
    if count == 0:
        return ZoneSeries(forecast=forecast)
    values = np.concatenate((forecast.values, rng.uniform(20.0, 500.0, count)))
    mask = np.concatenate((np.zeros(hours, dtype=bool), np.ones(count, dtype=bool)))
    extended = ForecastSeries(name, forecast.start, HOUR, values, "test", estimated=mask)
    return ZoneSeries(forecast=forecast, extended=extended,
                      estimate_error=error * (1 + np.arange(count) / 24))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**32 - 1), offset=st.integers(0, 86_399),
       minutes=st.integers(15, 2200).map(lambda k: 2 * k + 1),   # 31 min to 73 h 21 min
       slack=st.integers(0, 96 * HOUR), hours=st.lists(st.integers(4, 72), min_size=1, max_size=2),
       error=st.sampled_from([0.0, 5.0, 60.0, np.inf]), interruptible=st.booleans(),
       extend=st.booleans())
def test_replan_at_is_never_after_the_start(seed, offset, minutes, slack, hours, error,
                                            interruptible, extend):
    rng = np.random.default_rng(seed)
    now = T0 + offset
    duration = minutes * MINUTE
    job = Job(duration=duration, zones=tuple(f"Z{i}" for i in range(len(hours))), earliest_start=now,
              latest_start=now + slack, interruptible=interruptible and duration <= 12 * HOUR,
              extend_horizon=extend)
    zones = {f"Z{i}": zone_with_estimates(f"Z{i}", rng, now, h, job.latest_end, error)
             for i, h in enumerate(hours)}
    found = plan(job, zones, now)
    if not isinstance(found, Schedule) or found.coverage.replan_at is None:
        return
    first_start = min(a for a, _ in found.intervals)
    assert now < found.coverage.replan_at <= first_start, (
        found.coverage.replan_at - now, first_start - now, found.intervals[-1][1] - now)


def test_a_run_longer_than_the_forecast_asks_again_at_its_start_over_http(client):
    """The case reported (issue 24): three days in DE or FR within a day. The demo forecast (72 h)
    never covers the whole run; a newer one, published by the start, may still move it: ask then,
    not an hour after the run has begun."""
    body = client.post("/api/v1/optimize", json={
        "duration": "P3D", "zones": ["DE", "FR"], "max_delay": "P1D"}).get_json()
    assert body["status"] == "scheduled", body
    start = datetime.fromisoformat(body["start"].replace("Z", "+00:00"))
    assert body["provenance"]["estimated"] is True
    # 2026-11-23T10:17:30Z (the test clock) < start < the latest start a day later.
    assert datetime(2026, 11, 23, 10, 32, 30, tzinfo=timezone.utc) <= start \
        < datetime(2026, 11, 24, 10, 17, 30, tzinfo=timezone.utc)
    assert body["provenance"]["replan_at"] == body["start"]
