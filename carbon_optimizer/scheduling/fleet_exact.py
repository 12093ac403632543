"""Fleet capacity solved exactly: the batch as a mixed-integer programme for HiGHS (scipy.optimize.milp).

One binary per (job, zone, start) says "this job runs in this zone from this unit", one per job says
"left out". Each job takes exactly one of its binaries; at every unit the jobs running stay within
every limit. The cost is each run's grams, and a leaving-out penalty larger than every run's grams
together, so the optimum places as many jobs as possible, then emits the least.

Only for batches small enough to solve within a time limit and memory (fleet.schedule_fleet decides
from fleet.exact_size, counted before anything is built); bigger ones keep the heuristic plan. A
per-zone limit's rows exist only for the zones that have one, and the request's deadline is checked
between the steps that build the model.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from carbon_optimizer.scheduling.fleet_model import Capacity, FleetJob


def solve(prefix: np.ndarray, jobs: Sequence[FleetJob], candidates: Sequence[int],
          capacity: Capacity, time_limit: float, expired: Callable[[], bool] = lambda: False
          ) -> Optional[tuple[list[Optional[tuple[int, int]]], bool]]:
    """(zone, start) for each of `jobs` (None for those left out, and for non-candidates), and
    whether HiGHS proved that plan optimal; None when it found no solution in time, or the
    deadline (`expired`) passed while the model was built. `prefix`: running sum of intensity,
    zones x (units + 1)."""
    units = prefix.shape[1] - 1
    job_of, zone_of, start_of = [], [], []
    for i in candidates:
        job = jobs[i]
        starts = np.arange(job.earliest, job.latest + 1)
        for zone in job.zones:
            job_of.append(np.full(len(starts), i))
            zone_of.append(np.full(len(starts), zone))
            start_of.append(starts)
    if not job_of:
        return [None] * len(jobs), True
    job_of, zone_of, start_of = (np.concatenate(a) for a in (job_of, zone_of, start_of))
    length = np.array([j.length for j in jobs])[job_of]
    weight = np.array([j.weight for j in jobs])[job_of]
    power = np.array([j.power_kw or 0.0 for j in jobs])[job_of]
    grams = weight * (prefix[zone_of, start_of + length] - prefix[zone_of, start_of])
    runs, slots = len(job_of), len(candidates)
    penalty = float(grams.max(initial=0.0)) * slots + 1.0
    cost = np.concatenate((grams, np.full(slots, penalty)))

    rows, cols, values, lower, upper = [], [], [], [], []
    # Each candidate job: one run, or left out.
    slot = {job: k for k, job in enumerate(candidates)}
    job_rows = np.array([slot[i] for i in job_of])
    rows += [job_rows, np.arange(slots)]
    cols += [np.arange(runs), runs + np.arange(slots)]
    values += [np.ones(runs), np.ones(slots)]
    lower.append(np.ones(slots))
    upper.append(np.ones(slots))
    next_row = slots

    if expired():
        return None
    # Every unit each run covers, as (run, unit) pairs.
    covered_run = np.repeat(np.arange(runs), length)
    offsets = np.arange(len(covered_run)) - np.repeat(np.cumsum(length) - length, length)
    covered_unit = start_of[covered_run] + offsets

    def limit(row_index: np.ndarray, coefficient: np.ndarray, caps: np.ndarray) -> None:
        nonlocal next_row
        rows.append(next_row + row_index)
        cols.append(covered_run)
        values.append(coefficient)
        lower.append(np.full(len(caps), -np.inf))
        upper.append(caps)
        next_row += len(caps)

    if capacity.max_concurrent is not None:
        limit(covered_unit, np.ones(len(covered_run)), np.full(units, float(capacity.max_concurrent)))
    covered_zone = zone_of[covered_run]
    for caps in (capacity.zone_concurrent, capacity.zone_power_kw):
        if expired():
            return None
        if caps is None or all(c is None for c in caps):
            continue  # no zone has this limit: its rows would bind nothing
        # Rows for the zones limited only, and nonzeros for the runs in them.
        limited = np.array([c is not None for c in caps])
        row_of_zone = np.cumsum(limited) - 1
        inside = limited[covered_zone]
        coefficient = (np.ones(int(inside.sum())) if caps is capacity.zone_concurrent
                       else power[covered_run[inside]])
        bounds = np.repeat([float(c) for c in caps if c is not None], units)
        rows.append(next_row + row_of_zone[covered_zone[inside]] * units + covered_unit[inside])
        cols.append(covered_run[inside])
        values.append(coefficient)
        lower.append(np.full(len(bounds), -np.inf))
        upper.append(bounds)
        next_row += len(bounds)

    if expired():
        return None
    matrix = coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(next_row, runs + slots)).tocsr()
    del rows, cols, values, covered_run, covered_unit, covered_zone  # HiGHS copies the matrix
    if expired():
        return None
    answer = milp(cost, constraints=LinearConstraint(matrix, np.concatenate(lower), np.concatenate(upper)),
                  integrality=np.ones(runs + slots), bounds=Bounds(0, 1),
                  options={"time_limit": time_limit, "disp": False})
    if answer.x is None:
        return None
    chosen = np.flatnonzero(answer.x[:runs] > 0.5)
    placements: list[Optional[tuple[int, int]]] = [None] * len(jobs)
    for run in chosen:
        placements[int(job_of[run])] = (int(zone_of[run]), int(start_of[run]))
    return placements, answer.status == 0  # 0: optimal; 1: stopped at the time limit
