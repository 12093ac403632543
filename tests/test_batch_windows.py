"""A plain batch (no capacity) searches its contiguous workloads per zone series, all at once
(planner._search_together, window_batch.best_windows). Each workload must get exactly the answer it
gets alone, and that answer must be the whole-minute optimum: checked here against plan() per
workload and against a brute force over every whole-minute start, summed second by second.

Batches are random: several zones (5-, 15- and 60-minute steps, one sometimes off the minute grid),
windows at arbitrary seconds or with ends on, next to or between whole quarter hours, durations of
odd minutes (some not whole minutes) or whole quarter hours and hours, interruptible and contiguous
workloads mixed, with and without estimates past the forecast (the risk gate)."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, example, given, settings, strategies as st

from carbon_optimizer.scheduling.model import Job, Schedule, Unschedulable, ZoneSeries
from carbon_optimizer.errors import FailureCode
from carbon_optimizer.scheduling import planner
from carbon_optimizer.scheduling.budget import Budget
from carbon_optimizer.scheduling.planner import plan, plan_all
from carbon_optimizer.timeseries import ForecastSeries, from_epoch

MINUTE = 60
T0 = 1_800_000_000  # a whole hour


def per_second(series: ForecastSeries) -> tuple[int, np.ndarray]:
    """The series' start and its running total (exact integers) at every second."""
    second = np.repeat(series.values.astype(np.int64), series.step_seconds)
    return series.start_epoch, np.concatenate(([0], np.cumsum(second)))


def brute_best(series: ForecastSeries, job: Job):
    """(grams, start) of the cleanest whole-minute start over `series`, earliest on ties; starts
    from the window's first whole minute (or that minute alone when it is less than a minute past
    the latest start); None when no run fits."""
    t0, total = per_second(series)
    end = t0 + len(total) - 1
    first = -(-max(job.earliest_start, t0) // MINUTE) * MINUTE
    starts = [s for s in range(first, job.latest_start + 1, MINUTE) if s + job.duration <= end]
    if not starts and first - job.latest_start < MINUTE and first + job.duration <= end:
        starts = [first]
    best = None
    for s in starts:
        grams = int(total[s + job.duration - t0] - total[s - t0])
        if best is None or grams < best[0]:
            best = (grams, s)
    return best


def brute_across(zones, job: Job, use_estimates: bool = True):
    """The cleanest (mean, start, zone) over the job's zones: least mean, then earliest start,
    then the first zone."""
    found = []
    for index, name in enumerate(job.zones):
        zone = zones[name]
        series = zone.searched(job) if use_estimates else zone.forecast
        best = brute_best(series, job)
        if best is not None:
            found.append((best[0] / job.duration, best[1], index, name))
    if not found:
        return None
    mean, start, _, name = min(found)
    return mean, start, name


def same(a, b) -> None:
    """Two outcomes are the same answer: every field a client sees."""
    assert type(a) is type(b)
    assert a.job == b.job
    if isinstance(a, Unschedulable):
        assert (a.code, a.message, a.unavailable) == (b.code, b.message, b.unavailable)
        return
    assert (a.zone, a.intervals, a.baseline, a.coverage, a.unavailable) == \
        (b.zone, b.intervals, b.baseline, b.coverage, b.unavailable)
    assert a.mean_intensity == b.mean_intensity  # to the last bit


@st.composite
def batches(draw):
    zones = {}
    for name in ["A", "B", "C"][:draw(st.integers(1, 3))]:
        step = draw(st.sampled_from([5, 15, 60])) * MINUTE
        points = draw(st.integers(1, 30 if step == 3600 else 60))
        # Mostly on a whole minute (every provider's forecast); sometimes at an arbitrary second
        # (then the workload is searched alone).
        offset = draw(st.sampled_from([0, 0, 0, 60 * draw(st.integers(0, 59)), draw(st.integers(1, 3599))]))
        values = np.array(draw(st.lists(st.integers(0, 40), min_size=points, max_size=points)), float)
        forecast = ForecastSeries(zone=name, start=from_epoch(T0 + offset), step_seconds=step,
                                  values=values, provider="test")
        zone = ZoneSeries(forecast=forecast)
        if draw(st.booleans()):  # estimates past the forecast, with a measured error per lead
            more = draw(st.integers(1, 20))
            estimates = np.array(draw(st.lists(st.integers(0, 40), min_size=more, max_size=more)), float)
            extended = replace(forecast, values=np.concatenate((values, estimates)),
                               estimated=np.r_[np.zeros(points, bool), np.ones(more, bool)])
            zone = replace(zone, extended=extended,
                           estimate_error=np.full(more, float(draw(st.sampled_from([0, 3, 10, 1000])))))
        zones[name] = zone
    names = list(zones)
    span = max((z.extended or z.forecast).end_epoch for z in zones.values()) - T0
    jobs = []
    for index in range(draw(st.integers(1, 12))):
        # Odd minutes, or whole quarter hours and hours (whole steps: the grid paths' case); now and
        # then a duration off the minute (searched alone).
        interruptible = draw(st.integers(0, 4)) == 0
        duration = draw(st.sampled_from([draw(st.integers(1, 240)), 15 * draw(st.integers(1, 16)),
                                         60 * draw(st.integers(1, 4))])) * MINUTE
        if not interruptible:  # chunks are whole minutes
            duration += draw(st.sampled_from([0, 0, 0, 0, 17]))
        if draw(st.booleans()):  # any second
            earliest = T0 + draw(st.integers(-600, span))
            latest = earliest + draw(st.integers(0, 12 * 3600))
        else:  # on a quarter hour, a second or a minute either side, or between
            near = st.sampled_from([0, 0, 1, -1, MINUTE, -MINUTE, draw(st.integers(1, 899))])
            earliest = T0 + 900 * draw(st.integers(-1, span // 900)) + draw(near)
            latest = max(earliest, earliest - (earliest - T0) % 900 + 900 * draw(st.integers(0, 48)) + draw(near))
        picked = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
        jobs.append(Job(duration=duration, zones=tuple(picked), earliest_start=earliest,
                        latest_start=latest, id=f"w{index}", power_kw=1.5,
                        interruptible=interruptible, extend_horizon=draw(st.integers(0, 5)) > 0))
    return zones, jobs


def check(zones, jobs):
    now = T0 - 3600
    alone = [plan(job, zones, now) for job in jobs]
    # As shipped; then every search on the grid done together (long windows and small batches
    # too), in passes of a few workloads each.
    together = plan_all(jobs, zones, now, Budget(seconds=1e6))
    with mock.patch.object(planner, "_BATCHED_CANDIDATES", 10 ** 9), \
            mock.patch.object(planner, "_BATCHED_FROM", 1), \
            mock.patch.object(planner, "_PASS_CANDIDATES", 300):
        all_together = plan_all(jobs, zones, now, Budget(seconds=1e6))
    for a, b, c in zip(together, all_together, alone):
        same(a, c)
        same(b, c)
    for job, got in zip(jobs, together):
        if job.interruptible:
            continue
        best = brute_across(zones, job)
        if best is None:
            assert isinstance(got, Unschedulable), got
            continue
        assert isinstance(got, Schedule), got
        (start, end), = got.intervals
        if got.coverage.waited_for_forecast:
            # The risk gate turned down a run on estimates: the best run inside the forecasts.
            best = brute_across(zones, job, use_estimates=False)
        assert (got.mean_intensity, start, got.zone) == best
        assert end == start + job.duration


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=batches())
def test_a_batch_answers_each_workload_as_alone_and_at_the_whole_minute_optimum(case):
    check(*case)


def hourly_zone(name: str, values) -> ZoneSeries:
    return ZoneSeries(forecast=ForecastSeries(zone=name, start=from_epoch(T0), step_seconds=3600,
                                              values=np.array(values, float), provider="test"))


@example(offsets=(1050, 1050))
@given(offsets=st.tuples(st.integers(0, 7200), st.integers(0, 7200)))
@settings(max_examples=30, deadline=None, derandomize=True)
def test_ties_go_to_the_earliest_start_then_the_first_zone_in_a_batch_too(offsets):
    # Two zones with the same flat stretch: every start in it ties; the batch picks the earliest
    # start, in the zone listed first, exactly as a workload alone does.
    zones = {"A": hourly_zone("A", [50, 10, 10, 10, 10, 50]), "B": hourly_zone("B", [10, 10, 10, 10, 10, 10])}
    jobs = [Job(duration=d * MINUTE, zones=order, earliest_start=T0 + offsets[0],
                latest_start=T0 + offsets[0] + offsets[1] + 3600)
            for d in (37, 61, 120) for order in (("A", "B"), ("B", "A"))]
    check(zones, jobs)
    found = plan_all(jobs, zones, T0, Budget())
    for job, got in zip(jobs, found):
        assert got.start == -(-job.earliest_start // MINUTE) * MINUTE or got.zone == "A"


def test_the_bench_batch_is_answered_as_each_workload_alone():
    # The shape of bench/http_bench.py's BATCH: 50 workloads over 5 zones, two zones each.
    rng = np.random.default_rng(7)
    names = ["DE", "FR", "PL", "ES", "GB"]
    zones = {z: hourly_zone(z, rng.integers(20, 500, 72)) for z in names}
    now = T0 + 1050
    jobs = [Job(duration=(30 + 15 * (i % 12)) * MINUTE, zones=(names[i % 5], names[(i + 2) % 5]),
                earliest_start=now, latest_start=now + (6 + i % 30) * 3600, id=f"job-{i}", power_kw=1.5)
            for i in range(50)]
    together = plan_all(jobs, zones, now, Budget())
    for job, got in zip(jobs, together):
        same(got, plan(job, zones, now))
        assert (got.mean_intensity, got.start, got.zone) == brute_across(zones, job)


class FakeClock:
    """Advances `step` seconds at every reading."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_deadline_stops_the_batched_search_between_passes_and_the_workloads_left_say_so():
    zones = {"Z": hourly_zone("Z", list(range(48, 0, -1)))}
    jobs = [Job(duration=(37 + i) * MINUTE, zones=("Z",), earliest_start=T0 + 17,
                latest_start=T0 + 20 * 3600) for i in range(12)]
    # Two workloads a pass, six passes; the clock moves a second at each look at the deadline.
    for seconds, passes, scheduled in ((3.5, 3, 0), (9.5, 6, 3)):
        with mock.patch.object(planner, "_PASS_CANDIDATES", 90), \
                mock.patch.object(planner, "best_windows", wraps=planner.best_windows) as search:
            outcomes = plan_all(jobs, zones, T0, Budget(seconds=seconds, clock=FakeClock(1.0)))
        assert search.call_count == passes
        assert [isinstance(o, Schedule) for o in outcomes] == [True] * scheduled + [False] * (12 - scheduled)
        for job, got in zip(jobs, outcomes):
            if isinstance(got, Schedule):
                same(got, plan(job, zones, T0))
            else:
                assert got.code is FailureCode.DEADLINE_EXCEEDED
