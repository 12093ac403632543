"""What a request costs, estimated before any solving: its solving work (refused over the budget's
work cap) and its peak memory (refused over the budget's memory cap, and reserved from the worker's
pool). Pure: no I/O, no clock."""

from __future__ import annotations

from functools import reduce
from typing import Optional, Sequence

from carbon_optimizer.errors import TooLarge
from carbon_optimizer.scheduling.budget import MIB, WORK_PER_SECOND, Budget, Cost, RequestCost
from carbon_optimizer.scheduling.chunks import chunk_grid, search_bytes
from carbon_optimizer.scheduling.fleet import (
    EXACT_BYTES_PER_NONZERO, EXACT_COLUMNS, EXACT_NONZEROS, LARGE_BATCH, POLISHED, SMALL_BATCH,
    exact_size,
)
from carbon_optimizer.scheduling.fleet_grid import FleetGrid, lay_out
from carbon_optimizer.scheduling.horizon import reaches_past_forecast
from carbon_optimizer.scheduling.model import CapacityLimits, Job, ZoneSeries, Zones
from carbon_optimizer.scheduling.window_batch import pass_candidates
from carbon_optimizer.timeseries import ForecastSeries

# Work in budget units (about 10 ns each here; measured by bench/worst_requests.py): a window
# search over n points about 2,500 + 5 n; a chunk search 5,000 + 5 n for its contiguous fallback,
# plus DP_WORK_PER_UNIT a unit (the DP's Python loop) and a work unit per DP_STATES_PER_WORK states for an exact
# search, or 4,000 + 40 a unit for a sort; the fleet's first plan 10 per (job, zone, start); the fleet's later passes and its
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
# The chunk DP (chunks._dp), measured by bench/chunks_bench.py: about 10 us a unit of its loop
# (17 us with two other jobs on the machine) and 2-4 ns a state of its band (0.1 s for 2,880 units
# x 7 counts x 1,401 minutes used; 0.19 s for a 68 M-state search); 5 ns a state is counted (a work
# unit per DP_STATES_PER_WORK states), 10 us a unit twice over. A window past the forecast is
# searched twice (the risk gate searches inside the forecast again): at 10 ns a state that
# counted a day's run in a 3-day window in 10 chunks at 1.5 s, where it takes 0.4 s.
DP_WORK_PER_UNIT = 2_000
DP_STATES_PER_WORK = 2
# Estimates past the forecast: the replay choosing among estimators (estimators.choose): 3 units per origin and point
# known or estimated (measured 2.3 ms for 10 days hourly + 3 days, 16 ms for 30 days of 5-minute
# points + 14 days), holding two replays' signed errors (8 bytes per origin and estimated point).
_REPLAY_WORK_PER_CELL = 3
_REPLAY_BYTES_PER_CELL = 16
# The gate's replay of a choice holds a few arrays a cell (errors, estimates, sums, their indices).
_GATE_BYTES_PER_CELL = 48
# Candidate starts the planner's batched window search takes in one pass: bounds the pass's arrays
# (_PASS_CANDIDATE_BYTES each: 5 MB) when a batch is large, and how long it runs between two looks
# at the deadline.
PASS_CANDIDATES = 50_000


def _job_cost(job: Job, zones: Sequence[ZoneSeries], gated: bool = True) -> Cost:
    """One job's search over its zones with data, then its risk gate (`gated`: the first job of
    the request with its search_key; planner.plan_all gates the others with it): the search again
    inside the forecasts, and the replayed error of the chosen run's mean, in its one zone (the
    costliest zone's replay counts)."""
    cost = reduce(Cost.then, (_search_cost(job, zone.searched(job)) for zone in zones), Cost())
    # The gate runs for a run past the forecast: only where some zone was extended.
    if not gated or not any(zone.extended is not None and reaches_past_forecast(job, zone)
                            for zone in zones):
        return cost
    replays = [_replay_cost(job, zone) for zone in zones]
    inside = reduce(Cost.then, (_search_cost(job, zone.forecast) for zone in zones), Cost())
    return cost.then(inside).then(max(replays, key=lambda r: (r.work, r.memory)))


def _search_cost(job: Job, series: ForecastSeries) -> Cost:
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
                grid, cells = found
                memory = search_bytes(grid, job.duration, min_chunk, job.max_chunks)
                if cells == 0:
                    return Cost(9_000 + 5 * points + 40 * grid.count, memory).then(contiguous)
                return Cost(5_000 + 5 * points + DP_WORK_PER_UNIT * grid.count
                            + cells // DP_STATES_PER_WORK, memory).then(contiguous)
        return contiguous
    return window


def _replay_cost(job: Job, zone: ZoneSeries) -> Cost:
    """The replayed error of a run's mean on estimates: its choice replayed by every origin (a row
    per origin, a column per lead of the window past the forecast; a sort per row for chunks),
    twice (the higher quantile)."""
    replay = zone.error_replay
    if not job.extend_horizon or zone.extended is None or replay is None:
        return Cost()
    window = (job.latest_end - job.earliest_start) // zone.forecast.step_seconds + 2
    cells = replay.signed.shape[0] * min(replay.signed.shape[1], window)
    per_cell = 40 if job.interruptible else 10
    return Cost(2 * per_cell * cells, _GATE_BYTES_PER_CELL * cells)


def edge_cost(jobs: Sequence[Job]) -> Cost:
    """What parsing the request and writing its answers hold and take, beside the solving."""
    locations = sum(len(job.zones) for job in jobs)
    return Cost(_EDGE_WORK + _EDGE_WORK_PER_WORKLOAD * len(jobs) + _EDGE_WORK_PER_LOCATION * locations,
                _EDGE_BYTES + _EDGE_PER_WORKLOAD * len(jobs) + _EDGE_PER_LOCATION * locations)


def series_cost(jobs: Sequence[Job], zones: Zones) -> Cost:
    """The zones' series the engine gathered (the work of estimates past a forecast included:
    done before the planner, counted here)."""
    seen = {z: zones[z] for job in jobs for z in job.zones if isinstance(zones[z], ZoneSeries)}
    return Cost(sum(_SERIES_WORK + (0 if one.extended is None else _EXTENSION_WORK)
                    + _replay_cells(one, known=True) * _REPLAY_WORK_PER_CELL
                    for one in seen.values()),
                sum(_SERIES_POINT_BYTES * (len(one.forecast.values) + (
                    0 if one.extended is None else len(one.extended.values)))
                    + _replay_cells(one) * _REPLAY_BYTES_PER_CELL
                    for one in seen.values()))


def _replay_cells(zone: ZoneSeries, known: bool = False) -> int:
    """Origins x estimated points of the zone's replay (x points known and estimated: its work)."""
    replay = zone.error_replay
    if replay is None:
        return 0
    origins, leads = replay.signed.shape
    return origins * (leads + (replay.known_points if known else 0))


def estimate(jobs: Sequence[Job], zones: Zones, budget: Budget,
             capacity: Optional[CapacityLimits] = None) -> RequestCost:
    """What planning these jobs will cost (plan_all, or plan_batch under `capacity`), before any
    of it is done: its solving work (refused over budget.work) and the request's peak memory
    (refused over budget.memory). Raises TooLarge naming what to change."""
    if capacity is not None:
        return estimate_fleet(jobs, zones, capacity, budget)
    first = {job.search_key: i for i, job in reversed(list(enumerate(jobs)))}
    costs = [_job_cost(job, [zones[z] for z in job.zones if isinstance(zones[z], ZoneSeries)],
                       gated=first[job.search_key] == i)
             for i, job in enumerate(jobs)]
    work = sum(c.work for c in costs)
    # A batched pass (_search_together) holds its candidates' arrays; the searches one by one,
    # the largest of them.
    candidates = min(PASS_CANDIDATES, sum(_candidates(job, zones) for job in jobs))
    solving = Cost(work, max([c.memory for c in costs] + [_PASS_CANDIDATE_BYTES * candidates]))
    edges = edge_cost(jobs).beside(series_cost(jobs, zones))
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
            count += pass_candidates(series, job.duration, job.earliest_start, job.latest_start)
    return count


# The fleet's memory (bytes), by what it holds at once: intensity and prefix sums (zones x units),
# the plans it keeps (one row of running totals each, and a zones x units table per kind of
# per-zone limit), the prices of the Lagrangian starts and a job's priced prefix (four
# temporaries), and the exact model of a small batch (at most its size over every start,
# fleet.exact_size, and at most the nonzeros the solver builds).
_FLEET_JOB_BYTES = 2_000


def _fleet_memory(grid: FleetGrid) -> int:
    zones, units = len(grid.names), grid.units
    capacity = grid.capacity
    per_zone = sum(any(x is not None for x in limits)
                   for limits in (capacity.zone_concurrent, capacity.zone_power_kw))
    kept = (1 if len(grid.fleet_jobs) > LARGE_BATCH else POLISHED) + 4  # kept, made, limits, relaxed
    plans = kept * 8 * units * (1 + per_zone * zones)
    priced_rows = zones if per_zone else 1
    prices = 8 * (units + 1) * (2 * priced_rows + 4 * priced_rows + 1)
    # The exact model (a small batch only): its anchored starts are not known before the grid's
    # intensity, so the count over every start bounds it, and the solver builds none over
    # EXACT_NONZEROS. Finding the anchored starts (fleet_exact.anchored_starts) holds booleans per
    # job and unit: a mask per zone, and per limit group (one under a global limit, else up to one
    # a zone) the chained starts, every job's starts and ends, and a copy of those without it.
    exact = 0
    if len(grid.fleet_jobs) <= SMALL_BATCH:
        size = exact_size(grid.fleet_jobs, range(len(grid.fleet_jobs)), capacity, zones)
        groups = 1 if capacity.max_concurrent is not None else zones
        anchored = len(grid.fleet_jobs) * (units + 1) * (zones + 5 * groups)
        exact = (EXACT_BYTES_PER_NONZERO * min(size.nonzeros, EXACT_NONZEROS)
                 + anchored + 40 * min(size.columns, EXACT_COLUMNS))
    return (16 * zones * (units + 1) + plans + prices + 64 * units
            + _FLEET_JOB_BYTES * len(grid.fleet_jobs) + exact)


def estimate_fleet(jobs: Sequence[Job], zones: Zones, capacity: CapacityLimits, budget: Budget,
                   grid: Optional[FleetGrid] = None) -> RequestCost:
    grid = lay_out(jobs, zones, capacity) if grid is None else grid
    units, names = grid.units, grid.names
    first_plan = 10 * sum(len(j.zones) * max(0, j.latest - j.earliest + 1) for j in grid.fleet_jobs)
    work = first_plan + 20 * units * len(names) if grid.live else 0
    edges = edge_cost(jobs).beside(series_cost(jobs, zones))
    memory = edges.memory + (_fleet_memory(grid) if grid.live else 0)
    if work > budget.work:
        raise TooLarge(f"placing this batch under capacity would need about "
                       f"{first_plan / WORK_PER_SECOND:.1f} s for a first plan, more than the "
                       f"{budget.seconds:g} s one request may use; send fewer workloads, fewer "
                       "zones or shorter windows")
    if memory > budget.memory:
        raise TooLarge(f"placing this batch under capacity would need about {memory / MIB:.0f} MiB "
                       f"of working memory, more than the {budget.memory / MIB:.0f} MiB one request "
                       f"may use ({len(names)} zones x {units:,} steps of {grid.unit // 60} min "
                       "on the batch's grid): send fewer zones, durations and windows in whole "
                       "hours (a coarser grid), or fewer workloads")
    return RequestCost(work=work, memory=memory, edge_work=edges.work, anytime=bool(grid.live))
