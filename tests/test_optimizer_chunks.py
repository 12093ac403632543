"""Interruptible workloads (best_chunks) against a brute force written here: every set of whole
minutes that obeys the chunk rules, on series small enough to enumerate. Series step at whole
minutes, at arbitrary seconds (a minute then holds two values: it costs its exact integral), or in
equal 5, 15 and 60-minute steps from a whole hour or from any second."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from carbon_optimizer.scheduling.chunks import best_chunks

MINUTE = 60
T0 = 1_800_000_000  # a whole minute


def minute_values(boundaries, values, first, last):
    """Mean intensity of each whole minute [t, t + 60) for t in range(first, last, 60): its exact
    integral over the held series (a boundary at an arbitrary second splits a minute)."""
    return [integral(boundaries, values, t, t + MINUTE) / MINUTE for t in range(first, last, MINUTE)]


def run_sets(count, need, least, most):
    """Every set of separate runs (start, stop) of indices in range(count): lengths at least `least`,
    `need` indices in all, at most `most` runs (None: any number)."""
    def extend(position, remaining, runs):
        if remaining == 0:
            yield runs
            return
        if most is not None and len(runs) == most:
            return
        for start in range(position, count):
            for length in range(least, remaining + 1):
                if start + length > count:
                    break
                yield from extend(start + length + 1, remaining - length, runs + [(start, start + length)])
    yield from extend(0, need, [])


def brute_force(boundaries, values, duration, earliest, deadline, min_chunk, max_chunks):
    """Least mean intensity over every choice of whole minutes inside [earliest, deadline] and the
    series, in chunks of at least `min_chunk` (default: the shortest step, at most the duration),
    at most `max_chunks` of them; None when there is no choice.

    As for a plain workload, a window too short for a whole-minute run (say "start now" at
    10:17:30) gets one run from its first whole minute, when that ends less than a minute late."""
    if min_chunk is None:
        min_chunk = min(int(np.diff(boundaries).min()), duration)
    first = max(-(-earliest // MINUTE) * MINUTE, -(-int(boundaries[0]) // MINUTE) * MINUTE)
    last = min(deadline // MINUTE * MINUTE, int(boundaries[-1]) // MINUTE * MINUTE)
    if last - first < duration:
        if first + duration - deadline < MINUTE and first + duration <= boundaries[-1]:
            return integral(boundaries, values, first, first + duration) / duration
        return None
    costs = minute_values(boundaries, values, first, last)
    least = -(-min_chunk // MINUTE)
    totals = [sum(sum(costs[a:b]) for a, b in runs)
              for runs in run_sets(len(costs), duration // MINUTE, least, max_chunks)]
    return min(totals) / (duration // MINUTE) if totals else None


def integral(boundaries, values, start, end):
    """Exact integral of the held series over [start, end), by overlap with each step."""
    total = 0.0
    for i, value in enumerate(values):
        overlap = min(end, boundaries[i + 1]) - max(start, boundaries[i])
        total += value * max(0, overlap)
    return total


def check_plan(plan, boundaries, values, duration, earliest, deadline, min_chunk, max_chunks):
    """The plan keeps every rule, and its stated mean is what its chunks really cost."""
    least = min_chunk if min_chunk is not None else min(int(np.diff(boundaries).min()), duration)
    chunks = plan.intervals
    assert sum(end - start for start, end in chunks) == duration
    assert all(end - start >= least for start, end in chunks)
    assert max_chunks is None or len(chunks) <= max_chunks
    assert plan.start >= max(earliest, boundaries[0]) and plan.end <= boundaries[-1]
    assert all(start % MINUTE == 0 and end % MINUTE == 0 for start, end in chunks)  # whole minutes
    # Inside the window, or (one run, no whole-minute run fitting) less than a minute late.
    assert plan.end <= deadline or (len(chunks) == 1 and plan.end - deadline < MINUTE)
    assert all(a[1] < b[0] for a, b in zip(chunks, chunks[1:]))  # separate, in order
    cost = sum(integral(boundaries, values, start, end) for start, end in chunks)
    assert plan.mean_intensity == pytest.approx(cost / duration, abs=1e-9)


SERIES = ("steps of whole minutes", "steps at arbitrary seconds")
# min_chunk: the shortest step (the default), exactly half the duration (two chunks just allowed),
# one minute, or any whole number of minutes.
MIN_CHUNKS = ("the shortest step", "half the duration", "one minute", "any minutes")


@st.composite
def small_series(draw, kind):
    """Up to 14 minutes of forecast: steps of whole minutes (irregular too) from a whole minute, or
    a start and steps at arbitrary seconds."""
    if kind == "steps of whole minutes":
        steps = [MINUTE * m for m in draw(st.lists(st.sampled_from([1, 2, 3, 4, 5]), min_size=1, max_size=6)
                                          .filter(lambda s: sum(s) <= 14))]
        start = T0 + draw(st.integers(0, 1000)) * MINUTE
    else:
        steps = draw(st.lists(st.integers(20, 300), min_size=1, max_size=6).filter(lambda s: sum(s) <= 14 * MINUTE))
        start = T0 + draw(st.integers(0, 1000 * MINUTE))
    boundaries = np.array([start] + [start + int(x) for x in np.cumsum(steps)], dtype=np.int64)
    values = np.array(draw(st.lists(st.integers(0, 40), min_size=len(steps), max_size=len(steps))), dtype=float)
    return boundaries, values


@st.composite
def rules(draw, span_minutes, min_chunk_kind, unit_minutes=1):
    """(duration, min_chunk, max_chunks): a duration of whole `unit_minutes` (odd minutes included
    for one), an even number of them for a min_chunk of half of it."""
    units = draw(st.integers(1, max(1, span_minutes // unit_minutes)))
    if min_chunk_kind == "half the duration":
        units = max(2, units - units % 2)
    minutes = units * unit_minutes
    min_chunk = {"the shortest step": None, "half the duration": minutes // 2 * MINUTE, "one minute": MINUTE,
                 "any minutes": draw(st.integers(1, minutes)) * MINUTE}[min_chunk_kind]
    max_chunks = draw(st.one_of(st.none(), st.integers(1, 3)))
    return minutes * MINUTE, min_chunk, max_chunks


def compare(boundaries, values, duration, earliest, deadline, min_chunk, max_chunks):
    """best_chunks equals the brute force: the same optimum, or both no plan."""
    plan = best_chunks(boundaries, values, duration, earliest, deadline, min_chunk, max_chunks)
    expected = brute_force(boundaries, values, duration, earliest, deadline, min_chunk, max_chunks)
    if expected is None:
        assert plan is None
        return
    assert plan is not None, expected
    check_plan(plan, boundaries, values, duration, earliest, deadline, min_chunk, max_chunks)
    assert plan.mean_intensity == pytest.approx(expected, abs=1e-9)


@st.composite
def on_point_cases(draw, series_kind, min_chunk_kind):
    """Earliest start and deadline on forecast points."""
    boundaries, values = draw(small_series(series_kind))
    duration, min_chunk, max_chunks = draw(rules(int(boundaries[-1] - boundaries[0]) // MINUTE, min_chunk_kind))
    earliest = int(draw(st.sampled_from(list(boundaries[:-1]))))
    deadline = int(draw(st.sampled_from([b for b in boundaries if b > earliest])))
    return boundaries, values, duration, earliest, deadline, min_chunk, max_chunks


@st.composite
def any_second_cases(draw, series_kind, opens, min_chunk_kind):
    """Earliest start and deadline at any second: the window opening before the series (its first
    whole minute then comes from the series' start) or inside it."""
    boundaries, values = draw(small_series(series_kind))
    span = int(boundaries[-1] - boundaries[0])
    duration, min_chunk, max_chunks = draw(rules(span // MINUTE, min_chunk_kind))
    if opens == "before the series":
        earliest = int(boundaries[0]) - draw(st.integers(1, 90))
    else:
        earliest = int(boundaries[0]) + draw(st.integers(0, span))
    deadline = earliest + draw(st.integers(duration, max(duration, span + 90)))
    return boundaries, values, duration, earliest, deadline, min_chunk, max_chunks


@pytest.mark.parametrize("series_kind", SERIES)
@pytest.mark.parametrize("min_chunk_kind", MIN_CHUNKS)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_best_chunks_is_the_brute_force_optimum_with_the_window_on_forecast_points(series_kind, min_chunk_kind, data):
    compare(*data.draw(on_point_cases(series_kind, min_chunk_kind)))


@pytest.mark.parametrize("series_kind", SERIES)
@pytest.mark.parametrize("opens", ["before the series", "inside the series"])
@pytest.mark.parametrize("min_chunk_kind", MIN_CHUNKS)
@settings(max_examples=20, deadline=None, derandomize=True)
@given(data=st.data())
def test_best_chunks_is_the_brute_force_optimum_with_the_window_at_any_second(series_kind, opens, min_chunk_kind,
                                                                              data):
    compare(*data.draw(any_second_cases(series_kind, opens, min_chunk_kind)))


@pytest.mark.parametrize("case", [
    (np.array([T0, T0 + 120, T0 + 240], dtype=np.int64), np.array([10.0, 20.0]), 120, T0 + 45, T0 + 190, 120, None),
    # Two chunks: the grid anchored at the series start loses the 49 s before it (23.3 vs 26.7).
    (np.array([T0 + 120 * i for i in range(6)], dtype=np.int64), np.array([10.0, 20.0, 30.0, 30.0, 30.0]), 360,
     T0 + 11, T0 + 512, 120, None)])
def test_best_chunks_is_the_brute_force_optimum_in_the_cases_found_before(case):
    compare(*case)


def test_splits_around_a_peak_and_respects_min_chunk():
    hour = 3600
    boundaries = np.arange(7, dtype=np.int64) * hour
    values = np.array([10.0, 10.0, 500.0, 500.0, 10.0, 10.0])
    plan = best_chunks(boundaries, values, 4 * hour, 0, 6 * hour)
    assert plan.intervals == ((0, 2 * hour), (4 * hour, 6 * hour))
    assert plan.mean_intensity == pytest.approx(10.0)
    # One chunk only: the run has to cross the peak.
    single = best_chunks(boundaries, values, 4 * hour, 0, 6 * hour, max_chunks=1)
    assert len(single.intervals) == 1 and single.mean_intensity == pytest.approx(255.0)
    # Chunks of at least three hours cannot avoid the peak either.
    long = best_chunks(boundaries, values, 4 * hour, 0, 6 * hour, min_chunk=3 * hour)
    assert long.duration == 4 * hour and long.mean_intensity == pytest.approx(255.0)


def test_no_room_is_none():
    boundaries = np.arange(4, dtype=np.int64) * 3600
    values = np.ones(3)
    assert best_chunks(boundaries, values, 3 * 3600, 1800, 3 * 3600) is None


@st.composite
def forecast_step_cases(draw, starts, ends, durations, min_chunk_kind):
    """5, 15 and 60-minute forecast steps from a whole hour or from an arbitrary second, a window of
    up to 16 minutes crossing a step boundary or not, its ends on a boundary or a second or a minute
    off one, or at any second (what a request at 10:17:30 meets)."""
    step = draw(st.sampled_from([5, 15, 60])) * MINUTE
    points = draw(st.integers(1, 4))
    start = T0 + draw(st.integers(0, 50)) * 3600 + (draw(st.integers(1, 3599)) if starts == "an arbitrary second" else 0)
    boundaries = start + step * np.arange(points + 1, dtype=np.int64)
    values = np.array(draw(st.lists(st.integers(0, 40), min_size=points, max_size=points)), dtype=float)
    if ends == "at any second":
        earliest = start + draw(st.integers(-70, points * step))
        deadline = earliest + draw(st.integers(MINUTE, 16 * MINUTE + 59))
    else:  # on boundaries, or a second or a minute off them
        off = st.sampled_from([0, 1, -1, MINUTE, -MINUTE])
        earliest = start + draw(st.integers(0, points)) * step + draw(off)
        deadline = start + (-(-(earliest - start) // step) + draw(st.integers(0, 2))) * step + draw(off)
        deadline = min(max(deadline, earliest + MINUTE), earliest + 16 * MINUTE + 59)
    unit = step // MINUTE if durations == "whole steps" else 1
    duration, min_chunk, max_chunks = draw(rules((deadline - earliest) // MINUTE, min_chunk_kind, unit))
    return boundaries, values, duration, earliest, deadline, min_chunk, max_chunks


@pytest.mark.parametrize("starts", ["a whole hour", "an arbitrary second"])
@pytest.mark.parametrize("ends", ["on or next to boundaries", "at any second"])
@pytest.mark.parametrize("durations", ["any minutes", "whole steps"])
@pytest.mark.parametrize("min_chunk_kind", MIN_CHUNKS)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(data=st.data())
def test_best_chunks_is_the_whole_minute_optimum_with_forecast_steps_of_5_15_and_60_minutes(starts, ends, durations,
                                                                                            min_chunk_kind, data):
    compare(*data.draw(forecast_step_cases(starts, ends, durations, min_chunk_kind)))


@pytest.mark.parametrize("case", [
    # "Start now" at 10:17:30 for an hour: no whole-minute hour fits before 11:17:30, so one run from
    # 10:18 (a plain workload's answer), not a refusal.
    (T0 + 3600 * np.arange(3, dtype=np.int64), np.array([10.0, 30.0]), 3600, T0 + 1050, T0 + 1050 + 3600, None, None),
    # Across a 15-minute step at 10:15 from 10:07:20: the clean minutes before the step are used.
    (T0 + 900 * np.arange(2, dtype=np.int64), np.array([5.0]), 300, T0 - 460, T0 + 500, 120, None)])
def test_best_chunks_is_the_whole_minute_optimum_in_the_forecast_step_cases_found_before(case):
    compare(*case)


def test_a_window_at_arbitrary_seconds_uses_the_minutes_the_series_grid_lost():
    # Hourly steps, 10:17:30 to 12:17:30, a 60-minute job in chunks of 15 minutes or more: 10:18 to
    # 11:00 (42 min at 10), then 11:59 to 12:17 (one minute at 50, 17 at 10). The grid of 15 minutes
    # anchored at the series start (10:00) had 45 clean minutes from 10:30 only: a mean of 20.
    boundaries = T0 + 3600 * np.arange(4, dtype=np.int64)
    values = np.array([10.0, 50.0, 10.0])
    earliest = T0 + 17 * MINUTE + 30
    plan = best_chunks(boundaries, values, 3600, earliest, earliest + 2 * 3600, 15 * MINUTE)
    assert plan.mean_intensity == pytest.approx((59 * 10 + 50) / 60)
    assert [(a - T0, b - T0) for a, b in plan.intervals] == [(18 * MINUTE, 3600),
                                                                 (119 * MINUTE, 137 * MINUTE)]
