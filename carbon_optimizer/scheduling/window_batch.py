"""The contiguous window search for many workloads at once: pure, NumPy, no clock.

A batch's workloads share a few zones' series. `window.best_window` answers one (series,
duration, window) at a time, and its fixed cost per call (a few dozen NumPy calls) was most of
what a plain batch spent; here every (workload, zone) search of a batch is answered in one pass of
array operations: the zones' series laid end to end, every search's candidates after each other.
`best_across` then picks each workload's zone as `window.best_window_across` does.

It is the same search as `window.best_window` on its evenly spaced path (`window._on_grid`): the
same candidate starts (whole minutes on or next to a kink of each run's emissions, and the ends of
the allowed range), each candidate's emissions by the same arithmetic in the same order, and the
same rule for ties (the earliest start among those within the tolerance of the best; a start met
twice is read where the single search reads it first). So each workload gets, to the last bit,
the answer it gets alone; tests/test_batch_windows.py checks that against the single search and
a brute force over every whole minute.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from carbon_optimizer.scheduling.window import GRANULARITY_SECONDS, _TIE_TOLERANCE
from carbon_optimizer.timeseries import ForecastSeries

_G = GRANULARITY_SECONDS



def pass_candidates(series: ForecastSeries, duration: int, earliest: int, latest: int) -> int:
    """The candidate starts a batched pass holds for one (job, series): at most two a series step
    over the window and the run, and two at its ends. The planner cuts passes by it and the cost
    model counts memory by it, so the two cannot drift apart."""
    return 2 * min(len(series.values) + 1, (latest - earliest + duration) // series.step_seconds + 2) + 2

def on_grid(series: ForecastSeries) -> bool:
    """Whether `series` is on the whole-minute grid, where best_windows applies (with durations in
    whole minutes): what window.best_window's prefix-sum path needs of a series."""
    return series.step_seconds % _G == 0 and series.start_epoch % _G == 0


def _ragged(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segments of `lengths`: each element's segment and its index inside it."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    first = np.cumsum(lengths) - lengths
    return owner, np.arange(len(owner)) - first[owner]


def best_windows(series: Sequence[ForecastSeries], which: np.ndarray, durations: np.ndarray,
                 earliest: np.ndarray, latest: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each search i (over series[which[i]], with a duration, earliest and latest start in
    epoch seconds), the start and mean intensity window.best_window finds, and whether it finds
    one.

    Needs `on_grid` of every series and positive whole-minute durations. Returns (found, starts,
    means); starts and means are meaningless where found is False. Every series' values and
    prefix sums are laid end to end, so the whole batch is one pass whatever its zones.
    """
    which = np.asarray(which, dtype=np.int64)
    sizes = np.array([len(one.values) for one in series], dtype=np.int64)
    values = np.concatenate([one.values for one in series]).astype(np.float64, copy=False)
    integral = np.concatenate([one.integral() for one in series])
    value_base = (np.cumsum(sizes) - sizes)[which]     # where each search's series starts in `values`
    integral_base = value_base + which                  # ... and in `integral` (one more point each)
    t0 = np.array([one.start_epoch for one in series], dtype=np.int64)[which]
    step = np.array([one.step_seconds for one in series], dtype=np.int64)[which]
    n = sizes[which]
    last = np.array([one.integral()[-1] for one in series], dtype=np.float64)
    # window.best_window's tolerance for ties, per series.
    tolerance = (_TIE_TOLERANCE * np.maximum(np.abs(last), 1.0))[which]
    end = t0 + step * n
    d = np.asarray(durations, dtype=np.int64)
    earliest, latest = np.asarray(earliest, dtype=np.int64), np.asarray(latest, dtype=np.int64)
    # window.start_range, for every search at once.
    lo = -(-np.maximum(earliest, t0) // _G) * _G
    hi = np.minimum(latest, end - d) // _G * _G
    late = (lo > hi) & (lo - latest < _G) & (lo + d <= end)
    hi = np.where(late, lo, hi)
    found = lo <= hi
    q, r = np.divmod(d, step)
    # The candidates, by kind, in the order the single search reads them: the ends of the range
    # off a boundary (E), starts on a boundary k (A), starts whose end is on a boundary j (B).
    lo_edge = found & ((lo - t0) % step != 0)
    hi_edge = found & ((hi - t0) % step != 0) & (hi != lo)
    a_first, a_last = -((t0 - lo) // step), (hi - t0) // step
    b_first, b_last = -((t0 - lo - d) // step), (hi - t0 + d) // step
    n_a = np.where(found, np.maximum(a_last - a_first + 1, 0), 0)
    n_b = np.where(found & (r > 0), np.maximum(b_last - b_first + 1, 0), 0)
    n_e = lo_edge.astype(np.int64) + hi_edge
    lengths = n_e + n_a + n_b
    offset = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    starts = np.empty(total, dtype=np.int64)
    emissions = np.empty(total, dtype=np.float64)

    def at(x: np.ndarray, where: np.ndarray) -> np.ndarray:  # the running integral at x
        i = np.minimum((x - t0[where]) // step[where], n[where] - 1)
        return (integral[integral_base[where] + i]
                + values[value_base[where] + i] * (x - t0[where] - i * step[where]))

    for mask, edge, before in ((lo_edge, lo, None), (hi_edge, hi, lo_edge)):
        where = np.flatnonzero(mask)
        x = edge[where]
        position = offset[where] if before is None else offset[where] + before[where]
        starts[position] = x
        emissions[position] = at(x + d[where], where) - at(x, where)
    owner, k = _ragged(n_a)
    position = offset[owner] + n_e[owner] + k
    k = k + a_first[owner]
    kq = k + q[owner]
    starts[position] = t0[owner] + k * step[owner]
    # When the run's end is on a boundary too (r = 0) the value read is multiplied by 0: kept
    # inside the series (kq = n is the series end).
    emissions[position] = ((integral[integral_base[owner] + kq]
                            + values[value_base[owner] + np.minimum(kq, n[owner] - 1)] * r[owner])
                           - integral[integral_base[owner] + k])
    owner, j = _ragged(n_b)
    position = offset[owner] + n_e[owner] + n_a[owner] + j
    j = j + b_first[owner]
    i = j - q[owner] - 1  # the start's own step, step - r in
    starts[position] = t0[owner] + j * step[owner] - d[owner]
    emissions[position] = (integral[integral_base[owner] + j] - integral[integral_base[owner] + i]
                           - values[value_base[owner] + i] * (step[owner] - r[owner]))

    means = np.zeros(len(d), dtype=np.float64)
    chosen_starts = np.zeros(len(d), dtype=np.int64)
    live = np.flatnonzero(found)
    if not len(live):
        return found, chosen_starts, means
    segments, spans = offset[live], lengths[live]
    best = np.minimum.reduceat(emissions, segments)
    tied = emissions <= np.repeat(best + tolerance[live], spans)
    earliest_tied = np.minimum.reduceat(np.where(tied, starts, np.iinfo(np.int64).max), segments)
    first = tied & (starts == np.repeat(earliest_tied, spans))
    pick = np.minimum.reduceat(np.where(first, np.arange(total), total), segments)
    chosen_starts[live] = starts[pick]
    means[live] = emissions[pick] / d[live]
    return found, chosen_starts, means


def best_across(found: np.ndarray, starts: np.ndarray, means: np.ndarray,
                first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """window.best_window_across's choice for many workloads at once: each workload's searches
    (found, starts, means, as best_windows returns them) are consecutive, from `first`, in the
    order of its zones. The best mean wins; ties (within the same tolerance) go to the earliest
    start, then the first zone. Returns, per workload, whether any zone has a window and the
    search chosen (meaningless where none has)."""
    best = np.minimum.reduceat(np.where(found, means, np.inf), first)
    limit = best + _TIE_TOLERANCE * 1e3 * np.maximum(np.abs(best), 1.0)
    counts = np.diff(np.append(first, len(found)))
    tied = found & (means <= np.repeat(limit, counts))
    earliest = np.minimum.reduceat(np.where(tied, starts, np.iinfo(np.int64).max), first)
    rows = np.arange(len(found))
    pick = np.minimum.reduceat(np.where(tied & (starts == np.repeat(earliest, counts)), rows,
                                        len(found)), first)
    return np.logical_or.reduceat(found, first), pick
