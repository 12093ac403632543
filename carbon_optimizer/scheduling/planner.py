"""The one scheduling path: Jobs and each zone's series in, a Schedule or an Unschedulable out.

Pure: no I/O, no clock ("now" is an argument). The engine gathers the series (forecasts, extended
with estimates where a job's window runs past them); this module picks the solver that fits each
job (window, chunks, or the fleet for a batch under capacity) and builds every answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from carbon_optimizer.errors import DeadlineExceeded, FailureCode, TooLarge
from carbon_optimizer.scheduling.budget import Budget, RequestCost
from carbon_optimizer.scheduling import window as windows
from carbon_optimizer.scheduling.chunks import best_chunks_across
from carbon_optimizer.scheduling.cost import (
    PASS_CANDIDATES as _PASS_CANDIDATES, estimate, estimate_fleet,
)
from carbon_optimizer.scheduling.fleet_grid import NotPlaced, lay_out, place
from carbon_optimizer.scheduling.horizon import Gated, coverage_of, gate, reaches_past_forecast
from carbon_optimizer.scheduling.model import (
    Baseline, CapacityLimits, Job, Outcome, Outcomes, Run, Schedule,
    Unschedulable, ZoneFailure, ZoneSeries, Zones,
)
from carbon_optimizer.scheduling.window_batch import best_across, best_windows, on_grid, pass_candidates
from carbon_optimizer.timeseries import ForecastSeries, rfc3339

_NOT_COVERED_PAST_HORIZON = ("no forecast covers a run of this workload inside its allowed window "
                             "(estimates reach at most 14 days past a forecast)")


def _split(job: Job, zones: Zones) -> tuple[list[str], tuple[ZoneFailure, ...]]:
    usable = [z for z in job.zones if isinstance(zones[z], ZoneSeries)]
    failures = tuple(f for z in job.zones if isinstance(f := zones[z], ZoneFailure))
    return usable, failures


def _no_data(job: Job, failures: tuple[ZoneFailure, ...]) -> Unschedulable:
    """No zone has data. While any zone's failure is passing, so is the job's (asking again may
    work); only when every zone failed for good is the failure final."""
    code = next((f.code for f in failures if f.code.transient), failures[0].code)
    return Unschedulable(job, code, "; ".join(f.message for f in failures), failures)


def plan_all(jobs: Sequence[Job], zones: Zones, now: int, budget: Budget,
             estimated: Optional[RequestCost] = None) -> list[Outcome]:
    """Each job on its own, within one budget for the request: refused whole (TooLarge) when its
    estimated work or memory is over the budget (`estimated`: estimate()'s answer, when the caller
    has it already); jobs left when the deadline passes are Unschedulable with
    deadline_exceeded."""
    if estimated is None:
        estimate(jobs, zones, budget)
    searched = _search_together(jobs, zones, budget)
    baselines = _baselines_together(jobs, zones)
    gates: dict = {}  # identical jobs with the same run share one gate (cost.estimate counts one)
    return [plan(job, zones, now, budget, Batched(i in searched, searched.get(i),
                                                  i in baselines, baselines.get(i)), gates)
            for i, job in enumerate(jobs)]


@dataclass(frozen=True)
class Batched:
    """What plan_all made for a job with the rest of its batch, before planning it alone: its
    first search, when made (`run`: None when no run fits), and its baseline, when made."""
    searched: bool = False
    run: Optional[Run] = None
    baselined: bool = False
    baseline: Optional[Baseline] = None


# A search with more candidates than this (about two a series step of its window) is done alone:
# the single search reads long ranges of the prefix sums as slices, which costs less per candidate
# than gathering them; the batch saves the fixed cost of a call (~15 us), worth ~100 candidates.
_BATCHED_CANDIDATES = 128
# Fewer searches (or baselines on one series) than this are done one by one: a pass's own fixed
# cost (~100 us of NumPy calls) is that of some 6 single searches.
_BATCHED_FROM = 8


def _search_together(jobs: Sequence[Job], zones: Zones,
                     budget: Optional[Budget] = None) -> dict[int, Optional[Run]]:
    """The first search of every contiguous job whose series are on the whole-minute grid (every
    provider's forecast and its estimates), done for many at once over their zones' series: by
    job index, what _search would return for it alone (the same answer, bit for bit). Other jobs
    are left out and searched on their own, and so are those left when the deadline passes (plan
    then answers them deadline_exceeded)."""
    if sum(len(job.zones) for job in jobs) < _BATCHED_FROM:
        return {}  # too few searches to batch: do not pay for looking (bench/optimizer_bench.py)
    series: dict[int, int] = {}       # id of a series -> its index in `distinct`
    distinct: list[ForecastSeries] = []
    rows: list[tuple[int, int, int]] = []  # (job index, zone's place in its usable zones, series)
    cuts, size = [0], 0  # passes end at a job's last row
    for i, job in enumerate(jobs):
        if job.interruptible or job.duration <= 0 or job.duration % 60:
            continue
        usable = [z for z in job.zones if isinstance(zones[z], ZoneSeries)]
        searched = [zones[z].searched(job) for z in usable]
        if not usable:
            continue
        mine, candidates = [], 0
        for one in searched:
            count = pass_candidates(one, job.duration, job.earliest_start, job.latest_start)
            if count > _BATCHED_CANDIDATES:
                break
            index = series.get(id(one))
            if index is None:
                if not on_grid(one):
                    break
                index = series[id(one)] = len(distinct)
                distinct.append(one)
            mine.append(index)
            candidates += count
        else:
            rows += [(i, k, index) for k, index in enumerate(mine)]
            size += candidates
            if size >= _PASS_CANDIDATES:
                cuts.append(len(rows))
                size = 0
    if len(rows) < _BATCHED_FROM:
        return {}
    if cuts[-1] < len(rows):
        cuts.append(len(rows))
    answers: dict[int, Optional[Run]] = {}
    for a, b in zip(cuts, cuts[1:]):
        if budget is not None and budget.expired():
            break
        part = rows[a:b]
        owners = [jobs[i] for i, _, _ in part]
        found, starts, means = best_windows(
            distinct, np.array([index for _, _, index in part]),
            np.array([j.duration for j in owners]), np.array([j.earliest_start for j in owners]),
            np.array([j.latest_start for j in owners]))
        # Each job's rows are consecutive, its zones in order: the first row is its first zone's.
        first = [row for row, (_, k, _) in enumerate(part) if k == 0]
        any_found, pick = best_across(found, starts, means, np.array(first))
        for row, ok, chosen in zip(first, any_found.tolist(), pick.tolist()):
            i = part[row][0]
            if not ok:
                answers[i] = None
                continue
            start = int(starts[chosen])
            answers[i] = Run(part[chosen][1], ((start, start + jobs[i].duration),),
                             float(means[chosen]))
    return answers


def plan(job: Job, zones: Zones, now: int, budget: Optional[Budget] = None,
         batched: Batched = Batched(), gates: Optional[dict] = None) -> Outcome:
    """The cleanest run of one job over its zones: a contiguous window, or chunks when the job is
    interruptible; an Unschedulable saying why when there is none. `batched`: what was made for
    it already with the rest of its batch (_search_together, _baselines_together)."""
    usable, failures = _split(job, zones)
    if not usable:
        return _no_data(job, failures)
    try:
        if budget is not None:
            budget.check()
        return _plan(job, zones, now, usable, failures, budget, batched, gates)
    except DeadlineExceeded as exc:
        return Unschedulable(job, exc.code, exc.message, failures)


def _search(job: Job, series: list[ForecastSeries], budget: Optional[Budget]) -> Optional[Run]:
    """The cleanest run over `series` (one per usable zone, its zone_index an index into them):
    chunks when the job is interruptible, else one window; None when none fits. Raises TooLarge."""
    pairs = [(s.boundaries(), s.values) for s in series]
    if job.interruptible:
        return best_chunks_across(pairs, job.duration, job.earliest_start, job.latest_end,
                                  job.min_chunk, job.max_chunks, budget)
    return windows.best_window_across(pairs, job.duration, job.earliest_start, job.latest_start,
                                      integrals=[s.integral() for s in series])


def _plan(job: Job, zones: Zones, now: int, usable: list[str], failures: tuple[ZoneFailure, ...],
          budget: Optional[Budget], batched: Batched, gates: Optional[dict] = None) -> Outcome:
    try:
        run = (batched.run if batched.searched
               else _search(job, [zones[z].searched(job) for z in usable], budget))
    except TooLarge as exc:
        return Unschedulable(job, exc.code, exc.message, failures)
    if run is None:
        if job.interruptible or any(reaches_past_forecast(job, zones[z]) for z in usable):
            message = _NOT_COVERED_PAST_HORIZON
        else:
            message = ("no forecast covers a whole run of this workload between its earliest and "
                       "latest start; " + "; ".join(
                           f"{z} is covered from {rfc3339(zones[z].forecast.start)} to "
                           f"{rfc3339(zones[z].forecast.end)}" for z in usable))
        return Unschedulable(job, FailureCode.WINDOW_NOT_COVERED, message, failures)
    chosen: ZoneSeries = zones[usable[run.zone_index]]  # type: ignore[assignment]
    gated = Gated(run)
    key = (job.search_key, run)
    if run.end > chosen.forecast.end_epoch and gates is not None and key in gates:
        gated = gates[key]
    elif run.end > chosen.forecast.end_epoch:  # on estimates: the risk gate, against the best
        try:                                   # run inside the forecasts
            inside = _search(job, [zones[z].forecast for z in usable], budget)
        except TooLarge:
            inside = None
        gated = gate(job, zones, run, chosen, inside, now)
        if gates is not None:
            gates[key] = gated
    baseline = batched.baseline if batched.baselined else _baseline(job, zones, True)
    return _schedule(job, zones, usable[gated.run.zone_index], gated, now, failures, baseline)


def plan_batch(jobs: Sequence[Job], zones: Zones, capacity: CapacityLimits, now: int,
               budget: Optional[Budget] = None,
               estimated: Optional[RequestCost] = None) -> list[Outcome]:
    """Place a batch jointly under shared capacity (fleet solver) over the providers' forecasts.
    Refused whole (TooLarge) when its first plan's work or its memory is over the budget
    (`estimated`: estimate()'s answer, when the caller has it already). The answer is an Outcomes
    list whose `capacity_plan` says whether the plan is proven optimal.

    Chunks are not split under capacity: an interruptible job runs in one piece here.
    """
    grid = lay_out(jobs, zones, capacity)
    if budget is not None and estimated is None:
        estimate_fleet(jobs, zones, capacity, budget, grid)
    placed = place(grid, budget)
    outcomes = Outcomes()
    outcomes.capacity_plan = placed.capacity_plan
    for i, job in enumerate(jobs):
        usable, failures = _split(job, zones)
        run = placed.runs.get(i)
        if not usable:
            outcomes.append(_no_data(job, failures))
        elif isinstance(run, NotPlaced):
            outcomes.append(Unschedulable(job, run.code, run.message, failures))
        else:
            outcomes.append(_schedule(job, zones, grid.names[run.zone_index], Gated(run), now,
                                      failures, _baseline(job, zones, False), use_estimates=False))
    return outcomes


def _schedule(job: Job, zones: Zones, zone: str, gated: Gated, now: int,
              failures: tuple[ZoneFailure, ...], baseline: Optional[Baseline],
              use_estimates: bool = True) -> Schedule:
    """The one place a Schedule is built: `gated.run` in `zone`."""
    source: ZoneSeries = zones[zone]  # type: ignore[assignment]
    return Schedule(job=job, zone=zone, intervals=gated.run.intervals,
                    mean_intensity=gated.run.mean_intensity, baseline=baseline,
                    coverage=coverage_of(job, zones, source, gated, now, use_estimates),
                    source=source, unavailable=failures)


def _baselines_together(jobs: Sequence[Job], zones: Zones) -> dict[int, Optional[Baseline]]:
    """_baseline(job, zones, True) of every job whose first zone has data, one NumPy pass per
    series (the same arithmetic: start_range's first start, window_mean's interpolation)."""
    if len(jobs) < _BATCHED_FROM:
        return {}  # no series can have enough jobs to batch
    groups: dict[int, tuple[str, ForecastSeries, list[int]]] = {}
    for i, job in enumerate(jobs):
        first = zones[job.zones[0]]
        if isinstance(first, ZoneSeries):
            one = first.searched(job)
            groups.setdefault(id(one), (first.zone, one, []))[2].append(i)
    answers: dict[int, Optional[Baseline]] = {}
    g = windows.GRANULARITY_SECONDS
    for zone, one, members in groups.values():
        if len(members) < _BATCHED_FROM:
            continue
        boundaries = one.boundaries()
        d = np.array([jobs[i].duration for i in members], dtype=np.int64)
        earliest = np.array([jobs[i].earliest_start for i in members], dtype=np.int64)
        latest = np.array([jobs[i].latest_start for i in members], dtype=np.int64)
        # windows.start_range's first start, for every job at once.
        lo = -(-np.maximum(earliest, int(boundaries[0])) // g) * g
        hi = np.minimum(latest, int(boundaries[-1]) - d) // g * g
        found = (lo <= hi) | ((lo - latest < g) & (lo + d <= boundaries[-1]))
        ok = np.flatnonzero(found)
        ends = np.interp(np.concatenate((lo[ok], lo[ok] + d[ok])), boundaries, one.integral())
        means = ((ends[len(ok):] - ends[:len(ok)]) / d[ok]).tolist()
        for i in members:
            answers[i] = None
        for at, mean in zip(ok.tolist(), means):
            i = members[at]
            start = int(lo[at])
            answers[i] = Baseline(zone=zone, start=start, end=start + jobs[i].duration,
                                  mean_intensity=mean)
    return answers


def _baseline(job: Job, zones: Zones, use_estimates: bool) -> Optional[Baseline]:
    """Run at the earliest allowed start (or the first covered minute) in the first zone."""
    first = zones[job.zones[0]]
    if not isinstance(first, ZoneSeries):
        return None
    series = first.searched(job) if use_estimates else first.forecast
    boundaries = series.boundaries()
    bounds = windows.start_range(boundaries, job.duration, job.earliest_start, job.latest_start)
    if bounds is None:
        return None
    start = bounds[0]
    mean = windows.window_mean(boundaries, series.values, start, job.duration, series.integral())
    return Baseline(zone=first.zone, start=start, end=start + job.duration, mean_intensity=mean)
