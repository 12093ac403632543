"""Window search over piecewise-constant carbon-intensity series: pure functions, no I/O, no clock.

Times are integer epoch seconds. A series is `boundaries` (n + 1 increasing times) and `values`
(n intensities); value i holds on [boundaries[i], boundaries[i + 1]).

The emissions of a window [s, s + d) are G(s) = F(s + d) - F(s), with F the running integral of the
intensity: F is piecewise linear with kinks at the boundaries, so G is piecewise linear in s with
kinks only where s or s + d meets a boundary. On a grid of start times (whole minutes) the minimum
therefore lies at a grid point next to such a kink or at an end of the allowed range. We evaluate
exactly those O(n) candidates with prefix sums: no loop per window, exact, linear in n.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from carbon_optimizer.scheduling.model import Run

GRANULARITY_SECONDS = 60
# Emissions that differ by less than this (relative) are a tie; ties go to the earliest start.
_TIE_TOLERANCE = 1e-12


def running_integral(boundaries: np.ndarray, values: np.ndarray) -> np.ndarray:
    """F at each boundary: gCO2eq/kWh x seconds accumulated from the first boundary."""
    integral = np.empty(len(boundaries), dtype=np.float64)
    integral[0] = 0.0
    np.cumsum(values * np.diff(boundaries), out=integral[1:])
    return integral


def _ceil_to(x: np.ndarray | int, g: int):
    return -(-x // g) * g


def start_range(boundaries: np.ndarray, duration: int, earliest: int, latest: int,
                granularity: int = GRANULARITY_SECONDS) -> Optional[tuple[int, int]]:
    """The grid-aligned starts s in [earliest, latest] whose window lies inside the series.

    When that range holds no grid point at all (say earliest = latest = 10:17:31, "start now"),
    the next grid point is the one start offered, late by less than one grid step.
    """
    lo = int(_ceil_to(max(earliest, int(boundaries[0])), granularity))
    hi = (min(latest, int(boundaries[-1]) - duration) // granularity) * granularity
    if lo > hi and lo - latest < granularity and lo + duration <= boundaries[-1]:
        hi = lo
    return (lo, hi) if lo <= hi else None


def window_mean(boundaries: np.ndarray, values: np.ndarray, start: int, duration: int,
                integral: Optional[np.ndarray] = None) -> float:
    """Mean intensity over [start, start + duration), which must lie inside the series."""
    if integral is None:
        integral = running_integral(boundaries, values)
    ends = np.interp([start, start + duration], boundaries, integral)
    return float((ends[1] - ends[0]) / duration)


def best_window(boundaries: np.ndarray, values: np.ndarray, duration: int, earliest: int,
                latest: int, granularity: int = GRANULARITY_SECONDS,
                integral: Optional[np.ndarray] = None) -> Optional[Run]:
    """The grid-aligned start in [earliest, latest] with the least mean intensity (earliest on ties).

    Returns None when no window of `duration` fits inside both the range and the series.
    """
    if duration <= 0:
        raise ValueError("duration must be positive")
    bounds = start_range(boundaries, duration, earliest, latest, granularity)
    if bounds is None:
        return None
    lo, hi = bounds
    # Evenly spaced boundaries (every provider's forecast) take the prefix-sum path.
    step = _even_step(boundaries, duration, granularity)
    if step is not None and not duration % step:
        t0 = int(boundaries[0])
        if not (lo - t0) % step and not (hi - t0) % step:
            return _whole_steps(values, integral, t0, step, duration, lo, hi)
    if integral is None:
        integral = np.empty(len(boundaries), dtype=np.float64)
        integral[0] = 0.0
        if step is not None:  # a float scalar: multiplying by the int64 diffs costs 4x more
            np.multiply(np.cumsum(values, out=integral[1:]), float(step), out=integral[1:])
        else:
            np.cumsum(values * np.diff(boundaries), out=integral[1:])
    if step is not None:
        candidates, emissions = _on_grid(boundaries, values, integral, step, duration, lo, hi)
    else:
        kinks = np.concatenate((boundaries, boundaries - duration))
        below = (kinks // granularity) * granularity
        candidates = np.concatenate((below, below + granularity, [lo, hi]))
        # Unsorted, with repeats: sorting (np.unique) cost more than the whole search; ties are
        # settled below by taking the earliest start among the near-best.
        candidates = candidates[(candidates >= lo) & (candidates <= hi)]
        at_start = np.interp(candidates, boundaries, integral)
        at_end = np.interp(candidates + duration, boundaries, integral)
        emissions = at_end - at_start
    index = int(np.argmin(emissions))
    tolerance = _TIE_TOLERANCE * max(abs(float(integral[-1])), 1.0)
    tied = emissions <= emissions[index] + tolerance
    if np.count_nonzero(tied) > 1:  # ties go to the earliest start (candidates are not sorted)
        indices = np.flatnonzero(tied)
        index = int(indices[np.argmin(candidates[indices])])
    start = int(candidates[index])
    return Run(0, ((start, start + duration),), float(emissions[index] / duration))


def _even_step(boundaries: np.ndarray, duration: int, granularity: int) -> Optional[int]:
    """The step when the boundaries are evenly spaced on the start grid and the duration is on that
    grid too; else None."""
    n = len(boundaries) - 1
    if n < 1 or boundaries.dtype.kind != "i":  # other dtypes (floats) take the general path
        return None
    t0 = int(boundaries[0])
    step = int(boundaries[1]) - t0
    if (step <= 0 or step % granularity or t0 % granularity or duration % granularity
            or int(boundaries[-1]) - t0 != step * n):
        return None
    # The n gaps add up to step * n (checked above), so none is below step iff all equal it: one
    # subtraction and the least gap instead of np.diff, a comparison and all() (read through argmin,
    # which NumPy runs several times faster than min() on arrays this small).
    if n > 1:
        gaps = boundaries[1:] - boundaries[:-1]
        if gaps[gaps.argmin()] < step:
            return None
    return step


def _whole_steps(values: np.ndarray, integral: Optional[np.ndarray], t0: int, step: int,
                 duration: int, lo: int, hi: int) -> Run:
    """The search when the duration is a whole number of steps and both ends of the range are on a
    boundary: every kink of G(s) is then a start on a boundary, so those starts (sorted) are all the
    candidates, read off the prefix sums with one subtraction. Without a given integral the prefix
    sums are left in units of one step (value x step), which saves a multiplication per call."""
    q, first, last = duration // step, (lo - t0) // step, (hi - t0) // step
    if integral is None:
        sums = np.empty(len(values) + 1, dtype=np.float64)
        sums[0] = 0.0
        np.add.accumulate(values, out=sums[1:])
        scale = float(step)
    else:
        sums, scale = integral, 1.0
    emissions = sums[first + q:last + q + 1] - sums[first:last + 1]
    index = int(emissions.argmin())  # the first exact minimum
    if index:
        # Ties go to the earliest near-best start; the candidates are in order, so only a start
        # before the exact minimum can be one, and usually none is within tolerance.
        # (max(|F(end)|, 1) / scale: the tolerance of the general path, in the units of `sums`)
        limit = float(emissions[index]) + _TIE_TOLERANCE * max(abs(float(sums[-1])), 1.0 / scale)
        earlier = emissions[:index]
        if earlier[earlier.argmin()] <= limit:
            index = int((earlier <= limit).argmax())
    start = t0 + (first + index) * step
    return Run(0, ((start, start + duration),), float(emissions[index]) * scale / duration)


def _on_grid(boundaries: np.ndarray, values: np.ndarray, integral: np.ndarray, step: int,
             duration: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The same candidates as the general search, read off the prefix sums without interpolation:
    on an even grid the kinks are the starts on a boundary (A) and the starts whose end is on one
    (B), both on the start grid already; plus the ends of the range where they fall between.
    Exact, as the general path."""
    t0, n = int(boundaries[0]), len(values)
    q, r = divmod(duration, step)

    def at(x: int) -> float:  # the running integral at x, inside the series
        i = min((x - t0) // step, n - 1)
        return float(integral[i]) + float(values[i]) * (x - t0 - i * step)
    starts, emissions = [], []
    for edge in {lo, hi}:
        if (edge - t0) % step:
            starts.append(np.array([edge]))
            emissions.append(np.array([at(edge + duration) - at(edge)]))
    first, last = -(-(lo - t0) // step), (hi - t0) // step       # A: start = boundary k
    if first <= last:
        end = integral[first + q:last + q + 1]
        if r:
            end = end + values[first + q:last + q + 1] * r
        starts.append(boundaries[first:last + 1])
        emissions.append(end - integral[first:last + 1])
    if r:
        first, last = -(-(lo - t0 + duration) // step), (hi - t0 + duration) // step  # B: end = boundary j
        if first <= last:
            i = slice(first - q - 1, last - q)                   # the start's own step, step - r in
            starts.append(boundaries[first:last + 1] - duration)
            emissions.append(integral[first:last + 1] - integral[i] - values[i] * (step - r))
    if len(starts) == 1:
        return starts[0], emissions[0]
    return np.concatenate(starts), np.concatenate(emissions)


def best_window_across(series: Sequence[tuple[np.ndarray, np.ndarray]], duration: int,
                       earliest: int, latest: int, granularity: int = GRANULARITY_SECONDS,
                       integrals: Optional[Sequence[np.ndarray]] = None) -> Optional[Run]:
    """The best window over several zones' series; ties go to the earliest start, then the first zone.

    `integrals`, when given, are each series' running integral, computed once by the caller.
    Zone by zone: searching zones stacked in one array never paid (bench/optimizer_bench.py).
    """
    found: list[Run] = []
    for index, (boundaries, values) in enumerate(series):
        window = best_window(boundaries, values, duration, earliest, latest, granularity,
                             integrals[index] if integrals is not None else None)
        if window is not None:
            found.append(Run(index, window.intervals, window.mean_intensity))
    if not found:
        return None
    best_mean = min(z.mean_intensity for z in found)
    scale = max(abs(best_mean), 1.0)
    tied = [z for z in found if z.mean_intensity <= best_mean + _TIE_TOLERANCE * 1e3 * scale]
    return min(tied, key=lambda z: (z.start, z.zone_index))
