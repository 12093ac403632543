"""best_window_across and best_window on whole-step windows (issue 13's per-call cuts): zones on one
even grid (once searched stacked; issue 25 measured that it never paid and removed it), and a
duration of whole steps over a range on the boundaries reads the starts on boundaries only. Both must give what a brute force over
every whole minute gives, with the same tie rules (earliest near-best start, then the first zone),
and every other input (starts at any second, odd-minute durations, zones on different or uneven
grids) must still take the general path and agree too."""

from __future__ import annotations

import numpy as np
import pytest

from carbon_optimizer.scheduling import window


def emissions(boundaries, values, start, duration):
    total, end = 0.0, start + duration
    for a, b, v in zip(boundaries[:-1], boundaries[1:], values):
        total += v * max(0, min(b, end) - max(a, start))
    return total


def brute_force_zone(boundaries, values, duration, earliest, latest):
    """(mean, start) of the earliest near-best whole-minute start in one zone, or None."""
    first = int(-(-max(earliest, boundaries[0]) // 60) * 60)
    last = int(min(latest, boundaries[-1] - duration) // 60 * 60)
    if first > last and first - latest < 60 and first + duration <= boundaries[-1]:
        last = first
    scored = [(emissions(boundaries, values, s, duration), s) for s in range(first, last + 1, 60)]
    if not scored:
        return None
    best = min(e for e, _ in scored)
    start = min(s for e, s in scored if e <= best + 1e-9 * max(abs(best), 1.0))
    return emissions(boundaries, values, start, duration) / duration, start


def brute_force_across(series, duration, earliest, latest):
    """(zone, start): the least mean over zones; near-ties to the earliest start, then the first zone."""
    found = [(z, brute_force_zone(b.tolist(), v.tolist(), duration, earliest, latest))
             for z, (b, v) in enumerate(series)]
    found = [(z, r) for z, r in found if r is not None]
    if not found:
        return None
    best = min(r[0] for _, r in found)
    return min(((r[1], z) for z, r in found if r[0] <= best + 1e-9 * max(abs(best), 1.0)))[::-1]


def random_values(rng, n):
    # Few distinct values: many ties, within a zone and across zones; decimals like 0.1 and 0.7 make
    # ties that float rounding splits by an ulp or so (near-ties, which go to the earliest start too).
    kind = rng.random()
    if kind < 0.35:
        return rng.integers(1, 4, n).astype(float)
    if kind < 0.7:
        return rng.choice([0.1, 0.2, 0.3, 0.7], n)
    return rng.uniform(10, 500, n).round(1)


@pytest.mark.parametrize("with_integrals", [False, True])
def test_zones_on_one_grid_match_brute_force(with_integrals):
    rng = np.random.default_rng(1313 + with_integrals)
    whole_step_cases = 0
    for _ in range(250):
        step = int(rng.choice([300, 900, 3600]))
        n = int(rng.integers(1, 14))
        zones = int(rng.integers(2, 6))
        t0 = int(rng.integers(1_700_000_000 // 3600, 1_800_000_000 // 3600)) * 3600
        series = [(t0 + step * np.arange(n + 1, dtype=np.int64), random_values(rng, n)) for _ in range(zones)]
        if rng.random() < 0.6:  # whole steps over a range on boundaries: _whole_steps per zone
            duration = int(rng.integers(1, n + 1)) * step
            earliest = t0 + int(rng.integers(-2, n)) * step
            latest = earliest + int(rng.integers(0, n + 1)) * step
        else:  # any second, odd minutes: the per-zone general path
            duration = int(rng.integers(1, n * step // 60 + 1)) * 60
            earliest = t0 + int(rng.integers(-step, n * step))
            latest = earliest + int(rng.integers(0, n * step))
        integrals = [window.running_integral(b, v) for b, v in series] if with_integrals else None
        whole_step_cases += duration % step == 0 and (earliest - t0) % step == 0
        found = window.best_window_across(series, duration, earliest, latest, integrals=integrals)
        expected = brute_force_across(series, duration, earliest, latest)
        got = (found.zone_index, found.start) if found else None
        assert got == expected, (series, duration, earliest, latest)
        if found:
            b, v = series[found.zone_index]
            reference = emissions(b.tolist(), v.tolist(), found.start, duration) / duration
            assert found.mean_intensity == pytest.approx(reference, rel=1e-9)
            assert found.end - found.start == duration
    assert whole_step_cases > 80  # whole-step ranges were really drawn, not only the general case


def test_zones_on_different_or_uneven_grids_still_match_brute_force():
    rng = np.random.default_rng(77)
    for _ in range(200):
        zones = int(rng.integers(2, 5))
        t0 = int(rng.integers(1_700_000_000 // 3600, 1_800_000_000 // 3600)) * 3600
        series = []
        for z in range(zones):
            n = int(rng.integers(1, 10))
            kind = rng.integers(0, 3)
            if kind == 0:  # even, but shifted by whole minutes from the first zone
                b = t0 + 60 * int(rng.integers(0, 30)) + 900 * np.arange(n + 1, dtype=np.int64)
            elif kind == 1:  # uneven whole-minute gaps
                b = t0 + np.concatenate(([0], np.cumsum(rng.integers(1, 60, n) * 60))).astype(np.int64)
            else:  # the first zone's grid, which alone would stack
                b = t0 + 900 * np.arange(n + 1, dtype=np.int64)
            series.append((b, random_values(rng, n)))
        span = max(int(b[-1]) for b, _ in series) - t0
        duration = int(rng.integers(1, max(span // 60 // 2, 1) + 1)) * 60
        earliest = t0 + int(rng.integers(-span // 4, span))
        latest = earliest + int(rng.integers(0, span + 1))
        found = window.best_window_across(series, duration, earliest, latest)
        expected = brute_force_across(series, duration, earliest, latest)
        assert ((found.zone_index, found.start) if found else None) == expected


def test_whole_step_windows_in_one_zone_match_brute_force():
    """best_window's whole-step path (duration of whole steps, range on boundaries) and its near
    neighbours off it (one minute or one second off), with many ties."""
    rng = np.random.default_rng(2026)
    for _ in range(400):
        step = int(rng.choice([300, 900, 1800, 3600]))
        n = int(rng.integers(1, 20))
        t0 = int(rng.integers(1_700_000_000 // 3600, 1_800_000_000 // 3600)) * 3600
        boundaries = t0 + step * np.arange(n + 1, dtype=np.int64)
        values = random_values(rng, n)
        duration = int(rng.integers(1, n + 1)) * step + int(rng.choice([0, 0, 60, -60]))
        if duration <= 0:
            duration = step
        earliest = t0 + int(rng.integers(-2, n)) * step + int(rng.choice([0, 0, 1, 59, 60, -1]))
        latest = earliest + int(rng.integers(0, n + 1)) * step + int(rng.choice([0, 0, 31]))
        found = window.best_window(boundaries, values, duration, earliest, latest)
        expected = brute_force_zone(boundaries.tolist(), values.tolist(), duration, earliest, latest)
        assert (found.start if found else None) == (expected[1] if expected else None)
        if found:
            assert found.mean_intensity == pytest.approx(expected[0], rel=1e-9)


def test_float_boundaries_take_the_exact_general_path():
    """Boundaries as floats (not the provider's int64) are not trusted for the grid paths."""
    boundaries = np.array([30.5, 3630.5, 7230.5, 10830.5])
    values = np.array([300.0, 100.0, 200.0])
    found = window.best_window(boundaries, values, 3600, 0, 10_000)
    expected = brute_force_zone([30.5, 3630.5, 7230.5, 10830.5], [300.0, 100.0, 200.0], 3600, 0, 10_000)
    assert (found.start, found.mean_intensity) == (expected[1], pytest.approx(expected[0]))
