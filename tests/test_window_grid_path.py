"""The window search's prefix-sum path for evenly spaced forecasts (issue 13) gives exactly what a
brute force over every whole minute gives: random grids, steps, durations (on and off the step) and
off-grid earliest/latest times; uneven series still take the general path and agree too."""

from __future__ import annotations

import numpy as np
import pytest

from carbon_optimizer.scheduling import window


def brute_force(boundaries, values, duration, earliest, latest):
    """Every whole-minute start whose window fits; the emissions integrated point by point."""
    def emissions(start):
        total, end = 0.0, start + duration
        for a, b, v in zip(boundaries[:-1], boundaries[1:], values):
            total += v * max(0, min(b, end) - max(a, start))
        return total
    first = max(earliest, int(boundaries[0]))
    first = -(-first // 60) * 60
    last = min(latest, int(boundaries[-1]) - duration) // 60 * 60
    if first > last and first - latest < 60 and first + duration <= boundaries[-1]:
        last = first  # "start now" between minutes: the next minute
    scored = [(emissions(s), s) for s in range(first, last + 1, 60)]
    if not scored:
        return None
    best = min(e for e, _ in scored)
    scale = max(abs(best), 1.0)
    return min(s for e, s in scored if e <= best + 1e-9 * scale)


@pytest.mark.parametrize("even", [True, False])
def test_matches_brute_force_on_random_series(even):
    rng = np.random.default_rng(13 + even)
    for _ in range(300):
        step = int(rng.choice([300, 900, 1800, 3600]))
        n = int(rng.integers(1, 16))
        t0 = int(rng.integers(1_700_000_000 // 60, 1_800_000_000 // 60)) * 60
        if even:
            boundaries = t0 + step * np.arange(n + 1, dtype=np.int64)
        else:
            boundaries = t0 + np.concatenate(([0], np.cumsum(rng.integers(1, 60, n) * 60))).astype(np.int64)
        # Few distinct values: many exact ties, settled by the earliest start.
        values = rng.integers(1, 4, n).astype(float) if rng.random() < 0.5 else rng.uniform(10, 500, n).round(1)
        span = int(boundaries[-1] - boundaries[0])
        duration = int(rng.integers(1, span // 60 + 1)) * 60
        earliest = t0 + int(rng.integers(-span // 4, span))      # any second, not only minutes
        latest = earliest + int(rng.integers(0, span))
        found = window.best_window(boundaries, values, duration, earliest, latest)
        expected = brute_force(boundaries.tolist(), values.tolist(), duration, earliest, latest)
        assert (found.start if found else None) == expected, (boundaries, values, duration, earliest, latest)
        if found:
            reference = sum(v * max(0, min(b, found.end) - max(a, found.start))
                            for a, b, v in zip(boundaries[:-1], boundaries[1:], values)) / duration
            assert found.mean_intensity == pytest.approx(reference, rel=1e-9)
