"""A batch under capacity laid on the fleet solver's grid: the zones every job may use, the period
their forecasts share, the coarsest grid of whole minutes that loses nothing, and each job's
starts and length in units of it. Pure: no I/O, no clock."""

from __future__ import annotations

import math
from functools import reduce
from typing import Sequence

import numpy as np

from carbon_optimizer.scheduling import window as windows
from carbon_optimizer.scheduling.fleet_model import Capacity, FleetJob
from carbon_optimizer.scheduling.model import CapacityLimits, Job, ZoneSeries, Zones
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, rfc3339


class FleetGrid:
    """A batch under capacity on the fleet's grid: the zones, each job's starts, the grid, and the
    jobs with data that no start fits whatever the others do (`not_covered`: index -> why)."""

    def __init__(self) -> None:
        self.not_covered: dict[int, str] = {}
        self.live: list[int] = []
        self.names: list[str] = []
        self.series: list[ForecastSeries] = []
        self.origin = self.unit = self.units = 0
        self.fleet_jobs: list[FleetJob] = []
        self.capacity = Capacity()


def lay_out(jobs: Sequence[Job], zones: Zones, capacity: CapacityLimits) -> FleetGrid:
    layout = FleetGrid()
    live = [i for i, job in enumerate(jobs)
            if any(isinstance(zones[z], ZoneSeries) for z in job.zones)]
    if not live:
        return layout
    names = list(dict.fromkeys(z for i in live for z in jobs[i].zones
                               if isinstance(zones[z], ZoneSeries)))
    series = [zones[z].forecast for z in names]
    covered = np.array([max(s.start_epoch for s in series), min(s.end_epoch for s in series)])
    # Each job's whole-minute starts, by the contiguous search's own rule (from its earliest
    # start rounded up to the minute, or the next minute for "start now"), inside the period every
    # zone of the batch covers.
    starts = {}
    for i in live:
        found = windows.start_range(covered, jobs[i].duration, jobs[i].earliest_start,
                                    jobs[i].latest_start) if covered[0] < covered[1] else None
        if found is None:
            layout.not_covered[i] = _not_in_common(jobs[i], covered)
        else:
            starts[i] = found
    live = [i for i in live if i in starts]
    if not live:
        return layout
    origin = min(lo for lo, _ in starts.values())
    end = int(covered[1]) // 60 * 60
    unit = _fleet_unit(origin, end, series, [jobs[i].duration for i in live],
                       [b for i in live for b in starts[i]])
    index = {z: k for k, z in enumerate(names)}
    layout.live, layout.names, layout.series = live, names, series
    layout.origin, layout.unit, layout.units = origin, unit, (end - origin) // unit
    layout.fleet_jobs = [FleetJob(length=jobs[i].duration // unit,
                                  earliest=(starts[i][0] - origin) // unit,
                                  latest=(starts[i][1] - origin) // unit,
                                  zones=tuple(index[z] for z in jobs[i].zones if z in index),
                                  power_kw=jobs[i].power_kw)
                         for i in live]
    layout.capacity = Capacity(
        max_concurrent=capacity.max_concurrent,
        zone_concurrent=[capacity.max_concurrent_per_zone.get(z) for z in names],
        zone_power_kw=[capacity.max_power_kw.get(z) for z in names])
    return layout


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
