"""The optimizer against a brute-force reference: every whole-minute start, its emissions summed
over the series' steps second by second (no prefix sums, no interpolation).

Series come in three kinds: irregular whole-minute steps; a start and steps at arbitrary seconds
(off the minute grid, so no grid path may take them); and equal coarse steps (15, 30 or 60 minutes,
every provider's forecast) with the window's ends on, next to or off that grid and durations of
whole steps or odd minutes, which is where the grid paths' rounding lives."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from carbon_optimizer.scheduling.window import best_window, best_window_across, window_mean

MINUTE = 60
T0 = 1_800_000_000  # a whole hour


def emissions(boundaries, values, start, end):
    """Intensity x seconds over [start, end): each step's value times its overlap with the run."""
    return sum(int(v) * max(0, min(int(b), end) - max(int(a), start))
               for a, b, v in zip(boundaries[:-1], boundaries[1:], values))


def brute_force(boundaries, values, duration, earliest, latest):
    """(start, emissions) of the cleanest whole-minute start, earliest on ties; None when no run fits.
    Starts run from the first whole minute at or after the earliest start and the series start to
    the latest start; when that holds none, the first whole minute alone, if it is less than a
    minute past the latest start ("start now" at 10:17:31)."""
    first = -(-max(earliest, int(boundaries[0])) // MINUTE) * MINUTE
    end = int(boundaries[-1])
    starts = [s for s in range(first, latest + 1, MINUTE) if s + duration <= end]
    if not starts and first - latest < MINUTE and first + duration <= end:
        starts = [first]
    best = None
    for start in starts:
        total = emissions(boundaries, values, start, start + duration)  # integers: ties are exact
        if best is None or total < best[1]:
            best = (start, total)
    return best


@st.composite
def uneven_series(draw, max_points=12):
    """Irregular steps: whole minutes from a whole minute, or a start and steps at any second."""
    n = draw(st.integers(1, max_points))
    if draw(st.booleans()):
        gaps = np.array(draw(st.lists(st.integers(1, 90), min_size=n, max_size=n))) * MINUTE
        start = T0 + draw(st.integers(0, 600)) * MINUTE
    else:
        gaps = np.array(draw(st.lists(st.integers(1, 90 * MINUTE), min_size=n, max_size=n)))
        start = T0 + draw(st.integers(0, 3599))
    return np.concatenate(([start], start + np.cumsum(gaps))).astype(np.int64)


@st.composite
def even_grid(draw, max_points=8):
    """Equal steps of 15, 30 or 60 minutes (every provider's forecast), from a whole hour, a whole
    minute or an arbitrary second."""
    step = draw(st.sampled_from([15, 30, 60])) * MINUTE
    n = draw(st.integers(2, max_points))
    start = T0 + [0, MINUTE * draw(st.integers(1, 59)), draw(st.integers(1, 3599))][draw(st.integers(0, 2))]
    return start + step * np.arange(n + 1, dtype=np.int64)


def intensities(draw, n):
    return np.array(draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)), dtype=np.float64)


@st.composite
def any_query(draw, boundaries):
    """(duration, earliest, latest): any whole minutes, the window's ends at any second."""
    span = int(boundaries[-1] - boundaries[0])
    duration = draw(st.integers(1, max(1, span // MINUTE + 5))) * MINUTE
    earliest = int(boundaries[0]) + draw(st.integers(-600, span + 60))  # seconds, not aligned
    latest = earliest + draw(st.integers(0, span + 600))
    return duration, earliest, latest


# How a window meets an even grid: its duration, where it opens and where it closes. Drawn as one
# of every combination, so that each gets its share of the examples.
OPENS = ("on a boundary", "next to one", "between two", "so that the first run ends on one")
CLOSES = ("on a boundary", "next to one", "between two", "past the last start that fits")
SHAPES = [(whole, opens, closes) for whole in (True, False) for opens in OPENS for closes in CLOSES]


@st.composite
def grid_query(draw, boundaries, shape):
    """(duration, earliest, latest) against an even grid, of one of the SHAPES: whole steps or odd
    minutes; each end of the window on a boundary, a second or a minute off one, between two, or
    (the earliest start) where a run from it ends on one. Where the grid paths round and clip."""
    step, n = int(boundaries[1] - boundaries[0]), len(boundaries) - 1
    whole, opens, closes = shape
    q = draw(st.integers(1, n - 1))  # the steps a run touches: at least one start left over
    odd = (2 * draw(st.integers(0, step // (2 * MINUTE) - 1)) + 1) * MINUTE
    duration = q * step if whole else (q - 1) * step + odd
    first = draw(st.integers(0, n - q - 1))  # the boundary the window opens at
    at = int(boundaries[0]) + first * step
    near = [1, -1, MINUTE, -MINUTE][draw(st.integers(0, 3))]
    earliest = {"on a boundary": at, "next to one": at + near, "between two": at + draw(st.integers(1, step - 1)),
                "so that the first run ends on one": at + q * step - duration}[opens]
    at += draw(st.integers(1, n - q - first)) * step  # a later boundary, where a run still fits
    latest = {"on a boundary": at, "next to one": at - near, "between two": at - draw(st.integers(1, step - 1)),
              "past the last start that fits": int(boundaries[-1]) - duration + draw(st.integers(1, step))}[closes]
    return duration, earliest, max(earliest, latest)


def check_one(boundaries, values, duration, earliest, latest):
    found = best_window(boundaries, values, duration, earliest, latest)
    expected = brute_force(boundaries, values, duration, earliest, latest)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert found.start == expected[0]  # integer intensities: ties are exact, earliest wins
    assert found.end == found.start + duration
    assert abs(found.mean_intensity - expected[1] / duration) < 1e-9


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.data())
def test_best_window_matches_brute_force(data):
    boundaries = data.draw(uneven_series())
    check_one(boundaries, intensities(data.draw, len(boundaries) - 1), *data.draw(any_query(boundaries)))


def shape_name(shape) -> str:
    whole, opens, closes = shape
    return f"{'whole steps' if whole else 'odd minutes'}, opens {opens}, closes {closes}"


# Every shape of window gets its examples (one strategy over all of them left some shapes out).
@pytest.mark.parametrize("shape", SHAPES, ids=shape_name)
@settings(max_examples=8, deadline=None, derandomize=True)
@given(data=st.data())
def test_best_window_on_even_coarse_steps_matches_brute_force(shape, data):
    boundaries = data.draw(even_grid())
    check_one(boundaries, intensities(data.draw, len(boundaries) - 1), *data.draw(grid_query(boundaries, shape)))


def check_across(all_series, duration, earliest, latest):
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
    assert abs(found.mean_intensity - expected[0] / duration) < 1e-9


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.data())
def test_across_zones_matches_brute_force(data):
    all_series = [(edges, intensities(data.draw, len(edges) - 1)) for edges in
                  (data.draw(st.one_of(uneven_series(8), even_grid())) for _ in range(data.draw(st.integers(1, 3))))]
    check_across(all_series, *data.draw(any_query(all_series[0][0])))


@pytest.mark.parametrize("shape", SHAPES, ids=shape_name)
@settings(max_examples=6, deadline=None, derandomize=True)
@given(data=st.data())
def test_zones_on_one_grid_match_brute_force(shape, data):
    """Forecasts fetched together share one grid (the whole-step search's case when the range is on it), each zone its values."""
    edges = data.draw(even_grid())
    all_series = [(edges, intensities(data.draw, len(edges) - 1)) for _ in range(data.draw(st.integers(2, 3)))]
    check_across(all_series, *data.draw(grid_query(edges, shape)))


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
