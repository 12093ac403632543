"""A batch under capacity on the fleet solver's grid and back: the zones every job may use, the
period their forecasts share, the coarsest grid of whole minutes that loses nothing, each job's
starts and length in units of it (lay_out); then the solver's placements as Runs in epoch seconds
(place). Pure: no I/O, no clock."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import reduce
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from carbon_optimizer.errors import FailureCode
from carbon_optimizer.scheduling import window as windows
from carbon_optimizer.scheduling.budget import Budget
from carbon_optimizer.scheduling.fleet import schedule_fleet
from carbon_optimizer.scheduling.fleet_model import Capacity, FleetJob
from carbon_optimizer.scheduling.model import (
    CapacityLimits, CapacityPlan, Job, Run, ZoneSeries, Zones,
)
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, rfc3339


@dataclass(frozen=True)
class NotPlaced:
    """Why a job of the batch with data has no run in the fleet's plan."""
    code: FailureCode
    message: str


@dataclass(frozen=True)
class FleetGrid:
    """A batch under capacity on the fleet's grid: `units` steps of `unit` seconds from `origin`
    over the forecasts of the zones `names` (`series`, in that order). `live`: the batch's jobs
    placed on it (indices into the batch), with their `durations` (seconds) and `fleet_jobs` (in
    steps, zones as indices into `names`). `not_covered`: the jobs with data that no start fits,
    whatever the others do (by index in the batch), and why."""
    not_covered: Mapping[int, NotPlaced] = field(default_factory=dict)
    live: tuple[int, ...] = ()
    durations: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    series: tuple[ForecastSeries, ...] = ()
    origin: int = 0
    unit: int = 0
    units: int = 0
    fleet_jobs: tuple[FleetJob, ...] = ()
    capacity: Capacity = Capacity()


@dataclass(frozen=True)
class FleetRuns:
    """The fleet's plan in epoch seconds for every job of the batch with data, by its index in the
    batch: its Run (zone_index an index into the grid's `names`) or why it has none; and whether
    the plan is proven optimal."""
    runs: Mapping[int, Union[Run, NotPlaced]]
    capacity_plan: CapacityPlan


_NOT_PLACED = {
    FailureCode.WINDOW_NOT_COVERED: "no start inside the allowed window is covered by the "
                                    "forecasts of every zone in the batch",
    FailureCode.CAPACITY_EXCEEDED: "the batch's capacity (concurrency or power) leaves no room "
                                   "for this workload inside its allowed window beside the others: "
                                   "when not all fit, the plan places the most workloads, then the "
                                   "most energy (power_kw x duration, 1 kW without power_kw), then "
                                   "emits the least, and this one was left out by that rule"}
# ... when the plan is not proven optimal, the heuristic chose who was left out.
_LEFT_OUT_UNPROVEN = ("the batch's capacity (concurrency or power) leaves no room for this workload "
                      "inside its allowed window beside the others in the plan kept, which is not "
                      "proven optimal (capacity_plan.note): a better plan may leave out others")


def lay_out(jobs: Sequence[Job], zones: Zones, capacity: CapacityLimits) -> FleetGrid:
    live = [i for i, job in enumerate(jobs)
            if any(isinstance(zones[z], ZoneSeries) for z in job.zones)]
    if not live:
        return FleetGrid()
    names = list(dict.fromkeys(z for i in live for z in jobs[i].zones
                               if isinstance(zones[z], ZoneSeries)))
    series = [zones[z].forecast for z in names]
    covered = np.array([max(s.start_epoch for s in series), min(s.end_epoch for s in series)])
    # Each job's whole-minute starts, by the contiguous search's own rule (from its earliest
    # start rounded up to the minute, or the next minute for "start now"), inside the period every
    # zone of the batch covers.
    starts = {}
    not_covered = {}
    for i in live:
        found = windows.start_range(covered, jobs[i].duration, jobs[i].earliest_start,
                                    jobs[i].latest_start) if covered[0] < covered[1] else None
        if found is None:
            not_covered[i] = NotPlaced(FailureCode.WINDOW_NOT_COVERED,
                                       _not_in_common(jobs[i], covered))
        else:
            starts[i] = found
    live = [i for i in live if i in starts]
    if not live:
        return FleetGrid(not_covered=not_covered)
    origin = min(lo for lo, _ in starts.values())
    end = int(covered[1]) // 60 * 60
    unit = _fleet_unit(origin, end, series, [jobs[i].duration for i in live],
                       [b for i in live for b in starts[i]])
    index = {z: k for k, z in enumerate(names)}
    return FleetGrid(
        not_covered=not_covered, live=tuple(live), durations=tuple(jobs[i].duration for i in live),
        names=tuple(names), series=tuple(series), origin=origin, unit=unit,
        units=(end - origin) // unit,
        fleet_jobs=tuple(FleetJob(length=jobs[i].duration // unit,
                                  earliest=(starts[i][0] - origin) // unit,
                                  latest=(starts[i][1] - origin) // unit,
                                  zones=tuple(index[z] for z in jobs[i].zones if z in index),
                                  power_kw=jobs[i].power_kw)
                         for i in live),
        capacity=Capacity(
            max_concurrent=capacity.max_concurrent,
            zone_concurrent=[capacity.max_concurrent_per_zone.get(z) for z in names],
            zone_power_kw=[capacity.max_power_kw.get(z) for z in names]))


def place(grid: FleetGrid, budget: Optional[Budget]) -> FleetRuns:
    """The fleet solver (fleet.schedule_fleet) over the grid's jobs; its placements, on the grid,
    as Runs in epoch seconds over the zones' forecasts; with the jobs no start fits (not_covered).
    A grid without jobs is placed at once."""
    runs: dict[int, Union[Run, NotPlaced]] = dict(grid.not_covered)
    if not grid.live:
        return FleetRuns(runs, CapacityPlan(proven_optimal=True))
    origin, unit = grid.origin, grid.unit
    edges = origin + unit * np.arange(grid.units + 1)
    intensity = np.stack([np.diff(np.interp(edges, s.boundaries(), s.integral())) / unit
                          for s in grid.series])
    result = schedule_fleet(intensity, grid.fleet_jobs, grid.capacity, budget)
    for i, duration, spot, reason in zip(grid.live, grid.durations, result.placements,
                                         result.reasons):
        if spot is None:
            text = (_LEFT_OUT_UNPROVEN if reason is FailureCode.CAPACITY_EXCEEDED
                    and not result.proven_optimal else _NOT_PLACED[reason])
            runs[i] = NotPlaced(reason, text)
            continue
        start = origin + spot.start * unit
        one = grid.series[spot.zone]
        mean = windows.window_mean(one.boundaries(), one.values, start, duration, one.integral())
        runs[i] = Run(spot.zone, ((start, start + duration),), mean)
    return FleetRuns(runs, CapacityPlan(result.proven_optimal, result.not_proven, _gap(result)))


def _gap(result) -> Optional[float]:
    """The share of a plan not proven optimal that may lie above its lower bound."""
    if result.proven_optimal or result.lower_bound is None:
        return None
    if result.emissions <= 0:
        return 0.0
    return max(0.0, (result.emissions - result.lower_bound) / result.emissions)


def _not_in_common(job: Job, covered: np.ndarray) -> str:
    if covered[0] >= covered[1]:
        return "the batch's zones share no forecast period"
    return ("no whole run of this workload between its earliest and latest start lies in the "
            f"period every zone of the batch covers ({rfc3339(from_epoch(int(covered[0])))} to "
            f"{rfc3339(from_epoch(int(covered[1])))})")


def _fleet_unit(origin: int, end: int, series: Sequence[ForecastSeries], durations: list[int],
                starts: list[int]) -> int:
    """The coarsest grid from `origin` (a whole minute) that loses nothing against every whole
    minute: the gcd, in minutes, of the durations, each job's first and last start and every
    forecast boundary, as offsets from `origin`.

    Why that suffices: on such a grid of g minutes, take a plan over whole minutes whose starts are
    not all on it, and the runs whose start lies furthest past a grid point (offset r minutes, the
    largest; their ends too, durations being whole units). Move those runs together, by up to
    r - r' minutes back (r' the next largest offset of any start, end or cost step, 0 for the
    grid) or g - r forward. No other run's start or end and no change of intensity lies strictly
    inside that range, so no two runs come to overlap (at the extremes some merely touch, which
    frees capacity), no run leaves its window (its first and last starts are on the grid), and
    each moved run's grams are linear in the shift (one intensity on each side of each end): one
    of the two extremes is no worse. Each such move empties one offset class; repeating puts every
    start on the grid with as many jobs placed and no more grams. Minutes where nothing changes
    are therefore not searched, and an on-grid batch keeps its coarse grid.
    """
    offsets = [d // 60 for d in durations] + [(t - origin) // 60 for t in starts]
    for one in series:
        inner = one.boundaries()
        inner = inner[(inner > origin) & (inner < end)] - origin
        offsets += [1] if (inner % 60).any() else np.unique(inner // 60).tolist()
    return 60 * reduce(math.gcd, (int(x) for x in offsets), 0)
