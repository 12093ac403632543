"""Fleet scheduling against an exact MILP (scipy.optimize.milp, HiGHS) on small instances.

The reference programme here is written independently of fleet_milp.py (a row per constraint, built
term by term), so a mistake in the product's formulation shows up as a disagreement.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from carbon_optimizer.scheduling import fleet
from carbon_optimizer.scheduling.fleet import Capacity, FleetJob, schedule_fleet

milp_module = pytest.importorskip("scipy.optimize")
from scipy.optimize import Bounds, LinearConstraint, milp  # noqa: E402
from scipy.sparse import lil_matrix  # noqa: E402


def exact(intensity, jobs, capacity):
    """Least emissions with the most jobs placed: each job left out costs more than any schedule."""
    zones, units = intensity.shape
    prefix = np.concatenate((np.zeros((zones, 1)), np.cumsum(intensity, axis=1)), axis=1)
    columns = []  # (job, zone, start)
    for j, job in enumerate(jobs):
        for z in job.zones:
            for s in range(max(0, job.earliest), min(job.latest, units - job.length) + 1):
                columns.append((j, z, s))
    n = len(columns) + len(jobs)
    penalty = 10 * (1 + sum(job.weight for job in jobs) * intensity.max() * units)
    cost = np.array([jobs[j].weight * (prefix[z, s + jobs[j].length] - prefix[z, s])
                     for j, z, s in columns] + [penalty] * len(jobs))
    rows, lower, upper = [], [], []

    def add(coefs, lo, hi):
        row = lil_matrix((1, n))
        for col, value in coefs:
            row[0, col] = value
        rows.append(row)
        lower.append(lo)
        upper.append(hi)

    for j in range(len(jobs)):
        add([(c, 1) for c, (jj, _, _) in enumerate(columns) if jj == j] + [(len(columns) + j, 1)], 1, 1)
    for t in range(units):
        running = [(c, j, z) for c, (j, z, s) in enumerate(columns) if s <= t < s + jobs[j].length]
        if capacity.max_concurrent is not None:
            add([(c, 1) for c, _, _ in running], 0, capacity.max_concurrent)
        for zone in range(zones):
            if capacity.zone_concurrent and capacity.zone_concurrent[zone] is not None:
                add([(c, 1) for c, _, z in running if z == zone], 0, capacity.zone_concurrent[zone])
            if capacity.zone_power_kw and capacity.zone_power_kw[zone] is not None:
                add([(c, jobs[j].power_kw or 0.0) for c, j, z in running if z == zone], 0,
                    capacity.zone_power_kw[zone])
    from scipy.sparse import vstack
    constraint = LinearConstraint(vstack(rows).tocsr(), lower, upper)
    answer = milp(cost, constraints=constraint, integrality=np.ones(n), bounds=Bounds(0, 1))
    assert answer.success
    chosen = answer.x[len(columns):] < 0.5
    placed = int(chosen.sum())
    emissions = float(cost[:len(columns)] @ np.round(answer.x[:len(columns)]))
    return placed, emissions


def random_instance(rng, zones, units, count, with_power):
    intensity = rng.integers(50, 500, size=(zones, units)).astype(float)
    jobs = []
    for _ in range(count):
        length = int(rng.integers(1, 5))
        earliest = int(rng.integers(0, units - length))
        latest = int(rng.integers(earliest, units - length + 1))
        allowed = tuple(sorted(rng.choice(zones, size=int(rng.integers(1, zones + 1)), replace=False)))
        power = float(rng.integers(1, 6)) if with_power else None
        jobs.append(FleetJob(length, earliest, latest, tuple(int(z) for z in allowed), power))
    return intensity, jobs


def check_plan(intensity, jobs, capacity, plan):
    """Every limit holds at every unit; every placed job inside its window."""
    zones, units = intensity.shape
    count = np.zeros((zones, units))
    power = np.zeros((zones, units))
    total = 0.0
    for job, place in zip(jobs, plan.placements):
        if place is None:
            continue
        assert place.zone in job.zones
        assert job.earliest <= place.start <= job.latest and place.start + job.length <= units
        count[place.zone, place.start:place.start + job.length] += 1
        power[place.zone, place.start:place.start + job.length] += job.power_kw or 0
        total += job.weight * intensity[place.zone, place.start:place.start + job.length].sum()
    if capacity.max_concurrent is not None:
        assert count.sum(axis=0).max() <= capacity.max_concurrent
    for z in range(zones):
        if capacity.zone_concurrent and capacity.zone_concurrent[z] is not None:
            assert count[z].max() <= capacity.zone_concurrent[z]
        if capacity.zone_power_kw and capacity.zone_power_kw[z] is not None:
            assert power[z].max() <= capacity.zone_power_kw[z] + 1e-9
    assert total == pytest.approx(plan.emissions)
    for place, reason in zip(plan.placements, plan.reasons):
        assert (place is None) == (reason is not None)


CASES = [(seed, kind) for seed in range(30) for kind in ("global", "zone", "power")]


@pytest.mark.parametrize("seed,kind", CASES)
def test_within_one_percent_of_the_milp(seed, kind):
    rng = np.random.default_rng(seed)
    zones = 1 if kind == "global" else 2
    intensity, jobs = random_instance(rng, zones, units=16, count=8, with_power=kind == "power")
    if kind == "global":
        capacity = Capacity(max_concurrent=2)
    elif kind == "zone":
        capacity = Capacity(max_concurrent=3, zone_concurrent=[1, 2])
    else:
        capacity = Capacity(zone_power_kw=[6.0, 5.0])
    plan = schedule_fleet(intensity, jobs, capacity)
    check_plan(intensity, jobs, capacity, plan)
    placed, optimum = exact(intensity, jobs, capacity)
    assert plan.placed == placed
    # Overloaded or not: as many placed, and within 1% of the least grams for that many.
    assert plan.emissions <= optimum * 1.01 + 1e-6


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), cap=st.integers(0, 3), exact=st.booleans())
def test_plans_always_respect_every_limit(seed, cap, exact):
    """Both ways to a plan (HiGHS for small batches, the heuristic for large) keep every limit."""
    rng = np.random.default_rng(seed)
    intensity, jobs = random_instance(rng, 2, units=20, count=12, with_power=True)
    capacity = Capacity(max_concurrent=cap + 1, zone_concurrent=[cap, None], zone_power_kw=[None, 7.0])
    previous = fleet.EXACT_COLUMNS
    fleet.EXACT_COLUMNS = previous if exact else 0
    try:
        plan = schedule_fleet(intensity, jobs, capacity)
    finally:
        fleet.EXACT_COLUMNS = previous
    check_plan(intensity, jobs, capacity, plan)


def test_unschedulable_reasons_and_the_rest_still_placed():
    intensity = np.array([[100.0, 10.0, 10.0, 100.0]])
    jobs = [FleetJob(2, 0, 2, (0,), 1.0), FleetJob(2, 0, 2, (0,), 1.0),
            FleetJob(5, 0, 0, (0,), 1.0), FleetJob(1, 0, 3, (0,), 9.0)]
    plan = schedule_fleet(intensity, jobs, Capacity(max_concurrent=1, zone_power_kw=[5.0]))
    assert plan.reasons[2] == "window_not_covered"      # longer than the whole grid
    assert plan.reasons[3] == "capacity_exceeded"       # 9 kW > the zone's 5 kW alone
    assert plan.placements[0] is not None and plan.placements[1] is not None
    starts = sorted(p.start for p in plan.placements[:2])
    assert starts == [0, 2]  # one at a time, both inside [0, 4)
    assert plan.emissions == pytest.approx(220.0)
