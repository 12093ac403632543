"""The optimizer against a brute-force reference: every whole-minute start, minute by minute."""

import numpy as np
from hypothesis import given, settings, strategies as st

from carbon_optimizer.scheduling.window import best_window, best_window_across, window_mean

MINUTE = 60


def brute_force(boundaries, values, duration, earliest, latest):
    """Mean intensity of every minute-aligned window, summed minute by minute (no prefix sums)."""
    first = -(-max(earliest, boundaries[0]) // MINUTE) * MINUTE
    # With no whole minute in [earliest, latest], the next whole minute is the one start allowed.
    last = max(latest, first) if first - latest < MINUTE else latest
    best = None
    start = first
    while start <= last and start + duration <= boundaries[-1]:
        total = 0.0
        for minute in range(start, start + duration, MINUTE):
            # Boundaries are whole minutes in these cases, so each minute has one value.
            index = int(np.searchsorted(boundaries, minute, side="right")) - 1
            total += values[index] * MINUTE
        if best is None or total < best[1]:
            best = (start, total)
        start += MINUTE
    return best


@st.composite
def series(draw, max_points=12):
    n = draw(st.integers(1, max_points))
    gaps = draw(st.lists(st.integers(1, 90), min_size=n, max_size=n))  # irregular, in minutes
    start = draw(st.integers(0, 600)) * MINUTE
    boundaries = np.array([start] + list(start + np.cumsum(gaps) * MINUTE), dtype=np.int64)
    values = np.array(draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)), dtype=np.float64)
    return boundaries, values


@st.composite
def query(draw, boundaries):
    span = int(boundaries[-1] - boundaries[0])
    duration = draw(st.integers(1, max(1, span // MINUTE + 5))) * MINUTE
    earliest = int(boundaries[0]) + draw(st.integers(-600, span + 60))  # seconds, not aligned
    latest = earliest + draw(st.integers(0, span + 600))
    return duration, earliest, latest


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_best_window_matches_brute_force(data):
    boundaries, values = data.draw(series())
    duration, earliest, latest = data.draw(query(boundaries))
    found = best_window(boundaries, values, duration, earliest, latest)
    expected = brute_force(boundaries, values, duration, earliest, latest)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert found.start == expected[0]  # integer intensities: ties are exact, earliest wins
    assert found.end == found.start + duration
    assert abs(found.mean_intensity - expected[1] / duration) < 1e-9


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_across_zones_matches_brute_force(data):
    zones = data.draw(st.integers(1, 3))
    all_series = [data.draw(series(max_points=8)) for _ in range(zones)]
    duration, earliest, latest = data.draw(query(all_series[0][0]))
    found = best_window_across(all_series, duration, earliest, latest)
    expected = None
    for index, (boundaries, values) in enumerate(all_series):
        result = brute_force(boundaries, values, duration, earliest, latest)
        if result is None:
            continue
        key = (result[1], result[0], index)  # least emissions, then earliest, then first zone
        if expected is None or key < expected:
            expected = key
    if expected is None:
        assert found is None
        return
    assert (found.start, found.zone_index) == (expected[1], expected[2])


def test_start_between_points_is_found():
    # Clean hour from 01:00; a 30-minute job that must start by 00:45 is best started at 00:45,
    # half in each hour: a start between two forecast points.
    boundaries = np.array([0, 3600, 7200], dtype=np.int64)
    values = np.array([100.0, 10.0])
    window = best_window(boundaries, values, 1800, 0, 2700)
    assert window.start == 2700 and window.mean_intensity == 55.0
    # With a 90-minute job the exact optimum ends at the series end.
    window = best_window(boundaries, values, 5400, 0, 10_000)
    assert window.start == 1800
    assert abs(window.mean_intensity - (100 * 1800 + 10 * 3600) / 5400) < 1e-9


def test_no_window_when_job_longer_than_series():
    boundaries = np.array([0, 3600], dtype=np.int64)
    assert best_window(boundaries, np.array([5.0]), 7200, 0, 10_000) is None


def test_window_mean_holds_each_point():
    boundaries = np.array([0, 60, 180], dtype=np.int64)
    values = np.array([10.0, 40.0])
    assert window_mean(boundaries, values, 0, 120) == 25.0
