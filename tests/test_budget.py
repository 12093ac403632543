"""Every request's cost is bounded: refused before solving when its estimate is over the budget,
stopped at its deadline by every solver (a fake clock here: no test waits on real time)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from carbon_optimizer.data.providers.demo import DemoProvider
from carbon_optimizer.errors import DeadlineExceeded, FailureCode, TooLarge
from carbon_optimizer.scheduling.budget import Budget
from carbon_optimizer.scheduling.chunks import MAX_DP_CELLS, best_chunks
from carbon_optimizer.scheduling.fleet import Capacity, FleetJob, schedule_fleet
from carbon_optimizer.scheduling.model import Job, Schedule, Unschedulable, ZoneSeries
from carbon_optimizer.scheduling.planner import plan_all
from carbon_optimizer.timeseries import ForecastSeries, from_epoch
from carbon_optimizer.web.app_state import app_state

T0 = 1_800_000_000  # a whole hour
HOUR = 3600


class FakeClock:
    """Advances `step` seconds at every reading: a deadline passes after a known number of checks."""

    def __init__(self, step: float = 0.0):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def zone(name: str, hours: int, seed: int = 0) -> ZoneSeries:
    values = np.random.default_rng(seed).uniform(50, 500, hours)
    return ZoneSeries(forecast=ForecastSeries(zone=name, start=from_epoch(T0), step_seconds=HOUR,
                                              values=values, provider="test"))


def test_a_request_estimated_over_its_budget_is_refused_before_solving_naming_what_to_change():
    zones = {f"Z{i}": zone(f"Z{i}", 24 * 20, i) for i in range(50)}
    job = Job(duration=271 * 60, zones=tuple(zones), earliest_start=T0 + 17,
              latest_start=T0 + 17 * 86400, interruptible=True, min_chunk=120, max_chunks=3)
    # Each zone's exact search fits its caps; the 50 of them are over the request's work.
    with pytest.raises(TooLarge, match="s of solving.*a shorter window, a longer min_chunk or fewer "
                                       "max_chunks"):
        plan_all([job], zones, T0, Budget(clock=FakeClock()))
    plain = Job(duration=61 * 60, zones=tuple(zones), earliest_start=T0 + 17, latest_start=T0 + 19 * 86400)
    with pytest.raises(TooLarge, match=r"workloads\[0\].*send fewer workloads per request"):
        plan_all([plain] * 500, zones, T0, Budget(seconds=0.5, clock=FakeClock()))
    # The same batch within a budget that covers it is solved.
    assert all(isinstance(o, Schedule) for o in plan_all([plain] * 5, zones, T0, Budget(clock=FakeClock())))


def test_the_deadline_stops_a_batch_and_the_workloads_left_say_so():
    zones = {"Z": zone("Z", 48)}
    job = Job(duration=HOUR, zones=("Z",), earliest_start=T0, latest_start=T0 + 20 * HOUR)
    outcomes = plan_all([job] * 10, zones, T0, Budget(seconds=3.5, clock=FakeClock(step=1.0)))
    kinds = [type(o) for o in outcomes]
    assert kinds[0] is Schedule and kinds[-1] is Unschedulable
    late = [o for o in outcomes if isinstance(o, Unschedulable)]
    assert all(o.code is FailureCode.DEADLINE_EXCEEDED and o.code.status == 503 for o in late)
    assert kinds == sorted(kinds, key=lambda k: k is Unschedulable)  # none after the first stop


def test_the_exact_chunk_search_stops_at_the_deadline():
    hours = 24 * 4
    values = np.random.default_rng(1).uniform(50, 500, hours)
    boundaries = T0 + HOUR * np.arange(hours + 1)
    with pytest.raises(DeadlineExceeded):
        best_chunks(boundaries, values, 271 * 60, T0, T0 + hours * HOUR, 120, 3,
                    Budget(seconds=10, clock=FakeClock(step=1.0)))


def test_the_exact_chunk_search_keeps_a_bit_a_state():
    hours = 24 * 3
    values = np.random.default_rng(2).uniform(50, 500, hours)
    boundaries = T0 + HOUR * np.arange(hours + 1)
    # A one-minute grid: (units + 1) x (chunk counts 0..3) x (minutes used 0..271).
    cells = (hours * 60 + 1) * 4 * 272
    tracemalloc.start()
    best_chunks(boundaries, values, 271 * 60, T0, T0 + hours * HOUR, 120, 3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Two traceback bits a state (np.packbits), a ring of min_chunk short rows, a few rows.
    assert peak < 0.3 * cells + 2_000_000, (peak, cells)
    assert MAX_DP_CELLS // 4 <= 32 * 2 ** 20  # so no search passes 32 MiB of tables


def test_the_fleet_gives_a_valid_plan_when_the_deadline_has_passed_at_once():
    rng = np.random.default_rng(3)
    intensity = rng.uniform(50, 500, (3, 200))
    jobs = [FleetJob(length=int(rng.integers(5, 30)), earliest=0, latest=150, zones=(0, 1, 2))
            for _ in range(30)]
    capacity = Capacity(max_concurrent=4)
    plan = schedule_fleet(intensity, jobs, capacity, Budget(seconds=0, clock=FakeClock()))
    running = np.zeros(200, dtype=int)
    for job, place in zip(jobs, plan.placements):
        if place is not None:
            assert job.earliest <= place.start <= job.latest and place.zone in job.zones
            running[place.start:place.start + job.length] += 1
    assert running.max() <= 4 and plan.placed >= 20  # the first greedy plan, kept within limits


# 50 zones (a workload's most), all served by the demo provider: it refuses zones it does not have.
ZONES = DemoProvider().zones()[:50]


def test_through_the_api_one_chunk_is_the_contiguous_window_and_a_huge_search_is_a_422(client):
    """The request that cost 27 s of CPU: one chunk allowed, so it is the plain window search."""
    chunked = client.post("/api/v1/optimize", json={
        "duration": 271, "zones": ZONES, "interruptible": True, "min_chunk": 2, "max_chunks": 1,
        "max_delay": "P17D"})
    plain = client.post("/api/v1/optimize", json={"duration": 271, "zones": ZONES, "max_delay": "P17D"})
    assert chunked.status_code == plain.status_code == 200
    one, two = chunked.get_json(), plain.get_json()
    assert (one["zone"], one["start"], one["end"]) == (two["zone"], two["start"], two["end"])
    assert one["chunks"] == [{"start": two["start"], "end": two["end"], "duration_minutes": 271}]
    refused = client.post("/api/v1/optimize", json={
        "duration": 271, "zones": ZONES, "interruptible": True, "min_chunk": 2, "max_chunks": 3,
        "max_delay": "P17D"})
    assert refused.status_code == 422 and "Retry-After" not in refused.headers
    assert refused.get_json()["error"]["code"] == "too_large"
    assert "min_chunk" in refused.get_json()["error"]["message"]


def test_through_the_api_a_deadline_is_a_503_with_retry_after(make_app):
    app = make_app()
    app_state(app).engine.new_budget = lambda: Budget(seconds=0.5, clock=FakeClock(step=1.0))
    answer = app.test_client().post("/api/v1/optimize", json={"duration": 60, "zones": ["DE"]})
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
    assert answer.get_json()["error"]["code"] == "deadline_exceeded"
