"""Fleet scheduling against a brute force written here: every assignment of each job to a zone
and start in its window, or to nothing, that keeps every limit at every unit, on instances small
enough to enumerate.

The brute-force cases are overloaded: more jobs than the limits let run at once, in narrow windows,
so that which jobs run where and which are left out matters. There the heuristic alone falls short
of the optimum in enough cases that the exact solver's part is checked, not only its presence."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from carbon_optimizer.scheduling import fleet
from carbon_optimizer.scheduling.fleet import Capacity, FleetJob, schedule_fleet
from devkit.waiting import HANG


def brute_force(intensity, jobs, capacity):
    """(most jobs placed, most energy placed with that many, least emissions with both).
    Exhaustive; a branch is cut only when it cannot reach the best count and energy, or must place
    every remaining job to reach them and already costs more."""
    zones, units = intensity.shape
    count = [[0] * units for _ in range(zones)]
    power = [[0.0] * units for _ in range(zones)]
    options = [[(z, s) for z in job.zones
                for s in range(max(0, job.earliest), min(job.latest, units - job.length) + 1)]
               for job in jobs]
    energy = [job.weight * job.length for job in jobs]
    after = [sum(energy[i:]) for i in range(len(jobs) + 1)]
    best = [0, 0.0, 0.0]  # placed, energy, grams

    def limits_hold(zone, units_run):
        for t in units_run:
            if capacity.max_concurrent is not None and \
                    sum(count[z][t] for z in range(zones)) > capacity.max_concurrent:
                return False
            if capacity.zone_concurrent and capacity.zone_concurrent[zone] is not None and \
                    count[zone][t] > capacity.zone_concurrent[zone]:
                return False
            if capacity.zone_power_kw and capacity.zone_power_kw[zone] is not None and \
                    power[zone][t] > capacity.zone_power_kw[zone] + 1e-9:
                return False
        return True

    def visit(i, placed, kwh, grams):
        left = len(jobs) - i
        reach = (placed + left, kwh + after[i])
        if reach < tuple(best[:2]) or (reach == tuple(best[:2]) and grams >= best[2] and i > 0):
            return
        if i == len(jobs):
            if (placed, kwh, -grams) > (best[0], best[1], -best[2]):
                best[:] = [placed, kwh, grams]
            return
        job = jobs[i]
        for zone, start in options[i]:
            units_run = range(start, start + job.length)
            for t in units_run:
                count[zone][t] += 1
                power[zone][t] += job.power_kw or 0.0
            if limits_hold(zone, units_run):
                visit(i + 1, placed + 1, kwh + energy[i],
                      grams + job.weight * sum(intensity[zone, t] for t in units_run))
            for t in units_run:
                count[zone][t] -= 1
                power[zone][t] -= job.power_kw or 0.0
        visit(i + 1, placed, kwh, grams)  # job i left out

    best[:] = [-1, -1.0, float("inf")]
    visit(0, 0, 0.0, 0.0)
    return best[0], best[1], best[2]


def random_instance(rng, zones, units, count, with_power, slack=None):
    """`count` jobs of 1 to 4 units; with `slack`, each may start at most that many units late."""
    intensity = rng.integers(50, 500, size=(zones, units)).astype(float)
    jobs = []
    for _ in range(count):
        length = int(rng.integers(1, 5))
        earliest = int(rng.integers(0, units - length))
        if slack is None:
            latest = int(rng.integers(earliest, units - length + 1))
        else:
            latest = int(min(units - length, earliest + rng.integers(0, slack + 1)))
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


CASES = [(seed, kind) for seed in range(20) for kind in ("global", "zone", "power")]
# Whether the heuristic alone fell short of the brute force, per case (read by the last test).
HEURISTIC_SHORT: dict[tuple[int, str], bool] = {}


def overloaded_case(seed: int, kind: str):
    """Seven jobs on ten units, each free to start at most three units late, under limits that
    hold about two at once: two at a time in one zone, one at a time in each of two, or power."""
    rng = np.random.default_rng(seed)
    zones = 1 if kind == "global" else 2
    intensity, jobs = random_instance(rng, zones, units=10, count=7, with_power=kind == "power", slack=3)
    capacity = {"global": Capacity(max_concurrent=2),
                "zone": Capacity(max_concurrent=2, zone_concurrent=[1, 1]),
                "power": Capacity(zone_power_kw=[5.0, 4.0])}[kind]
    return intensity, jobs, capacity


@pytest.mark.parametrize("seed,kind", CASES)
def test_as_many_placed_as_the_brute_force_and_its_least_grams(seed, kind):
    intensity, jobs, capacity = overloaded_case(seed, kind)
    placed, kwh, optimum = brute_force(intensity, jobs, capacity)
    # The exact solver's one-second limit is a bound for requests; here only a hang may stop it.
    with mock.patch.object(fleet, "EXACT_SECONDS", HANG):
        plan = schedule_fleet(intensity, jobs, capacity)
    check_plan(intensity, jobs, capacity, plan)
    assert plan.proven_optimal, plan.not_proven
    assert plan.placed == placed
    assert sum(j.weight * j.length for j, p in zip(jobs, plan.placements) if p) == pytest.approx(kwh)
    assert plan.emissions == pytest.approx(optimum, rel=1e-9)
    with mock.patch.object(fleet, "SMALL_BATCH", 0):  # not solved exactly: the heuristic alone
        heuristic = schedule_fleet(intensity, jobs, capacity)
    check_plan(intensity, jobs, capacity, heuristic)
    heuristic_kwh = sum(j.weight * j.length for j, p in zip(jobs, heuristic.placements) if p)
    assert (heuristic.placed, heuristic_kwh, -heuristic.emissions) <= (placed, kwh + 1e-9, -optimum + 1e-6)
    HEURISTIC_SHORT[(seed, kind)] = (heuristic.placed < placed or heuristic_kwh < kwh - 1e-9
                                     or heuristic.emissions > optimum + 1e-6)


@pytest.mark.last_in_module
def test_the_cases_are_hard_enough_that_the_heuristic_alone_falls_short_in_several():
    if len(HEURISTIC_SHORT) < len(CASES):
        pytest.skip("needs every brute-force case of this module run first")
    short = sorted(case for case, fell_short in HEURISTIC_SHORT.items() if fell_short)
    # 10 of the 60 when written (1 of the 90 looser cases before). Fewer means the cases no longer
    # tell the exact solver from the heuristic: make them harder rather than this number smaller.
    assert len(short) > 5, short


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), cap=st.integers(0, 3))
def test_plans_always_respect_every_limit(seed, cap):
    rng = np.random.default_rng(seed)
    intensity, jobs = random_instance(rng, 2, units=20, count=12, with_power=True)
    capacity = Capacity(max_concurrent=cap + 1, zone_concurrent=[cap, None], zone_power_kw=[None, 7.0])
    check_plan(intensity, jobs, capacity, schedule_fleet(intensity, jobs, capacity))


@pytest.mark.parametrize("seed", range(4))
def test_large_batches_respect_every_limit(seed):
    """Batches too large for the exact solver (about 5,000 job-zone-start choices) get the
    heuristic's plan alone: it keeps every limit too."""
    rng = np.random.default_rng(seed)
    intensity, jobs = random_instance(rng, 2, units=60, count=60, with_power=True)
    capacity = Capacity(max_concurrent=6, zone_concurrent=[3, None], zone_power_kw=[None, 12.0])
    check_plan(intensity, jobs, capacity, schedule_fleet(intensity, jobs, capacity))


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
