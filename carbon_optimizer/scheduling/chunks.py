"""Interruptible workloads: split a run into chunks placed in the cleanest parts of the allowed window.

Pure functions, no I/O, no clock. Times are integer epoch seconds; a series is `boundaries`
(n + 1 increasing times) and `values` (n intensities), as in window.py.

Chunks are whole minutes: they start and end on the minute grid from the window's first whole
minute (not from the series start, so a window at 10:17:30 loses nothing), and their cost is the sum
of the intensity over their minutes. Minutes are grouped into units when every quantity is a whole
number of a coarser unit (minute_grid), which keeps on-grid windows as cheap as ever. On that grid
the answer is exact:
- `min_chunk` of one unit and no chunk limit: the cheapest `duration / unit` units (a sort);
- otherwise a dynamic programme over (units seen, units used, chunks used) with two states, "the last
  unit is idle" and "the last unit runs in a chunk already at least `min_chunk` long". A chunk is
  opened `min_chunk` at a time, so no state ever holds a chunk shorter than the minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import reduce
from typing import Optional, Sequence

import numpy as np

from carbon_optimizer.errors import TooLarge
from carbon_optimizer.scheduling.budget import Budget
from carbon_optimizer.scheduling.model import Run
from carbon_optimizer.scheduling.window import best_window, running_integral

# Beyond this many DP cells (units x used units x chunk counts; 2 bytes each) a search is refused:
# 16 M cells keep its traceback tables within 32 MiB.
MAX_DP_CELLS = 16_000_000
# ... and beyond this much working memory in all (dp_bytes: the tables, the ring of the last
# min_chunk rows, a step's temporaries): a long min_chunk makes the ring the larger part (a 3,899-
# minute run in 1,949-minute chunks held 93 MB, 61 of them ring). Within the request's memory cap
# (budget.DEFAULT_MEMORY), with room for the rest of the request.
MAX_DP_BYTES = 32 * 2 ** 20
MINUTE = 60


@dataclass(frozen=True)
class Grid:
    """`count` units of `unit` seconds from `first`: where chunks may start and end."""
    first: int
    unit: int
    count: int


def _gcd(values) -> int:
    return reduce(math.gcd, (int(v) for v in values), 0)


def minute_grid(boundaries: np.ndarray, duration: int, min_chunk: int, earliest: int,
                deadline: int) -> Optional[Grid]:
    """The whole minutes inside [earliest, deadline] and the series, as units of whole minutes.

    A unit is the gcd, in minutes, of the duration, the minimum chunk, the span and the offset of
    every series boundary from the first minute: every unit then has one intensity and every
    quantity of the problem is a whole number of units, the case where the old series-anchored
    grid was exact (an optimum over whole minutes has one on it; the test checks this against a
    minute-by-minute brute force). Windows at arbitrary seconds mostly get one-minute units.
    """
    first = -(-max(earliest, int(boundaries[0])) // MINUTE) * MINUTE
    last = min(deadline, int(boundaries[-1])) // MINUTE * MINUTE
    if last - first < duration:
        return None
    inner = boundaries[(boundaries > first) & (boundaries < last)].astype(np.int64) - first
    offsets = [1] if (inner % MINUTE).any() else np.unique(inner // MINUTE).tolist()
    unit = MINUTE * _gcd([duration // MINUTE, -(-min_chunk // MINUTE), (last - first) // MINUTE,
                          *offsets])
    return Grid(first, unit, (last - first) // unit)


def series_grid(boundaries: np.ndarray, duration: int, min_chunk: int, earliest: int,
                deadline: int) -> Grid:
    """Units of gcd(steps, duration, min_chunk) anchored at the series start, inside the window:
    coarser than minutes when the window is off that grid, and then not exact (the fallback when
    the minute grid is too big to search)."""
    steps = np.unique(np.diff(boundaries).astype(np.int64))
    unit = _gcd([*steps.tolist(), duration, min_chunk])
    origin = int(boundaries[0])
    first = origin + max(0, -(-(earliest - origin) // unit)) * unit
    last = origin + ((min(deadline, int(boundaries[-1])) - origin) // unit) * unit
    return Grid(first, unit, max(0, (last - first) // unit))


def _search(grid: Grid, duration: int, min_chunk: int, max_chunks: Optional[int]) -> tuple[int, int, bool, int]:
    """(units needed, units in the shortest chunk, whether a sort suffices, DP cells)."""
    need, run = duration // grid.unit, -(-min_chunk // grid.unit)
    if run <= 1 and (max_chunks is None or max_chunks >= need):
        return need, run, True, 0
    return need, run, False, dp_cells(grid.count, need, run, max_chunks)


def _fits(grid: Grid, duration: int, min_chunk: int, max_chunks: Optional[int]) -> bool:
    need, run, _, cells = _search(grid, duration, min_chunk, max_chunks)
    return cells <= MAX_DP_CELLS and (cells == 0 or dp_bytes(grid.count, need, run, max_chunks)
                                      <= MAX_DP_BYTES)


def search_bytes(grid: Grid, duration: int, min_chunk: int, max_chunks: Optional[int]) -> int:
    """Working memory of the chunk search on `grid` (the DP, or the sort), bytes at its peak."""
    need, run, _, cells = _search(grid, duration, min_chunk, max_chunks)
    # unit_costs' edges and integrals, the costs, prefix sums, argsort and mask: ~6 arrays a unit.
    per_unit = 56 * (grid.count + 1)
    return per_unit if cells == 0 else per_unit + dp_bytes(grid.count, need, run, max_chunks)


def chunk_grid(boundaries: np.ndarray, duration: int, min_chunk: int, earliest: int,
               deadline: int, max_chunks: Optional[int]) -> Optional[tuple[Grid, bool, int]]:
    """The grid the chunk search runs on, whether it is exact, and its DP cells (0: a sort).

    The minute grid (exact) when its tables fit within MAX_DP_CELLS; otherwise the series grid
    (the answer the search gave before it was exact off that grid; the contiguous search still
    backs it); TooLarge when neither fits. None when no whole-minute run fits the window.
    """
    exact = minute_grid(boundaries, duration, min_chunk, earliest, deadline)
    if exact is None:
        return None
    if _fits(exact, duration, min_chunk, max_chunks):
        return exact, True, _search(exact, duration, min_chunk, max_chunks)[3]
    coarse = series_grid(boundaries, duration, min_chunk, earliest, deadline)
    if _fits(coarse, duration, min_chunk, max_chunks):
        return coarse, False, _search(coarse, duration, min_chunk, max_chunks)[3]
    raise TooLarge(_TOO_LARGE)


_TOO_LARGE = ("too many units for an exact interruptible search; use a longer min_chunk, fewer "
              "max_chunks or a shorter window (a min_chunk near half the duration costs most "
              "memory: max_chunks 1 is the contiguous search)")


def unit_costs(boundaries: np.ndarray, values: np.ndarray, grid: Grid) -> np.ndarray:
    """Mean intensity over each unit of the grid (the exact integral, so a unit that spans a
    boundary off the grid still costs what it emits)."""
    edges = grid.first + grid.unit * np.arange(grid.count + 1, dtype=np.int64)
    at = np.interp(edges, boundaries, running_integral(boundaries, np.asarray(values, np.float64)))
    return np.diff(at) / grid.unit


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
    """Cells of the exact search's traceback tables (2 bytes a cell)."""
    k_size = min(max_runs, need // max(1, min_run)) + 1 if max_runs is not None else 1
    return (total + 1) * k_size * (need + 1)


def dp_bytes(total: int, need: int, min_run: int, max_runs: Optional[int]) -> int:
    """All of _dp's working memory, bytes at its peak: the two boolean traceback tables, the ring
    of min_run + 1 float rows, about ten row-sized float temporaries a step, and the prefix sums
    and mask over the units."""
    k_size = min(max_runs, need // max(1, min_run)) + 1 if max_runs is not None else 1
    row = k_size * (need + 1)
    return 2 * (total + 1) * row + 8 * (max(1, min_run) + 1) * row + 80 * row + 24 * (total + 1)


def _dp(costs: np.ndarray, need: int, m: int, max_runs: Optional[int],
        budget: Optional[Budget] = None) -> Optional[np.ndarray]:
    total = len(costs)
    limited = max_runs is not None
    k_size = min(max_runs, need // m) + 1 if limited else 1
    if k_size < 1 + limited or m > need:
        return None
    if dp_cells(total, need, m, max_runs) > MAX_DP_CELLS or \
            dp_bytes(total, need, m, max_runs) > MAX_DP_BYTES:
        raise TooLarge(_TOO_LARGE)
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
                budget: Optional[Budget] = None) -> Optional[Run]:
    """Chunks of whole minutes, total length `duration` (whole minutes), each at least `min_chunk`
    long (default: the shortest series step), all inside [earliest, deadline] and the series, with
    the least total emissions.

    Never worse than the contiguous search (one chunk at its best whole-minute start), which it
    also returns when no whole-minute run fits the window but the next minute does ("start now"
    at 10:17:30 runs from 10:18, as a plain workload would).
    Returns None when the rules leave no choice. Raises TooLarge when the search is too big.
    """
    if duration <= 0 or duration % MINUTE:
        raise ValueError("duration must be a positive whole number of minutes")
    if min_chunk is None:
        min_chunk = min(int(np.diff(boundaries).min()), duration)
    if min_chunk <= 0 or min_chunk > duration:
        raise ValueError("min_chunk must be positive and at most the duration")
    min_chunk = -(-min_chunk // MINUTE) * MINUTE  # chunks are whole minutes
    contiguous = best_window(boundaries, values, duration, earliest, deadline - duration)
    if max_chunks == 1 or 2 * min_chunk > duration:
        # One chunk is all the rules allow: the contiguous search is exact over whole-minute
        # starts and linear in the series.
        return contiguous
    found = chunk_grid(boundaries, duration, min_chunk, earliest, deadline, max_chunks)
    if found is None:
        return contiguous
    grid = found[0]
    costs = unit_costs(boundaries, values, grid)
    mask = cheapest_units(costs, duration // grid.unit, -(-min_chunk // grid.unit), max_chunks,
                          budget)
    if mask is None:
        return contiguous
    chunks = tuple((grid.first + a * grid.unit, grid.first + b * grid.unit) for a, b in _runs(mask))
    plan = Run(0, chunks, float(costs[mask].sum() * grid.unit / duration))
    if contiguous is not None and contiguous.mean_intensity < plan.mean_intensity - 1e-9 * max(
            1.0, abs(plan.mean_intensity)):
        return contiguous  # only when the search ran on the coarse grid
    return plan


def best_chunks_across(series: Sequence[tuple[np.ndarray, np.ndarray]], duration: int,
                       earliest: int, deadline: int, min_chunk: Optional[int] = None,
                       max_chunks: Optional[int] = None,
                       budget: Optional[Budget] = None) -> Optional[Run]:
    """best_chunks over several zones' series (boundaries, values): the least mean intensity wins,
    the first zone when two are within 1e-9; its zone_index is the winner's place in `series`."""
    found = None
    for index, (boundaries, values) in enumerate(series):
        plan = best_chunks(boundaries, values, duration, earliest, deadline, min_chunk, max_chunks,
                           budget)
        if plan is not None and (found is None
                                 or plan.mean_intensity < found.mean_intensity - 1e-9):
            found = replace(plan, zone_index=index)
    return found
