"""Interruptible workloads: split a run into chunks placed in the cleanest parts of the allowed window.

Pure functions, no I/O, no clock. Times are integer epoch seconds; a series is `boundaries`
(n + 1 increasing times) and `values` (n intensities), as in window.py.

Chunks start and end on a grid of `unit` seconds anchored at the series start, where `unit` is the
greatest common divisor of the series steps, the duration and the minimum chunk: every unit then has
one intensity, and any set of chunks made of whole steps, whole durations and whole minimum chunks is
on it. On that grid the answer is exact:
- `min_chunk` of one unit and no chunk limit: the cheapest `duration / unit` units (a sort);
- otherwise a dynamic programme over (units seen, units used, chunks used) with two states, "the last
  unit is idle" and "the last unit runs in a chunk already at least `min_chunk` long". A chunk is
  opened `min_chunk` at a time, so no state ever holds a chunk shorter than the minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce
from typing import Optional

import numpy as np

from carbon_optimizer.errors import TooLarge
from carbon_optimizer.scheduling.budget import Budget
from carbon_optimizer.scheduling.window import best_window

# Beyond this many DP cells (units x used units x chunk counts; 2 bytes each) a search is refused:
# 16 M cells keep one search within 32 MiB.
MAX_DP_CELLS = 16_000_000


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int

    @property
    def duration(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ChunkPlan:
    chunks: tuple[Chunk, ...]
    mean_intensity: float

    @property
    def duration(self) -> int:
        return sum(c.duration for c in self.chunks)

    @property
    def start(self) -> int:
        return self.chunks[0].start

    @property
    def end(self) -> int:
        return self.chunks[-1].end


def grid_unit(boundaries: np.ndarray, duration: int, min_chunk: int) -> int:
    steps = np.diff(boundaries).astype(np.int64)
    return int(reduce(math.gcd, (int(s) for s in np.unique(steps)), math.gcd(duration, min_chunk)))


def unit_costs(boundaries: np.ndarray, values: np.ndarray, unit: int, earliest: int,
               deadline: int) -> tuple[int, np.ndarray]:
    """First unit start inside [earliest, deadline] and the intensity of each whole unit there."""
    origin = int(boundaries[0])
    first = origin + max(0, -(-(earliest - origin) // unit)) * unit
    last_end = origin + ((min(deadline, int(boundaries[-1])) - origin) // unit) * unit
    count = max(0, (last_end - first) // unit)
    starts = first + unit * np.arange(count, dtype=np.int64)
    index = np.searchsorted(boundaries, starts, side="right") - 1
    return first, np.asarray(values, dtype=np.float64)[index]


def _runs(selected: np.ndarray) -> list[tuple[int, int]]:
    """(first, stop) index pairs of each run of True."""
    padded = np.concatenate(([False], selected, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def cheapest_units(costs: np.ndarray, need: int, min_run: int, max_runs: Optional[int],
                   budget: Optional[Budget] = None) -> Optional[np.ndarray]:
    """A boolean mask of `need` units with the least total cost, in runs of at least `min_run`
    units and at most `max_runs` runs; None when no such choice exists."""
    total = len(costs)
    if need <= 0 or need > total or (max_runs is not None and max_runs < 1):
        return None
    if min_run <= 1 and (max_runs is None or max_runs >= need):
        order = np.argsort(costs, kind="stable")  # equal costs: earliest first
        mask = np.zeros(total, dtype=bool)
        mask[order[:need]] = True
        return mask
    return _dp(costs, need, max(1, min_run), max_runs, budget)


def dp_cells(total: int, need: int, min_run: int, max_runs: Optional[int]) -> int:
    """Cells of the exact search's traceback tables: what it costs in memory (2 bytes a cell)."""
    k_size = min(max_runs, need // max(1, min_run)) + 1 if max_runs is not None else 1
    return (total + 1) * k_size * (need + 1)


def _dp(costs: np.ndarray, need: int, m: int, max_runs: Optional[int],
        budget: Optional[Budget] = None) -> Optional[np.ndarray]:
    total = len(costs)
    limited = max_runs is not None
    k_size = min(max_runs, need // m) + 1 if limited else 1
    if k_size < 1 + limited or m > need:
        return None
    if dp_cells(total, need, m, max_runs) > MAX_DP_CELLS:
        raise TooLarge("too many units for an exact interruptible search; use a longer min_chunk, "
                       "fewer max_chunks or a shorter window")
    inf = np.inf
    prefix = np.concatenate(([0.0], np.cumsum(costs)))
    # Costs of "idle after unit t" are read back at most m units, so m + 1 rows are kept (a ring);
    # only the two traceback tables span every unit, as booleans.
    ring = np.full((m + 1, k_size, need + 1), inf)
    ring[0, 0, 0] = 0.0
    on = np.full((k_size, need + 1), inf)
    off_from_on = np.zeros((total + 1, k_size, need + 1), dtype=bool)
    on_is_new = np.zeros((total + 1, k_size, need + 1), dtype=bool)
    for t in range(total):  # unit t decided; row t + 1 describes units 0..t
        if budget is not None and t % 256 == 0:
            budget.check()
        current = ring[t % (m + 1)]
        from_on = on < current
        off_next = np.where(from_on, on, current)
        off_from_on[t + 1] = from_on
        extend = np.full_like(on, inf)
        extend[:, 1:] = on[:, :-1] + costs[t]
        new = np.full_like(on, inf)
        if t + 1 - m >= 0:
            block = prefix[t + 1] - prefix[t + 1 - m]
            source = ring[(t + 1 - m) % (m + 1)]  # row t + 1 - m, not yet overwritten
            if limited:
                new[1:, m:] = source[:-1, :-m] + block
            else:
                new[:, m:] = source[:, :-m] + block
        ring[(t + 1) % (m + 1)] = off_next
        is_new = new < extend
        on = np.where(is_new, new, extend)
        on_is_new[t + 1] = is_new
    final_off, final_on = ring[total % (m + 1)][:, need], on[:, need]
    best_k_off, best_k_on = int(np.argmin(final_off)), int(np.argmin(final_on))
    if min(final_off[best_k_off], final_on[best_k_on]) == inf:
        return None
    running = final_on[best_k_on] < final_off[best_k_off]
    k, j, t = (best_k_on if running else best_k_off), need, total
    mask = np.zeros(total, dtype=bool)
    while t > 0:
        if not running:  # unit t - 1 idle; before it, a chunk or idle
            running = bool(off_from_on[t, k, j])
            t -= 1
            continue
        if on_is_new[t, k, j]:
            mask[t - m:t] = True
            t, j, running = t - m, j - m, False
            k -= 1 if limited else 0
        else:
            mask[t - 1] = True
            t, j = t - 1, j - 1
    return mask


def best_chunks(boundaries: np.ndarray, values: np.ndarray, duration: int, earliest: int,
                deadline: int, min_chunk: Optional[int] = None,
                max_chunks: Optional[int] = None,
                budget: Optional[Budget] = None) -> Optional[ChunkPlan]:
    """Chunks of total length `duration`, each at least `min_chunk` long (default: the shortest
    series step), all inside [earliest, deadline] and the series, with the least total emissions.

    Returns None when the rules leave no choice. Raises TooLarge when the exact search is too big.
    """
    if duration <= 0:
        raise ValueError("duration must be positive")
    if min_chunk is None:
        min_chunk = min(int(np.diff(boundaries).min()), duration)
    if min_chunk <= 0 or min_chunk > duration:
        raise ValueError("min_chunk must be positive and at most the duration")
    if max_chunks == 1 or 2 * min_chunk > duration:
        # One chunk is all the rules allow: the contiguous search, exact over whole minutes and
        # linear in the series, instead of a DP over every unit.
        window = best_window(boundaries, values, duration, earliest, deadline - duration)
        if window is not None and window.end <= deadline:
            return ChunkPlan(chunks=(Chunk(window.start, window.end),),
                             mean_intensity=window.mean_intensity)
    unit = grid_unit(boundaries, duration, min_chunk)
    first, costs = unit_costs(boundaries, values, unit, earliest, deadline)
    mask = cheapest_units(costs, duration // unit, -(-min_chunk // unit), max_chunks, budget)
    if mask is None:
        return None
    chunks = tuple(Chunk(first + a * unit, first + b * unit) for a, b in _runs(mask))
    mean = float(costs[mask].sum() * unit / duration)
    return ChunkPlan(chunks=chunks, mean_intensity=mean)
