"""Interruptible workloads against a brute-force reference: every subset of grid units."""

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from carbon_optimizer.scheduling.chunks import best_chunks, cheapest_units, grid_unit, unit_costs

MINUTE = 60


def runs_of(indices):
    runs, start = [], None
    for position, index in enumerate(indices):
        if start is None:
            start = index
        if position + 1 == len(indices) or indices[position + 1] != index + 1:
            runs.append((start, index + 1))
            start = None
    return runs


def brute_force(costs, need, min_run, max_runs):
    """Least total cost over every set of `need` units obeying the run rules, or None."""
    best = None
    for chosen in combinations(range(len(costs)), need):
        runs = runs_of(chosen)
        if any(b - a < min_run for a, b in runs):
            continue
        if max_runs is not None and len(runs) > max_runs:
            continue
        total = sum(costs[i] for i in chosen)
        if best is None or total < best:
            best = total
    return best


@settings(max_examples=300, deadline=None)
@given(costs=st.lists(st.integers(0, 30), min_size=1, max_size=11), data=st.data())
def test_cheapest_units_matches_brute_force(costs, data):
    need = data.draw(st.integers(1, len(costs)))
    min_run = data.draw(st.integers(1, need))
    max_runs = data.draw(st.one_of(st.none(), st.integers(1, 4)))
    mask = cheapest_units(np.array(costs, dtype=float), need, min_run, max_runs)
    expected = brute_force(costs, need, min_run, max_runs)
    if expected is None:
        assert mask is None
        return
    assert mask is not None
    chosen = np.flatnonzero(mask).tolist()
    assert len(chosen) == need
    runs = runs_of(chosen)
    assert all(b - a >= min_run for a, b in runs)
    assert max_runs is None or len(runs) <= max_runs
    assert sum(costs[i] for i in chosen) == expected


@st.composite
def regular_series(draw):
    step = draw(st.sampled_from([15, 30, 60])) * MINUTE
    n = draw(st.integers(2, 10))
    start = draw(st.integers(0, 100)) * step
    boundaries = start + step * np.arange(n + 1, dtype=np.int64)
    values = np.array(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)), dtype=float)
    return boundaries, values


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_best_chunks_obeys_the_rules_and_is_optimal(data):
    boundaries, values = data.draw(regular_series())
    step = int(boundaries[1] - boundaries[0])
    span = int(boundaries[-1] - boundaries[0])
    duration = data.draw(st.integers(1, span // (15 * MINUTE))) * 15 * MINUTE
    min_chunk = data.draw(st.one_of(st.none(), st.integers(1, duration // (15 * MINUTE)).map(
        lambda q: q * 15 * MINUTE)))
    max_chunks = data.draw(st.one_of(st.none(), st.integers(1, 3)))
    earliest = int(boundaries[0]) + data.draw(st.integers(-3600, span // 2))  # not aligned
    deadline = earliest + data.draw(st.integers(duration, span + 3600))
    plan = best_chunks(boundaries, values, duration, earliest, deadline, min_chunk, max_chunks)
    # Reference: the same grid, every subset of units.
    least = min_chunk if min_chunk is not None else min(step, duration)
    unit = grid_unit(boundaries, duration, least)
    first, costs = unit_costs(boundaries, values, unit, earliest, deadline)
    expected = None
    if duration // unit <= len(costs) and len(costs) <= 14:
        expected = brute_force(list(costs), duration // unit, -(-least // unit), max_chunks)
    elif len(costs) > 14:
        return  # too many subsets for the reference
    if expected is None:
        assert plan is None
        return
    assert plan is not None
    assert sum(c.duration for c in plan.chunks) == duration
    assert all(c.duration >= least for c in plan.chunks)
    assert max_chunks is None or len(plan.chunks) <= max_chunks
    assert plan.chunks[0].start >= max(earliest, boundaries[0])
    assert plan.chunks[-1].end <= min(deadline, boundaries[-1])
    assert all(a.end < b.start for a, b in zip(plan.chunks, plan.chunks[1:]))  # separate chunks
    assert abs(plan.mean_intensity * duration - expected * unit) < 1e-6


def test_splits_around_a_peak_and_respects_min_chunk():
    hour = 3600
    boundaries = np.arange(7, dtype=np.int64) * hour
    values = np.array([10.0, 10.0, 500.0, 500.0, 10.0, 10.0])
    plan = best_chunks(boundaries, values, 4 * hour, 0, 6 * hour)
    assert [(c.start, c.end) for c in plan.chunks] == [(0, 2 * hour), (4 * hour, 6 * hour)]
    assert plan.mean_intensity == pytest.approx(10.0)
    # One chunk only: the run has to cross the peak.
    single = best_chunks(boundaries, values, 4 * hour, 0, 6 * hour, max_chunks=1)
    assert len(single.chunks) == 1 and single.mean_intensity == pytest.approx(255.0)
    # Chunks of at least three hours cannot avoid the peak either.
    long = best_chunks(boundaries, values, 4 * hour, 0, 6 * hour, min_chunk=3 * hour)
    assert long.duration == 4 * hour and long.mean_intensity == pytest.approx(255.0)


def test_no_room_is_none():
    boundaries = np.arange(4, dtype=np.int64) * 3600
    values = np.ones(3)
    assert best_chunks(boundaries, values, 3 * 3600, 1800, 3 * 3600) is None
