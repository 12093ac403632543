"""Fleet capacity solved exactly: the batch as a mixed-integer programme for HiGHS (scipy.optimize.milp).

One binary per (job, zone, candidate start) says "this job has started here by this start" (the
running sum of the usual start binaries), one per job says "left out". Each job starts once or is
left out; at every unit the jobs running stay within every limit. The objective is lexicographic,
solved in two phases so that no huge penalty strains HiGHS' tolerances: phase 1 places the most
jobs, then the most energy (weight x length; a job without power counts 1 kW); phase 2 keeps that
count and energy and emits the least. Both run with mip_rel_gap 0: "optimal" then means proven,
not within HiGHS' default 0.01 %. HiGHS' presolve is off: measured, it overran its time limit by
up to 2 s on some of these models (and proved fewer of them optimal within the budget).

The model is small because most starts cannot be needed (anchored_starts: the proof is in its
docstring). Limits are checked only at units where some candidate run starts (occupancy only rises
there), and in the cumulative form a row reads two binaries per (job, zone), not one per start.

Only for batches small enough (fleet.schedule_fleet decides from size(), counted before anything is
built); bigger ones keep the heuristic plan. The request's deadline is checked between the steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from carbon_optimizer.scheduling.fleet_model import Capacity, FleetJob

# HiGHS' own absolute gap is 1e-6 of the objective's units (weight x intensity x units), far below
# a gram; the relative gap is 0 so that "optimal" is the optimum, not within 1e-4 of it.
_OPTIONS = {"mip_rel_gap": 0.0, "disp": False, "presolve": False}


@dataclass(frozen=True)
class Runs:
    """The candidate runs: job index, zone, start unit of each (parallel arrays)."""
    job: np.ndarray
    zone: np.ndarray
    start: np.ndarray


@dataclass(frozen=True)
class Size:
    columns: int     # (job, zone, start) binaries
    nonzeros: int    # of the constraint matrix


@dataclass(frozen=True)
class Exact:
    """The solver's plan: (zone, start) per job (None when left out or not a candidate); whether
    both phases proved optimality; a lower bound on the plan's emissions among plans placing as
    many jobs and as much energy (HiGHS' dual bound; None when phase 2 found nothing)."""
    placements: list[Optional[tuple[int, int]]]
    proven: bool
    bound: Optional[float]


def anchored_starts(intensity: np.ndarray, jobs: Sequence[FleetJob], candidates: Sequence[int],
                    capacity: Capacity, expired: Callable[[], bool] = lambda: False) -> Runs:
    """The starts some optimal plan uses, per (job, zone).

    Why it is exact. Intensity is constant per zone between change points B_z. A run's grams are
    linear in its start while neither its start nor its end crosses one. Whether a plan keeps
    every limit depends only on which runs overlap (a set of intervals sharing pairwise overlaps
    shares a point), i.e. on the order between one run's start and another's end. Call a run
    anchored when its start or end is in B_z, or it starts at its earliest or latest, or it starts
    where an anchored run ends, or ends where one starts. Take an optimal plan and shift all its
    unanchored runs together by d: no start meets an end it did not meet (else the run would be
    anchored), so the plan stays feasible for small d either way and its grams are linear in d;
    shift the way that does not cost more until a new anchor is met. Each shift anchors one more
    run, so some optimum has every run anchored. A chain of anchors visits distinct jobs, so n - 1
    rounds of "ends and starts of the others" close the set for n jobs. Only runs that share a
    limit can touch to any effect: all of them under a global limit, else those in the same limited
    zone; a run in a zone no limit reaches is anchored by its own intensity and window alone. (The
    chained part is shared by a job's zones that share a limit: a superset, still exact.)"""
    zones, units = intensity.shape
    changed = np.zeros((zones, units + 1), dtype=bool)  # unit t where intensity differs from t - 1
    changed[:, 1:units] = intensity[:, 1:] != intensity[:, :-1]
    group = _link_groups(capacity, zones)
    base: dict[int, dict[int, np.ndarray]] = {}
    chained: dict[int, dict[int, np.ndarray]] = {}  # job -> link group -> its chained starts
    for i in candidates:
        job = jobs[i]
        span = np.arange(job.earliest, job.latest + 1)
        base[i] = {}
        for zone in job.zones:
            mask = changed[zone, span] | changed[zone, span + job.length]
            mask[[0, -1]] = True
            base[i][zone] = mask
        chained[i] = {group[z]: np.zeros(len(span), dtype=bool) for z in job.zones
                      if group[z] is not None}
    for _ in range(max(0, len(candidates) - 1)):
        if expired():
            break  # the caller checks the clock too: an unfinished set is never solved
        starts: dict[int, np.ndarray] = {}
        ends: dict[int, np.ndarray] = {}
        for k, i in enumerate(candidates):
            job = jobs[i]
            for g, mine in chained[i].items():
                every = mine | np.logical_or.reduce([m for z, m in base[i].items() if group[z] == g])
                at = job.earliest + np.flatnonzero(every)
                starts.setdefault(g, np.zeros((len(candidates), units + 1), dtype=bool))[k, at] = True
                ends.setdefault(g, np.zeros_like(starts[g]))[k, at + job.length] = True
        grew = False
        for k, i in enumerate(candidates):
            job = jobs[i]
            span = np.arange(job.earliest, job.latest + 1)
            tail = np.minimum(span + job.length, units)
            for g, mine in chained[i].items():
                others_start = np.delete(starts[g], k, axis=0).any(axis=0)
                others_end = np.delete(ends[g], k, axis=0).any(axis=0)
                more = others_end[span] | others_start[tail]
                if (more & ~mine).any():
                    mine |= more
                    grew = True
        if not grew:
            break
    job_of, zone_of, start_of = [], [], []
    for i in candidates:
        for zone, mask in base[i].items():
            if group[zone] is not None:
                mask = mask | chained[i][group[zone]]
            at = jobs[i].earliest + np.flatnonzero(mask)
            job_of.append(np.full(len(at), i))
            zone_of.append(np.full(len(at), zone))
            start_of.append(at)
    if not job_of:
        empty = np.zeros(0, dtype=np.int64)
        return Runs(empty, empty, empty)
    return Runs(*(np.concatenate(a).astype(np.int64) for a in (job_of, zone_of, start_of)))


def _link_groups(capacity: Capacity, zones: int) -> list[Optional[int]]:
    """Per zone, which runs its runs share a limit with: one group for all zones under a global
    limit; else each limited zone its own; None for a zone no limit reaches."""
    if capacity.max_concurrent is not None:
        return [0] * zones
    limited = [False] * zones
    for caps in (capacity.zone_concurrent, capacity.zone_power_kw):
        for z, c in enumerate(caps or []):
            limited[z] = limited[z] or c is not None
    return [z if limited[z] else None for z in range(zones)]


def _families(runs: Runs, jobs: Sequence[FleetJob], capacity: Capacity):
    """Each limit's groups: [(coefficient per job, the zones it reaches or None for all, cap)]."""
    power = np.array([j.power_kw or 0.0 for j in jobs])
    ones = np.ones(len(jobs))
    if capacity.max_concurrent is not None:
        yield [(ones, None, float(capacity.max_concurrent))]
    for caps, coefficient in ((capacity.zone_concurrent, ones), (capacity.zone_power_kw, power)):
        if caps is None or all(c is None for c in caps):
            continue  # no zone has this limit: its rows would bind nothing
        yield [(coefficient, z, float(c)) for z, c in enumerate(caps) if c is not None]


def _pairs(runs: Runs) -> list[tuple[int, int, int, int]]:
    """(job, zone, first, end) of each (job, zone)'s block of runs (starts ascending in it)."""
    if not len(runs.job):
        return []
    cut = np.flatnonzero((np.diff(runs.job) != 0) | (np.diff(runs.zone) != 0)) + 1
    firsts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [len(runs.job)]))
    return [(int(runs.job[a]), int(runs.zone[a]), int(a), int(b)) for a, b in zip(firsts, ends)]


def _limit_entries(runs: Runs, jobs: Sequence[FleetJob], pairs, zone: Optional[int]):
    """The rows of one limit group, in the cumulative form: a row at each unit t where a run of
    the group starts (occupancy only rises there), and per (job, zone) of the group the running
    count y of its starts up to t minus that up to t - length (who started and has not ended).
    Yields (pair's job, row indices, y column of +1, y column of -1 or -1 for none)."""
    mine = [p for p in pairs if zone is None or p[1] == zone]
    if not mine:
        return np.zeros(0, dtype=np.int64), []
    at = np.unique(np.concatenate([runs.start[a:b] for _, _, a, b in mine]))
    entries = []
    for job, _, a, b in mine:
        starts = runs.start[a:b]
        upto = np.searchsorted(starts, at, side="right")           # starts <= t
        gone = np.searchsorted(starts, at - jobs[job].length, side="right")  # ended by t
        live = np.flatnonzero(upto != gone)
        entries.append((job, live, a + upto[live] - 1, np.where(gone[live] > 0, a + gone[live] - 1, -1)))
    return at, entries


def size(runs: Runs, jobs: Sequence[FleetJob], candidates: Sequence[int], capacity: Capacity) -> Size:
    """The model's size, counted before it is built (phase 2's, the larger)."""
    pairs = _pairs(runs)
    # Job rows (each pair's last y, each left-out slot), y's order (2 a step), phase 2's two rows.
    nonzeros = len(pairs) + len(candidates) + 2 * (len(runs.job) - len(pairs)) + 2 * len(candidates)
    for groups in _families(runs, jobs, capacity):
        for _, zone, _ in groups:
            _, entries = _limit_entries(runs, jobs, pairs, zone)
            nonzeros += sum(len(live) + int((minus >= 0).sum()) for _, live, _, minus in entries)
    return Size(columns=len(runs.job) + len(candidates), nonzeros=nonzeros)


def solve(prefix: np.ndarray, jobs: Sequence[FleetJob], candidates: Sequence[int], runs: Runs,
          capacity: Capacity, time_limit: float, all_fit: bool = False,
          expired: Callable[[], bool] = lambda: False, clock: Optional[Callable[[], float]] = None
          ) -> Optional[Exact]:
    """The lexicographic optimum over `runs` (anchored_starts), or None when the deadline
    (`expired`) passed while the model was built or no plan was found in time. `all_fit`: a plan
    placing every candidate is known (phase 1 is then skipped: placing all is the most).
    `prefix`: running sum of intensity, zones x (units + 1).

    Variables: y per run, binary, "this job has started in this zone by this run's start" (the
    running sum of the usual start binaries x: x_k = y_k - y_(k-1)), then one "left out" per job.
    A limit row then reads two y per (job, zone) instead of one x per start it covers."""
    # Imported here, not with the module: SciPy takes ~0.4 s to import, and anchored_starts and
    # size (which decide whether to solve at all) do not need it (fleet.SCIPY_IMPORT_SECONDS).
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix, vstack
    clock = clock or time.monotonic
    stop = clock() + time_limit
    n, count = len(runs.job), len(candidates)
    if count == 0:
        return Exact([None] * len(jobs), True, 0.0)
    pairs = _pairs(runs)
    length = np.array([j.length for j in jobs])[runs.job]
    weight = np.array([j.weight for j in jobs])[runs.job]
    grams = weight * (prefix[runs.zone, runs.start + length] - prefix[runs.zone, runs.start])
    # sum_k grams_k x_k = sum_k y_k (grams_k - grams_(k+1)), grams past a pair's last run 0.
    cost_y = grams.copy()
    for _, _, a, b in pairs:
        cost_y[a:b - 1] -= grams[a + 1:b]
    slot = {job: k for k, job in enumerate(candidates)}
    energy = np.array([jobs[i].weight * jobs[i].length for i in candidates])
    share = energy / energy.max()  # in (0, 1]: phase 1's energy term stays below one job's worth

    rows, cols, values, lower, upper = [], [], [], [], []
    # Each candidate job: started in one of its zones by its last start, or left out.
    last = np.array([b - 1 for _, _, _, b in pairs])
    rows += [np.array([slot[job] for job, _, _, _ in pairs], dtype=np.int64), np.arange(count)]
    cols += [last, n + np.arange(count)]
    values += [np.ones(len(pairs)), np.ones(count)]
    lower.append(np.ones(count))
    upper.append(np.ones(count))
    next_row = count
    # y never falls: y_(k-1) - y_k <= 0 within a pair.
    steps = np.concatenate([np.arange(a + 1, b) for _, _, a, b in pairs])
    rows += [next_row + np.arange(len(steps))] * 2
    cols += [steps - 1, steps]
    values += [np.ones(len(steps)), -np.ones(len(steps))]
    lower.append(np.full(len(steps), -np.inf))
    upper.append(np.zeros(len(steps)))
    next_row += len(steps)
    for groups in _families(runs, jobs, capacity):
        for coefficient, zone, cap in groups:
            if expired():
                return None
            at, entries = _limit_entries(runs, jobs, pairs, zone)
            for job, live, plus, minus in entries:
                rows.append(next_row + live)
                cols.append(plus)
                values.append(np.full(len(live), coefficient[job]))
                has = minus >= 0
                rows.append(next_row + live[has])
                cols.append(minus[has])
                values.append(np.full(int(has.sum()), -coefficient[job]))
            lower.append(np.full(len(at), -np.inf))
            upper.append(np.full(len(at), cap))
            next_row += len(at)
    if expired():
        return None
    matrix = coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(next_row, n + count)).tocsr()
    del rows, cols, values
    lower, upper = np.concatenate(lower), np.concatenate(upper)
    integrality, bounds = np.ones(n + count), Bounds(0, 1)
    left_count = np.concatenate((np.zeros(n), np.ones(count)))
    left_energy = np.concatenate((np.zeros(n), share))

    proven = True
    if all_fit:
        most_left, energy_left = 0.0, 0.0
    else:
        # Phase 1: fewest left out (count + 1 per job outweighs every energy share together),
        # then the least energy left out.
        first = milp((count + 1) * left_count + left_energy,
                     constraints=LinearConstraint(matrix, lower, upper),
                     integrality=integrality, bounds=bounds,
                     options={**_OPTIONS, "time_limit": max(0.01, stop - clock())})
        if first.x is None:
            return None
        proven = first.status == 0
        chosen = first.x > 0.5
        most_left = float(left_count[chosen].sum())
        energy_left = float(left_energy[chosen].sum())
        if expired() or stop - clock() < 0.01:
            return Exact(_placements(jobs, runs, pairs, first.x), False, None)
    # Phase 2: as many placed, as much energy (up to rounding), the least grams.
    matrix = vstack((matrix, coo_matrix(np.vstack((left_count, left_energy))))).tocsr()
    tolerance = 1e-9 * max(1.0, energy_left)
    second = milp(np.concatenate((cost_y, np.zeros(count))),
                  constraints=LinearConstraint(
                      matrix, np.concatenate((lower, [-np.inf, -np.inf])),
                      np.concatenate((upper, [most_left + 0.5, energy_left + tolerance]))),
                  integrality=integrality, bounds=bounds,
                  options={**_OPTIONS, "time_limit": max(0.01, stop - clock())})
    if second.x is None:
        return None if all_fit else Exact(_placements(jobs, runs, pairs, first.x), False, None)
    bound = getattr(second, "mip_dual_bound", None)
    bound = float(bound) if bound is not None and math.isfinite(bound) else None
    return Exact(_placements(jobs, runs, pairs, second.x), proven and second.status == 0, bound)


def _placements(jobs, runs: Runs, pairs, y: np.ndarray) -> list[Optional[tuple[int, int]]]:
    """The start each job took: where its y steps from 0 to 1."""
    placements: list[Optional[tuple[int, int]]] = [None] * len(jobs)
    for job, zone, a, b in pairs:
        started = y[a:b] > 0.5
        if started.any():
            placements[job] = (zone, int(runs.start[a + int(np.argmax(started))]))
    return placements
