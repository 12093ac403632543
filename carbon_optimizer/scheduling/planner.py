"""The one scheduling path: Jobs and each zone's series in, a Schedule or an Unschedulable out.

Pure: no I/O, no clock ("now" is an argument). The engine gathers the series (forecasts, extended
with estimates where a job's window runs past them); this module picks the solver that fits each
job (window, chunks, or the fleet for a batch under capacity) and builds every answer.
"""

from __future__ import annotations

from dataclasses import replace as dc_replace
from functools import reduce
from typing import Optional, Sequence

import numpy as np

from carbon_optimizer.errors import DeadlineExceeded, FailureCode, TooLarge
from carbon_optimizer.scheduling.budget import MIB, WORK_PER_SECOND, Budget, Cost, RequestCost
from carbon_optimizer.scheduling import window as windows
from carbon_optimizer.scheduling.chunks import best_chunks, chunk_grid, search_bytes
from carbon_optimizer.scheduling.fleet import (
    EXACT_BYTES_PER_NONZERO, EXACT_COLUMNS, EXACT_NONZEROS, LARGE_BATCH, POLISHED, exact_size,
    schedule_fleet,
)
from carbon_optimizer.scheduling.fleet_grid import _Layout, _layout
from carbon_optimizer.scheduling.horizon import (
    MIN_REPLAN_SECONDS, ask_again_at, estimated_span, replan_at, window_error,
)
from carbon_optimizer.scheduling.model import (
    Baseline, CapacityLimits, CapacityPlan, Coverage, Job, Outcome, Outcomes, Schedule,
    Unschedulable, ZoneFailure, ZoneSeries, Zones,
)
from carbon_optimizer.scheduling.window_batch import best_across, best_windows, on_grid
from carbon_optimizer.timeseries import ForecastSeries, rfc3339

_NOT_COVERED_PAST_HORIZON = ("no forecast covers a run of this workload inside its allowed window "
                             "(estimates reach at most 14 days past a forecast)")


def reaches_past_forecast(job: Job, zone: ZoneSeries) -> bool:
    """Whether a search for `job` in this zone needs estimates past the provider's forecast."""
    return job.extend_horizon and job.latest_end > zone.forecast.end_epoch


def _split(job: Job, zones: Zones) -> tuple[list[str], tuple[ZoneFailure, ...]]:
    usable = [z for z in job.zones if isinstance(zones[z], ZoneSeries)]
    failures = tuple(f for z in job.zones if isinstance(f := zones[z], ZoneFailure))
    return usable, failures


def _no_data(job: Job, failures: tuple[ZoneFailure, ...]) -> Unschedulable:
    """No zone has data. While any zone's failure is passing, so is the job's (asking again may
    work); only when every zone failed for good is the failure final."""
    code = next((f.code for f in failures if f.code.transient), failures[0].code)
    return Unschedulable(job, code, "; ".join(f.message for f in failures), failures)


# -- what a request costs ---------------------------------------------------------------------------
# Work in budget units (about 10 ns each here; measured by bench/worst_requests.py): a window
# search over n points about 2,500 + 5 n; a chunk search 5,000 + 5 n for its contiguous fallback,
# plus 1,000 a unit (the DP's Python loop) and 2 a cell for an exact search, or 4,000 + 40 a unit
# for a sort; the fleet's first plan 10 per (job, zone, start); the fleet's later passes and its
# exact model take only what the deadline leaves (an anytime search: it may use all of it).
# Memory in bytes at the request's peak, everything it holds counted (tests/
# test_worst_request_search.py checks the estimate against tracemalloc and RSS): the request, its
# jobs and answers (_EDGE_*), its zones' series, and the costliest step of the solving (steps run
# one after another and free what they held; chunks.search_bytes, window searches, a batched pass,
# the fleet's plans and its exact model).
# Measured peaks (tracemalloc): a 1-workload request 0.1 MiB; 500 workloads of 1 zone 3.7 MiB; of
# 50 zones 7.5 MiB. The figures below are about 1.4 times those (the search's finds: at most 0.8 of
# the estimate), not more: the estimate is what a request reserves from its worker's pool.
_EDGE_BYTES = 2 ** 20              # the app's own per-request objects, a 1-workload body and answer
_EDGE_PER_WORKLOAD = 10_000        # its model, job, outcome and answer objects, its text both ways
_EDGE_PER_LOCATION = 200           # a zone named by a workload: its string, resolution, provenance
_SERIES_POINT_BYTES = 120          # a zone's series: values, boundaries, integral, estimates, history
_WINDOW_POINT_BYTES = 64           # one window search's temporaries, per point of its series
_PASS_CANDIDATE_BYTES = 110        # one batched pass's arrays, per candidate start
# Work at the edges (parsing, answers): not the solver's, so not refused on, but counted.
_EDGE_WORK = 100_000
_EDGE_WORK_PER_WORKLOAD = 15_000
_EDGE_WORK_PER_LOCATION = 300
_SERIES_WORK = 30_000              # a zone's forecast, from a cache or the demo
_EXTENSION_WORK = 300_000          # estimates past it, from its history (measured ~2 ms a zone)


def _cost(job: Job, zone: ZoneSeries) -> Cost:
    series = zone.searched(job)
    points = len(series.values)
    window = Cost(2_500 + 5 * points, _WINDOW_POINT_BYTES * points)
    if job.interruptible:
        contiguous = Cost(5_000 + 5 * points, _WINDOW_POINT_BYTES * points)
        min_chunk = -(-(job.min_chunk or min(series.step_seconds, job.duration)) // 60) * 60
        if job.max_chunks != 1 and 2 * min_chunk <= job.duration:
            # The grid best_chunks will search (raises TooLarge as it would): one-minute units
            # for a window at arbitrary seconds, coarser ones when everything is on a coarser grid.
            found = chunk_grid(series.boundaries(), job.duration, min_chunk, job.earliest_start,
                               job.latest_end, job.max_chunks)
            if found is not None:
                grid, _, cells = found
                memory = search_bytes(grid, job.duration, min_chunk, job.max_chunks)
                if cells == 0:
                    return Cost(9_000 + 5 * points + 40 * grid.count, memory).then(contiguous)
                return Cost(5_000 + 5 * points + 1_000 * grid.count + 2 * cells, memory).then(contiguous)
        return contiguous
    return window


def _edges(jobs: Sequence[Job]) -> Cost:
    """What parsing the request and writing its answers hold and take, beside the solving."""
    locations = sum(len(job.zones) for job in jobs)
    return Cost(_EDGE_WORK + _EDGE_WORK_PER_WORKLOAD * len(jobs) + _EDGE_WORK_PER_LOCATION * locations,
                _EDGE_BYTES + _EDGE_PER_WORKLOAD * len(jobs) + _EDGE_PER_LOCATION * locations)


def _series(jobs: Sequence[Job], zones: Zones) -> Cost:
    """The zones' series the engine gathered (the work of estimates past a forecast included:
    done before the planner, counted here)."""
    seen = {z: zones[z] for job in jobs for z in job.zones if isinstance(zones[z], ZoneSeries)}
    return Cost(sum(_SERIES_WORK + (0 if one.extended is None else _EXTENSION_WORK)
                    for one in seen.values()),
                sum(_SERIES_POINT_BYTES * (len(one.forecast.values) + (
                    0 if one.extended is None else len(one.extended.values)))
                    for one in seen.values()))


def estimate(jobs: Sequence[Job], zones: Zones, budget: Budget,
             capacity: Optional[CapacityLimits] = None) -> RequestCost:
    """What planning these jobs will cost (plan_all, or plan_batch under `capacity`), before any
    of it is done: its solving work (refused over budget.work) and the request's peak memory
    (refused over budget.memory). Raises TooLarge naming what to change."""
    if capacity is not None:
        return _estimate_fleet(jobs, zones, capacity, budget)
    costs = [reduce(Cost.then, (_cost(job, zones[z]) for z in job.zones
                                if isinstance(zones[z], ZoneSeries)), Cost())
             for job in jobs]
    work = sum(c.work for c in costs)
    # A batched pass (_search_together) holds its candidates' arrays; the searches one by one,
    # the largest of them.
    candidates = min(_PASS_CANDIDATES, sum(_candidates(job, zones) for job in jobs))
    solving = Cost(work, max([c.memory for c in costs] + [_PASS_CANDIDATE_BYTES * candidates]))
    edges = _edges(jobs).beside(_series(jobs, zones))
    total = edges.beside(solving)
    if work > budget.work or total.memory > budget.memory:
        worst = max(range(len(jobs)), key=lambda i: (costs[i].work if work > budget.work
                                                      else costs[i].memory))
        job = jobs[worst]
        knobs = "fewer zones or a shorter window"
        if job.interruptible:
            knobs += ", a longer min_chunk or fewer max_chunks"
        where = f"workloads[{worst}] ({job.id or 'no id'})" if len(jobs) > 1 else "this workload"
        need = (f"about {work / WORK_PER_SECOND:.1f} s of solving, more than the "
                f"{budget.seconds:g} s one request may use" if work > budget.work else
                f"about {total.memory / MIB:.0f} MiB of working memory, more than the "
                f"{budget.memory / MIB:.0f} MiB one request may use")
        raise TooLarge(f"this request would need {need}; {where} costs most: ask for {knobs}"
                       + (", or send fewer workloads per request" if len(jobs) > 1 else ""))
    return RequestCost(work=work, memory=total.memory, edge_work=edges.work)


def _candidates(job: Job, zones: Zones) -> int:
    """Candidate starts of a job in a batched pass (as _search_together counts them), 0 if none."""
    if job.interruptible or job.duration <= 0 or job.duration % 60:
        return 0
    count = 0
    for z in job.zones:
        one = zones[z]
        if isinstance(one, ZoneSeries):
            series = one.searched(job)
            count += 2 * min(len(series.values) + 1, (job.latest_start - job.earliest_start
                                                      + job.duration) // series.step_seconds + 2) + 2
    return count


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
    return [plan(job, zones, now, budget, searched.get(i, _NOT_SEARCHED), baselines.get(i, _NOT_SEARCHED))
            for i, job in enumerate(jobs)]


_Found = Optional[tuple[str, tuple[tuple[int, int], ...], float]]
_NOT_SEARCHED = object()
# Candidate starts searched in one pass: bounds the pass's arrays (some 100 bytes a candidate in
# all: 5 MB) when a batch is large, and how long it runs between two looks at the deadline.
_PASS_CANDIDATES = 50_000
# A search with more candidates than this (about two a series step of its window) is done alone:
# the single search reads long ranges of the prefix sums as slices, which costs less per candidate
# than gathering them; the batch saves the fixed cost of a call (~15 us), worth ~100 candidates.
_BATCHED_CANDIDATES = 128
# Fewer searches (or baselines on one series) than this are done one by one: a pass's own fixed
# cost (~100 us of NumPy calls) is that of some 6 single searches.
_BATCHED_FROM = 8


def _search_together(jobs: Sequence[Job], zones: Zones,
                     budget: Optional[Budget] = None) -> dict[int, _Found]:
    """The first search of every contiguous job whose series are on the whole-minute grid (every
    provider's forecast and its estimates), done for many at once over their zones' series: by
    job index, what _search would return for it alone (the same answer, bit for bit). Other jobs
    are left out and searched on their own, and so are those left when the deadline passes (plan
    then answers them deadline_exceeded)."""
    series: dict[int, int] = {}       # id of a series -> its index in `distinct`
    distinct: list[ForecastSeries] = []
    rows: list[tuple[int, int, int]] = []  # (job index, zone's place in its usable zones, series)
    usables: dict[int, list[str]] = {}
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
            # At most two candidates a series step over the window and the run, two at its ends.
            count = 2 * min(len(one.values) + 1, (job.latest_start - job.earliest_start
                                                  + job.duration) // one.step_seconds + 2) + 2
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
            usables[i] = usable
            rows += [(i, place, index) for place, index in enumerate(mine)]
            size += candidates
            if size >= _PASS_CANDIDATES:
                cuts.append(len(rows))
                size = 0
    if len(rows) < _BATCHED_FROM:
        return {}
    if cuts[-1] < len(rows):
        cuts.append(len(rows))
    answers: dict[int, _Found] = {}
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
        first = [row for row, (_, place, _) in enumerate(part) if place == 0]
        any_found, pick = best_across(found, starts, means, np.array(first))
        for row, ok, chosen in zip(first, any_found.tolist(), pick.tolist()):
            i = part[row][0]
            if not ok:
                answers[i] = None
                continue
            start = int(starts[chosen])
            answers[i] = (usables[i][part[chosen][1]], ((start, start + jobs[i].duration),),
                          float(means[chosen]))
    return answers


def plan(job: Job, zones: Zones, now: int, budget: Optional[Budget] = None,
         searched: object = _NOT_SEARCHED, baseline: object = _NOT_SEARCHED) -> Outcome:
    """The cleanest run of one job over its zones: a contiguous window, or chunks when the job is
    interruptible; an Unschedulable saying why when there is none. `searched` and `baseline`: the
    job's first search and its baseline when they were made already, with the rest of its batch
    (_search_together, _baselines_together)."""
    usable, failures = _split(job, zones)
    if not usable:
        return _no_data(job, failures)
    try:
        if budget is not None:
            budget.check()
        return _plan(job, zones, now, usable, failures, budget, searched, baseline)
    except DeadlineExceeded as exc:
        return Unschedulable(job, exc.code, exc.message, failures)


def _search(job: Job, usable: list[str], series: list[ForecastSeries],
            budget: Optional[Budget]) -> Optional[tuple[str, tuple[tuple[int, int], ...], float]]:
    """The cleanest run over `series` (one per usable zone): zone, intervals, mean intensity; None
    when no run fits. Raises TooLarge."""
    if job.interruptible:
        found = None
        for zone, one in zip(usable, series):
            chunks = best_chunks(one.boundaries(), one.values, job.duration, job.earliest_start,
                                 job.latest_end, job.min_chunk, job.max_chunks, budget)
            if chunks is not None and (found is None
                                       or chunks.mean_intensity < found[1].mean_intensity - 1e-9):
                found = (zone, chunks)
        if found is None:
            return None
        zone, chunks = found
        return zone, tuple((c.start, c.end) for c in chunks.chunks), chunks.mean_intensity
    chosen = windows.best_window_across(
        [(s.boundaries(), s.values) for s in series], job.duration, job.earliest_start,
        job.latest_start, integrals=[s.integral() for s in series])
    if chosen is None:
        return None
    window = chosen.window
    return usable[chosen.zone_index], ((window.start, window.end),), window.mean_intensity


def _plan(job: Job, zones: Zones, now: int, usable: list[str], failures: tuple[ZoneFailure, ...],
          budget: Optional[Budget], searched: object = _NOT_SEARCHED,
          baseline: object = _NOT_SEARCHED) -> Outcome:
    if searched is not _NOT_SEARCHED:
        found = searched
    else:
        try:
            found = _search(job, usable, [zones[z].searched(job) for z in usable], budget)
        except TooLarge as exc:
            return Unschedulable(job, exc.code, exc.message, failures)
    if found is None:
        if job.interruptible or any(reaches_past_forecast(job, zones[z]) for z in usable):
            message = _NOT_COVERED_PAST_HORIZON
        else:
            message = ("no forecast covers a whole run of this workload between its earliest and "
                       "latest start; " + "; ".join(
                           f"{z} is covered from {rfc3339(zones[z].forecast.start)} to "
                           f"{rfc3339(zones[z].forecast.end)}" for z in usable))
        return Unschedulable(job, FailureCode.WINDOW_NOT_COVERED, message, failures)
    zone, intervals, mean = found
    chosen: ZoneSeries = zones[zone]  # type: ignore[assignment]
    error = window_error(intervals, chosen.forecast.end_epoch, chosen.forecast.step_seconds,
                         chosen.estimate_error)
    if error > 0:
        # The risk gate: a run resting on estimates replaces the best run inside the forecasts
        # only when it is expected to be cleaner by more than the estimates' measured error.
        try:
            inside = _search(job, usable, [zones[z].forecast for z in usable], budget)
        except TooLarge:
            inside = None
        if inside is not None and inside[2] - mean <= error:
            waited = replan_at(intervals[-1][1], now, chosen.forecast.end_epoch,
                               chosen.forecast.step_seconds)
            zone, intervals, mean = inside
            # Ask again when a forecast covers the run turned down, if that is before this run
            # starts (the client's `wait` re-asks at replan_at when it comes before the start);
            # else at this run's start, when a newer forecast may show a cleaner one.
            ask = waited if waited is not None and now < waited < intervals[0][0] else None
            if ask is None:
                ask = _ask_again(job, zones, intervals[0][0], now)
            return _schedule(job, zones, zone, intervals, mean, now, failures, gate=(0.0, True, ask),
                             baseline=baseline)
        if inside is not None:
            # The run on estimates wins, but the best run inside the forecast is still open until
            # it starts: ask again by then, so that a newer forecast can still choose it.
            keep = _ask_again(job, zones, inside[1][0][0], now)
            return _schedule(job, zones, zone, intervals, mean, now, failures, baseline=baseline,
                             gate=(error, False, keep))
    return _schedule(job, zones, zone, intervals, mean, now, failures, baseline=baseline,
                     gate=(error, False, None))


def plan_batch(jobs: Sequence[Job], zones: Zones, capacity: CapacityLimits, now: int,
               budget: Optional[Budget] = None,
               estimated: Optional[RequestCost] = None) -> list[Outcome]:
    """Place a batch jointly under shared capacity (fleet solver) over the providers' forecasts.
    Refused whole (TooLarge) when its first plan's work or its memory is over the budget
    (`estimated`: estimate()'s answer, when the caller has it already). The answer is an Outcomes
    list whose `capacity_plan` says whether the plan is proven optimal.

    Chunks are not split under capacity: an interruptible job runs in one piece here.
    """
    outcomes: list[Optional[Outcome]] = Outcomes([None] * len(jobs))
    layout = _layout(jobs, zones, capacity)
    for i, job in enumerate(jobs):
        usable, failures = _split(job, zones)
        if not usable:
            outcomes[i] = _no_data(job, failures)
        elif i in layout.not_covered:
            outcomes[i] = Unschedulable(job, FailureCode.WINDOW_NOT_COVERED, layout.not_covered[i],
                                        failures)
    if budget is not None and estimated is None:
        _estimate_fleet(jobs, zones, capacity, budget, layout)
    if layout.live:
        _place_fleet(jobs, zones, now, layout, outcomes, budget)
    else:
        outcomes.capacity_plan = CapacityPlan(proven_optimal=True)
    return outcomes  # type: ignore[return-value]


# The fleet's memory (bytes), by what it holds at once: intensity and prefix sums (zones x units),
# the plans it keeps (one row of running totals each, and a zones x units table per kind of
# per-zone limit), the prices of the Lagrangian starts and a job's priced prefix (four
# temporaries), and the exact model when it is within its size (fleet.exact_size).
_FLEET_JOB_BYTES = 2_000


def _fleet_memory(layout: _Layout) -> int:
    zones, units = len(layout.names), layout.units
    capacity = layout.capacity
    per_zone = sum(any(x is not None for x in limits)
                   for limits in (capacity.zone_concurrent, capacity.zone_power_kw))
    kept = (1 if len(layout.fleet_jobs) > LARGE_BATCH else POLISHED) + 4  # kept, made, limits, relaxed
    plans = kept * 8 * units * (1 + per_zone * zones)
    priced_rows = zones if per_zone else 1
    prices = 8 * (units + 1) * (2 * priced_rows + 4 * priced_rows + 1)
    size = exact_size(layout.fleet_jobs, range(len(layout.fleet_jobs)), capacity, zones)
    exact = (EXACT_BYTES_PER_NONZERO * size.nonzeros
             if size.columns <= EXACT_COLUMNS and size.nonzeros <= EXACT_NONZEROS else 0)
    return (16 * zones * (units + 1) + plans + prices + 64 * units
            + _FLEET_JOB_BYTES * len(layout.fleet_jobs) + exact)


def _estimate_fleet(jobs: Sequence[Job], zones: Zones, capacity: CapacityLimits, budget: Budget,
                    layout: Optional[_Layout] = None) -> RequestCost:
    layout = layout or _layout(jobs, zones, capacity)
    units, names = layout.units, layout.names
    first_plan = 10 * sum(len(j.zones) * max(0, j.latest - j.earliest + 1) for j in layout.fleet_jobs)
    work = first_plan + 20 * units * len(names) if layout.live else 0
    edges = _edges(jobs).beside(_series(jobs, zones))
    memory = edges.memory + (_fleet_memory(layout) if layout.live else 0)
    if work > budget.work:
        raise TooLarge(f"placing this batch under capacity would need about "
                       f"{first_plan / WORK_PER_SECOND:.1f} s for a first plan, more than the "
                       f"{budget.seconds:g} s one request may use; send fewer workloads, fewer "
                       "zones or shorter windows")
    if memory > budget.memory:
        raise TooLarge(f"placing this batch under capacity would need about {memory / MIB:.0f} MiB "
                       f"of working memory, more than the {budget.memory / MIB:.0f} MiB one request "
                       f"may use ({len(names)} zones x {units:,} steps of {layout.unit // 60} min "
                       "on the batch's grid): send fewer zones, durations and windows in whole "
                       "hours (a coarser grid), or fewer workloads")
    return RequestCost(work=work, memory=memory, edge_work=edges.work, anytime=bool(layout.live))


def _place_fleet(jobs, zones: Zones, now: int, layout: _Layout, outcomes: Outcomes,
                 budget: Optional[Budget]) -> None:
    origin, unit, units, series = layout.origin, layout.unit, layout.units, layout.series
    edges = origin + unit * np.arange(units + 1)
    intensity = np.stack([np.diff(np.interp(edges, s.boundaries(), s.integral())) / unit
                          for s in series])
    result = schedule_fleet(intensity, layout.fleet_jobs, layout.capacity, budget)
    outcomes.capacity_plan = CapacityPlan(result.proven_optimal, result.not_proven)
    messages = {
        FailureCode.WINDOW_NOT_COVERED: "no start inside the allowed window is covered by the "
                                        "forecasts of every zone in the batch",
        FailureCode.CAPACITY_EXCEEDED: "the batch's capacity (concurrency or power) leaves no room "
                                       "for this workload inside its allowed window"}
    for i, place, reason in zip(layout.live, result.placements, result.reasons):
        job = jobs[i]
        failures = _split(job, zones)[1]
        if place is None:
            code = reason
            outcomes[i] = Unschedulable(job, code, messages[code], failures)
            continue
        zone = layout.names[place.zone]
        start = origin + place.start * unit
        one = zones[zone].forecast
        mean = windows.window_mean(one.boundaries(), one.values, start, job.duration, one.integral())
        outcomes[i] = _schedule(job, zones, zone, ((start, start + job.duration),), mean, now,
                                failures, use_estimates=False)


def _schedule(job: Job, zones: Zones, zone: str, intervals: tuple[tuple[int, int], ...],
              mean: float, now: int, failures: tuple[ZoneFailure, ...],
              use_estimates: bool = True,
              gate: tuple[float, bool, Optional[int]] = (0.0, False, None),
              baseline: object = _NOT_SEARCHED) -> Schedule:
    """The one place a Schedule is built. `gate`: the chosen run's estimate error, whether a run
    on estimates was turned down for it, and when to ask again (for a run on estimates: no later
    than the start of the best run inside the forecast, which is still open until then)."""
    chosen: ZoneSeries = zones[zone]
    searched = chosen.searched(job) if use_estimates else chosen.forecast
    # A batch under capacity (use_estimates False) is placed jointly: not replanned job by job. A
    # run reaching past the forecast is replanned when a forecast covers it (_coverage), not here.
    inside = intervals[-1][1] <= chosen.forecast.end_epoch
    coverage = _coverage(job, chosen.forecast, searched, intervals, now,
                         _ask_again(job, zones, intervals[0][0], now) if use_estimates and inside
                         else None)
    error, waited, ask = gate
    if waited:
        coverage = dc_replace(coverage, waited_for_forecast=True, replan_at=ask)
    elif coverage.estimated_start is not None:
        sooner = ask is not None and (coverage.replan_at is None or ask < coverage.replan_at)
        coverage = dc_replace(coverage, estimate_error=error,
                              replan_at=ask if sooner else coverage.replan_at)
    start = intervals[0][0]
    if coverage.replan_at is not None and coverage.replan_at > start:
        # Every path above may land after the start (a run longer than the forecast is never
        # covered before it starts; the best run inside the forecast, kept open, may start after
        # the run on estimates): a question then comes too late to move the run. Ask at its
        # start instead, the last moment a newer forecast can move it, unless that is too soon.
        coverage = dc_replace(coverage, replan_at=_ask_again(job, zones, start, now)
                              if use_estimates else None)
    return Schedule(job=job, zone=zone, intervals=intervals, mean_intensity=mean,
                    baseline=(_baseline(job, zones, use_estimates) if baseline is _NOT_SEARCHED
                              else baseline),
                    coverage=coverage, source=chosen, unavailable=failures)


def _baselines_together(jobs: Sequence[Job], zones: Zones) -> dict[int, Optional[Baseline]]:
    """_baseline(job, zones, True) of every job whose first zone has data, one NumPy pass per
    series (the same arithmetic: start_range's first start, window_mean's interpolation)."""
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


def _coverage(job: Job, forecast: ForecastSeries, searched: ForecastSeries,
              intervals: tuple[tuple[int, int], ...], now: int,
              ask_again: Optional[int] = None) -> Coverage:
    """What the provider's forecast covers of the allowed window, what of the choice rests on
    estimates (points flagged estimated, or anything past the forecast), and when to ask again:
    when a forecast covers the estimated part, else `ask_again` (_ask_again's answer)."""
    allowed_start, allowed_end = job.earliest_start, job.latest_end
    real_end = forecast.end_epoch
    covered = max(0, min(allowed_end, real_end) - max(allowed_start, forecast.start_epoch))
    end = intervals[-1][1]
    estimated = False
    if searched.estimated is not None:  # most series have no estimated point: skip the arrays
        boundaries = searched.boundaries()
        for a, b in intervals:  # the chosen intervals only, not the gaps between chunks
            overlaps = (boundaries[:-1] < b) & (boundaries[1:] > a)
            estimated = estimated or bool((overlaps & searched.estimated).any())
    span = estimated_span(searched, list(intervals), real_end)
    return Coverage(
        window_coverage=min(1.0, covered / max(1, allowed_end - allowed_start)),
        search_limited_by_horizon=allowed_end > searched.end_epoch,
        estimated=estimated or span is not None,
        estimated_start=None if span is None else span["start"],
        estimated_seconds=None if span is None else span["seconds"],
        replan_at=(replan_at(end, now, real_end, forecast.step_seconds) if end > real_end
                   else ask_again))


def _ask_again(job: Job, zones: Zones, start: int, now: int) -> Optional[int]:
    """horizon.ask_again_at for a run of `job` inside the forecasts starting at `start`: a newer
    forecast of any of the job's zones may show a cleaner run, so the shortest of them counts."""
    if start - now < MIN_REPLAN_SECONDS:  # ask_again_at's cheapest test, before any zone: most
        return None                       # runs of a batch start at once
    end = step = None
    for z in job.zones:  # a loop, not min() over generators: this runs for every answer
        one = zones[z]
        if isinstance(one, ZoneSeries):
            forecast = one.forecast
            end = forecast.end_epoch if end is None else min(end, forecast.end_epoch)
            step = forecast.step_seconds if step is None else min(step, forecast.step_seconds)
    return ask_again_at(start, now, job.latest_start, job.latest_end, end, step)
