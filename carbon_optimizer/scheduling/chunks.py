"""Interruptible workloads: split a run into chunks placed in the cleanest parts of the allowed window.

Pure functions, no I/O, no clock. Times are integer epoch seconds; a series is `boundaries`
(n + 1 increasing times) and `values` (n intensities), as in window.py.

Chunks are whole minutes: they start and end on the minute grid from the window's first whole
minute (not from the series start, so a window at 10:17:30 loses nothing), and their cost is the sum
of the intensity over their minutes. Minutes are grouped into units when every quantity is a whole
number of a coarser unit (minute_grid), which keeps on-grid windows as cheap as ever. On that grid
the answer is exact, always (there is no coarser fallback: a search over the bound is refused):
- `min_chunk` of one unit and no chunk limit: the cheapest `duration / unit` units (a sort);
- otherwise a dynamic programme over (units seen, units used, chunks used) with two states, "the last
  unit is idle" and "the last unit runs in a chunk already at least `min_chunk` long". A chunk is
  opened `min_chunk` at a time, so no state ever holds a chunk shorter than the minimum.

Why a DP over every unit rather than over the series' breakpoints: an optimum's chunk edges do lie
on breakpoints or window edges, but also at k x min_chunk from them (chunks held at their minimum),
and one chain of edges is fixed by the total duration alone, anywhere. With a 15-minute series and
an odd min_chunk that is about 192 breakpoints in 2 days x 13 offsets for 6 chunks, ~2,500
candidates against 2,880 minutes, plus the free chain, and the "units used" dimension stays in
minutes either way: no smaller, and harder to get right.
What bound the minute DP was memory (two boolean traceback tables, 2 bytes a state, and a ring of
min_chunk float rows). Now the tables hold a bit a state (np.packbits per row), each row keeps only
its band of "units used" (between need - units left and units seen: min(duration, slack) + 1
values, so a window barely longer than the run is cheap), the ring only what a chunk can start
from, and the loop writes into preallocated rows. Memory is about a quarter byte a state plus
8 x min_chunk x min(duration - min_chunk, slack) x counts bytes. Measured (bench/chunks_bench.py):
a 1,400-minute run in a 2-day window in up to 6 chunks on 1-minute units, 28 M states: 0.1-0.15 s,
8.4 MiB (20 MiB at the worst min_chunk, 233 minutes).
The documented exact bound follows from MAX_DP_BYTES: every duration up to 1,440 minutes in a window
up to 3 days with max_chunks up to 10 and any min_chunk, on 1-minute units, fits, and so do longer
runs with less slack (a 3-day run in a 4-day window in up to 6 chunks of an hour or more: 20 MiB);
tests/test_chunks_exact.py checks both. The request's work cap (cost.py) bounds the CPU of several
zones.
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

# Beyond this many DP states (units x chunk counts x band of used units; a quarter byte each in
# the tables, and about 3 ns of CPU: 0.4 s) a search is refused, whatever budget it is given (tools
# with an unlimited one included); a request's own work cap (cost.py) may refuse less.
MAX_DP_CELLS = 120_000_000
# ... and beyond this much working memory in all (dp_bytes: the tables, the ring of the last
# min_chunk rows, a step's rows): within the request's memory cap (budget.DEFAULT_MEMORY), with room
# for the rest of the request.
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


def _search(grid: Grid, duration: int, min_chunk: int, max_chunks: Optional[int]) -> tuple[int, int, bool, int]:
    """(units needed, units in the shortest chunk, whether a sort suffices, DP cells)."""
    need, run = duration // grid.unit, -(-min_chunk // grid.unit)
    if run <= 1 and (max_chunks is None or max_chunks >= need):
        return need, run, True, 0
    return need, run, False, dp_cells(grid.count, need, run, max_chunks)


def search_bytes(grid: Grid, duration: int, min_chunk: int, max_chunks: Optional[int]) -> int:
    """Working memory of the chunk search on `grid` (the DP, or the sort), bytes at its peak."""
    need, run, _, cells = _search(grid, duration, min_chunk, max_chunks)
    # unit_costs' edges and integrals, the costs, prefix sums, argsort and mask: ~6 arrays a unit.
    per_unit = 56 * (grid.count + 1)
    return per_unit if cells == 0 else per_unit + dp_bytes(grid.count, need, run, max_chunks)


def chunk_grid(boundaries: np.ndarray, duration: int, min_chunk: int, earliest: int,
               deadline: int, max_chunks: Optional[int]) -> Optional[tuple[Grid, int]]:
    """The grid the chunk search runs on (always exact: minute_grid) and its DP cells (0: a sort).

    None when no whole-minute run fits the window. Raises TooLarge, naming the numbers and the
    knobs, when the exact search is over MAX_DP_CELLS or MAX_DP_BYTES (there is no coarser
    fallback: an answer on a coarser grid would not be exact).
    """
    grid = minute_grid(boundaries, duration, min_chunk, earliest, deadline)
    if grid is None:
        return None
    need, run, _, cells = _search(grid, duration, min_chunk, max_chunks)
    if cells and (cells > MAX_DP_CELLS or dp_bytes(grid.count, need, run, max_chunks) > MAX_DP_BYTES):
        raise TooLarge(too_large_message(grid.count, need, run, max_chunks, grid.unit))
    return grid, cells


def too_large_message(units: int, need: int, run: int, max_chunks: Optional[int],
                      unit: int) -> str:
    """Why an exact interruptible search is refused: its size, the cap, and what to change."""
    minutes = unit // MINUTE
    cells = dp_cells(units, need, run, max_chunks)
    memory = dp_bytes(units, need, run, max_chunks)
    chunks = "any number of chunks" if max_chunks is None else f"max_chunks {max_chunks}"
    over = [f"{cells:,} states (more than {MAX_DP_CELLS:,})"] if cells > MAX_DP_CELLS else []
    if memory > MAX_DP_BYTES:
        over.append(f"{memory / 2 ** 20:,.1f} MiB (more than {MAX_DP_BYTES / 2 ** 20:g} MiB)")
    return (f"an exact interruptible search of duration {need * minutes:,} min x window "
            f"{units * minutes:,} min x {chunks} (min_chunk {run * minutes:,} min, on "
            f"{minutes}-minute steps) needs {' and '.join(over)}: use a longer min_chunk, fewer "
            "max_chunks or a shorter window (or a window and min_chunk in whole hours, searched in "
            "hours); max_chunks 1 is the contiguous search")


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


def dp_shape(total: int, need: int, min_run: int, max_runs: Optional[int]) -> tuple[int, int, int]:
    """(chunk counts kept, band width, ring columns) of the exact search. Counts 0..max_runs (at
    most need // min_run chunks fit), or one level when the count is free. The band: after r of
    `total` units, a state that can still end with `need` used has used between need - (total - r)
    and r of them, so each row keeps min(need, total - need) + 1 values of "units used", not
    need + 1 (a window barely longer than the run is cheap). The ring keeps, of a row's band, what
    a chunk can still start from (at most need - min_run used)."""
    m = max(1, min_run)
    k_size = min(max_runs, need // m) + 1 if max_runs is not None else 1
    width = max(1, min(need, total - need) + 1)
    return k_size, width, max(0, min(need + 1 - m, width))


def dp_cells(total: int, need: int, min_run: int, max_runs: Optional[int]) -> int:
    """States of the exact search: (units + 1) x chunk counts x band width; its work."""
    k_size, width, _ = dp_shape(total, need, min_run, max_runs)
    return (total + 1) * k_size * width


def dp_bytes(total: int, need: int, min_run: int, max_runs: Optional[int]) -> int:
    """All of _dp's working memory, bytes at its peak: the two traceback tables (a bit a state),
    the ring of the last min_run rows a new chunk starts from (only the counts and units used a
    chunk can still be added to), eight row-sized float buffers (four used, none made in the loop),
    the two boolean rows, and the prefix sums and mask over the units."""
    k_size, width, ring_columns = dp_shape(total, need, min_run, max_runs)
    sources = k_size - (max_runs is not None)
    row = k_size * (need + 1)
    packed = k_size * ((width + 7) // 8)
    return (2 * (total + 1) * packed + 8 * max(1, min_run) * sources * ring_columns
            + 8 * 8 * row + 2 * k_size * (need + 1 + width) + 24 * (total + 1))


def _bit(table: np.ndarray, t: int, k: int, j: int) -> bool:
    return bool((table[t, k, j >> 3] >> (7 - (j & 7))) & 1)


def _dp(costs: np.ndarray, need: int, m: int, max_runs: Optional[int],
        budget: Optional[Budget] = None) -> Optional[np.ndarray]:
    total = len(costs)
    limited = max_runs is not None
    k_size, width, columns = dp_shape(total, need, m, max_runs)
    if k_size < 1 + limited or m > need or need > total:
        return None
    cells = dp_cells(total, need, m, max_runs)
    if cells > MAX_DP_CELLS or dp_bytes(total, need, m, max_runs) > MAX_DP_BYTES:
        raise TooLarge(too_large_message(total, need, m, max_runs, MINUTE))
    inf = np.inf
    prefix = np.concatenate(([0.0], np.cumsum(costs)))
    sources = k_size - limited  # the last count cannot open another chunk
    # off[k, j]: least cost with units 0..t decided, the last idle (or none yet), k chunks, j used;
    # on: the same with the last unit in a chunk already at least m long. Full rows, but each step
    # reads and writes only its band [lo, hi] of j: values outside it are never read (a column
    # enters the band from above still inf, as it was never written, and leaves it from below).
    off = np.full((k_size, need + 1), inf)
    off[0, 0] = 0.0
    on = np.full_like(off, inf)
    extend = np.full_like(off, inf)  # column 0 stays inf: no chunk has used no unit
    new = np.full_like(off, inf)     # count 0 (limited) and columns < m stay inf
    from_on = np.zeros((k_size, need + 1 + width), dtype=bool)  # padded: a band's bits from lo
    is_new = np.zeros_like(from_on)
    # A new chunk ending at unit t starts from the idle row t + 1 - m: the last m rows' bands are
    # kept, only the part a chunk can start from (m of them: the slot read is the one written next).
    ring = np.empty((m, sources, columns))
    ring[0, :, :1] = off[:sources, :1]
    # Traceback: for each row, a bit a state of its band (np.packbits): 8x less than bools.
    bytes_wide = (width + 7) // 8
    off_from_on = np.zeros((total + 1, k_size, bytes_wide), dtype=np.uint8)
    on_is_new = np.zeros((total + 1, k_size, bytes_wide), dtype=np.uint8)
    first = 1 if limited else 0
    slack = total - need
    add, less, minimum, packbits = np.add, np.less, np.minimum, np.packbits  # the loop's calls
    ring_top = need - m  # the most units used a new chunk can start from
    for t in range(total):  # unit t decided; row t + 1 describes units 0..t
        if budget is not None and t % 256 == 0:
            budget.check()
        r = t + 1
        lo = r - slack if r > slack else 0
        hi = r if r < need else need
        a = lo if lo else 1
        add(on[:, a - 1:hi], costs[t], out=extend[:, a:hi + 1])
        slot = r % m
        if r >= m:
            s = r - m
            lo_s = s - slack if s > slack else 0
            w = (s if s < ring_top else ring_top) - lo_s + 1
            if w > 0:
                add(ring[slot, :, :w], prefix[r] - prefix[s], out=new[first:, lo_s + m:lo_s + m + w])
        b = hi + 1
        off_band, on_band = off[:, lo:b], on[:, lo:b]
        less(on_band, off_band, out=from_on[:, :b - lo])
        minimum(off_band, on_band, out=off_band)  # row r: unit t idle, after a chunk or idle
        w = (hi if hi < ring_top else ring_top) - lo + 1
        if w > 0:
            ring[slot, :, :w] = off[:sources, lo:lo + w]
        new_band, extend_band = new[:, lo:b], extend[:, lo:b]
        less(new_band, extend_band, out=is_new[:, :b - lo])
        minimum(new_band, extend_band, out=on_band)
        off_from_on[r] = packbits(from_on[:, :width], axis=-1)
        on_is_new[r] = packbits(is_new[:, :width], axis=-1)
    final_off, final_on = off[:, need], on[:, need]
    best_k_off, best_k_on = int(np.argmin(final_off)), int(np.argmin(final_on))
    if min(final_off[best_k_off], final_on[best_k_on]) == inf:
        return None
    running = final_on[best_k_on] < final_off[best_k_off]
    k, j, t = (best_k_on if running else best_k_off), need, total
    mask = np.zeros(total, dtype=bool)
    while t > 0:
        at = j - max(0, t - slack)  # the state's place in its row's band
        if not running:  # unit t - 1 idle; before it, a chunk or idle
            running = _bit(off_from_on, t, k, at)
            t -= 1
            continue
        if _bit(on_is_new, t, k, at):
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
        return contiguous  # the DP is exact; this guards against a rounding tie only
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
