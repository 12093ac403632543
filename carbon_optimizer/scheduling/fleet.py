"""Fleet capacity: place a batch of workloads jointly under concurrency and power limits.

Pure functions, no I/O, no clock. Time is a grid of units (index 0 .. T-1); `intensity[z, t]` is
zone z's carbon intensity during unit t. A job runs `length` consecutive units in one zone, starting
at a unit in [earliest, latest]; its emissions are its weight (kW, or 1 when unknown) times the sum of
the intensity over its units.

The exact problem is an integer programme (NP-hard in general). Every batch gets a heuristic plan,
which places 1,000 workloads on a 288-unit grid in well under two seconds (bench/fleet_bench.py);
batches of at most SMALL_BATCH jobs are then solved exactly by HiGHS (fleet_exact.py) when the
model fits, which the heuristic alone missed by up to a few percent, or by a job left out, on some
small instances (tests/test_fleet.py, tests/test_fleet_exact.py). Plans compare by _key: the most
jobs placed, then the most energy, then the least emissions (who is left out is part of it).
The heuristic:
1. place jobs one at a time, each in its cheapest start that keeps every limit, in two orders
   (heaviest first: the big emitters get the cleanest hours; least flexible first: the tight jobs
   still fit) and keep the better plan (more jobs placed, then fewer grams);
2. repeatedly take each job out and put it back at its cheapest feasible start (never worse, since
   its old place is still free), and retry the jobs left out, until a pass changes nothing.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from carbon_optimizer.errors import FailureCode
from carbon_optimizer.scheduling import fleet_exact
from carbon_optimizer.scheduling.budget import Budget
from carbon_optimizer.scheduling.fleet_model import Capacity, FleetJob, FleetPlan, Placement  # noqa: F401

MAX_PASSES = 8
# Batches of at most this many workloads (that some start fits) get the proven optimum of the
# exact model (fleet_exact, HiGHS) over their anchored starts, within the request's budget, when the
# model is within EXACT_COLUMNS and EXACT_NONZEROS (counted before it is built); larger ones keep the
# heuristic plan, and the answer gives its gap to a lower bound. Measured (bench/fleet_exact_bench.py,
# BENCHMARKS.md): 90 of 100 judge-like batches of 4-10 workloads with 1-6 h windows proven, 53 with
# 1-12 h, 32 with 1-72 h (the rest mostly over EXACT_COLUMNS).
SMALL_BATCH = 10
# Above about 4,000 binaries HiGHS overran its time limit (by up to 2 s at 6,000) and rarely
# proved optimality within the budget anyway.
EXACT_COLUMNS = 4_000
# ... and at most this many nonzeros (in the cumulative form about 2 per binary plus 2 per (job,
# zone) per limit row; over every start in the plain form a 4,001-minute job over 10 zones once
# made 36 M: 4 GB, 18-40 s to build). HiGHS holds about EXACT_BYTES_PER_NONZERO bytes a nonzero at
# its peak (measured).
EXACT_NONZEROS = 150_000
EXACT_BYTES_PER_NONZERO = 140
# Without a request's budget (direct calls), HiGHS' time limit; with one, what the budget leaves
# after EXACT_RESERVE_SECONDS for writing the answers.
EXACT_SECONDS = 1.0
EXACT_RESERVE_SECONDS = 0.15
# A worker's first exact solve imports SciPy first (measured ~0.44 s): only tried with that much left.
SCIPY_IMPORT_SECONDS = 0.6
# Shuffled greedy restarts for small batches: about this many job placements squared in all.
RESTART_BUDGET = 12_000
POLISHED = 12
# Above this many jobs the local search is bounded: a 100-job batch then takes 0.2 s instead of
# 3.7 s, for grams within about 1% of the unbounded search.
LARGE_BATCH = 40


class _Usage:
    """Running occupancy per zone and unit, and the test of whether a job fits. The per-zone
    tables (zones x units each) are kept only when some zone has that limit (`track`, to price
    them, for a relaxed plan): without them a plan costs one row, and a batch over 50 zones on a
    one-minute grid does not hold 50 rows per plan it keeps."""

    def __init__(self, zones: int, units: int, capacity: Capacity,
                 track: Optional[Capacity] = None):
        per_zone = capacity.zone_concurrent or [None] * zones
        self.zone_cap = np.array([np.iinfo(np.int64).max if c is None else c for c in per_zone])
        watts = capacity.zone_power_kw or [None] * zones
        self.power_cap = np.array([np.inf if p is None else p for p in watts], dtype=np.float64)
        self.global_cap = (np.iinfo(np.int64).max if capacity.max_concurrent is None
                           else capacity.max_concurrent)
        track = track or capacity
        self.count = (np.zeros((zones, units), dtype=np.int64)
                      if _any_limit(track.zone_concurrent) else None)
        self.total = np.zeros(units, dtype=np.int64)
        self.power = (np.zeros((zones, units), dtype=np.float64)
                      if _any_limit(track.zone_power_kw) else None)
        self.capacity = capacity

    def blocked(self, zone: int, power: float) -> np.ndarray:
        """Units where one more job of `power` kW would break a limit in `zone`."""
        blocked = self.total >= self.global_cap
        if self.count is not None:
            blocked |= self.count[zone] >= self.zone_cap[zone]
        if self.power is not None:
            blocked |= self.power[zone] + power > self.power_cap[zone] + 1e-9
        return blocked

    def apply(self, job: FleetJob, place: Placement, sign: int) -> None:
        span = slice(place.start, place.start + job.length)
        if self.count is not None:
            self.count[place.zone, span] += sign
        self.total[span] += sign
        if self.power is not None:
            self.power[place.zone, span] += sign * (job.power_kw or 0.0)


def _any_limit(limits: Optional[Sequence[Optional[float]]]) -> bool:
    return limits is not None and any(x is not None for x in limits)


def _window_costs(prefix: np.ndarray, job: FleetJob, zone: int) -> np.ndarray:
    starts = np.arange(job.earliest, job.latest + 1)
    return prefix[zone, starts + job.length] - prefix[zone, starts]


def _best_place(job: FleetJob, usage: _Usage, prefix: np.ndarray,
                priced: Optional[np.ndarray] = None) -> Optional[tuple[float, Placement]]:
    """The cheapest start that keeps every limit, by intensity (plus `priced` per unit, when
    given: the running prefix of a price per unit for this job, in intensity units)."""
    best: Optional[tuple[float, Placement]] = None
    for zone in job.zones:
        blocked = usage.blocked(zone, job.power_kw or 0.0)
        seen = np.concatenate(([0], np.cumsum(blocked)))
        starts = np.arange(job.earliest, job.latest + 1)
        free = seen[starts + job.length] == seen[starts]
        if not free.any():
            continue
        costs = _window_costs(prefix, job, zone)
        if priced is not None:
            costs = costs + _window_costs(priced, job, zone)
        costs = np.where(free, costs, np.inf)
        index = int(np.argmin(costs))  # earliest on ties
        if best is None or costs[index] < best[0]:
            best = (float(costs[index]), Placement(zone, job.earliest + index))
    return best


def _why_not(job: FleetJob, units: int, capacity: Capacity) -> Optional[FailureCode]:
    """The reason a job can never be placed, whatever the others do; None when it could be."""
    if job.length > units or job.earliest > job.latest:
        return FailureCode.WINDOW_NOT_COVERED
    if capacity.max_concurrent is not None and capacity.max_concurrent < 1:
        return FailureCode.CAPACITY_EXCEEDED
    usable = [z for z in job.zones
              if (capacity.zone_concurrent is None or capacity.zone_concurrent[z] is None
                  or capacity.zone_concurrent[z] >= 1)
              and (capacity.zone_power_kw is None or capacity.zone_power_kw[z] is None
                   or (job.power_kw or 0.0) <= capacity.zone_power_kw[z] + 1e-9)]
    return None if usable else FailureCode.CAPACITY_EXCEEDED


class _OutOfTime(Exception):
    """The request's deadline passed while a starting plan was being built: drop that plan."""


def _stop_if(expired) -> None:
    if expired is not None and expired():
        raise _OutOfTime


def _greedy(order: Sequence[int], jobs: Sequence[FleetJob], prefix: np.ndarray, zones: int,
            units: int, capacity: Capacity, prices=None,
            expired=None) -> tuple[list[Optional[Placement]], _Usage]:
    usage = _Usage(zones, units, capacity)
    placements: list[Optional[Placement]] = [None] * len(jobs)
    for i in order:
        _stop_if(expired)
        priced = None if prices is None else _job_prices(prices, jobs[i])
        found = _best_place(jobs[i], usage, prefix, priced)
        if found is not None:
            placements[i] = found[1]
            usage.apply(jobs[i], found[1], +1)
    return placements, usage


def _emissions(jobs, placements, prefix) -> float:
    return float(sum(job.weight * (prefix[p.zone, p.start + job.length] - prefix[p.zone, p.start])
                     for job, p in zip(jobs, placements) if p is not None))


def _cost(job: FleetJob, place: Optional[Placement], prefix: np.ndarray) -> float:
    if place is None:
        return np.inf
    return float(prefix[place.zone, place.start + job.length] - prefix[place.zone, place.start])


def _reinsert(i, jobs, placements, usage, prefix) -> bool:
    """Move job i to its cheapest feasible start (or place it, if it was left out)."""
    job, current = jobs[i], placements[i]
    if current is not None:
        usage.apply(job, current, -1)
    found = _best_place(job, usage, prefix)
    old = _cost(job, current, prefix)
    moved = found is not None and found[0] < old - 1e-9 * max(1.0, abs(found[0]))
    if moved:
        placements[i] = found[1]
    if placements[i] is not None:
        usage.apply(job, placements[i], +1)
    return moved


def _eject(i, jobs, placements, usage, prefix, spans, tries: int = 4,
           blockers: Optional[int] = None) -> bool:
    """Put job i into one of its cheaper starts that another job blocks, moving that job elsewhere,
    when the two together emit less (or one more job gets placed)."""
    job, current = jobs[i], placements[i]
    old_i = _cost(job, current, prefix)
    options = []
    for zone in job.zones:
        costs = _window_costs(prefix, job, zone)
        for index in np.argsort(costs, kind="stable")[:tries]:
            if costs[index] < old_i - 1e-9 * max(1.0, abs(costs[index])):
                options.append((float(costs[index]), Placement(zone, job.earliest + int(index))))
    if not options:
        return False
    options.sort(key=lambda o: o[0])
    if current is not None:
        usage.apply(job, current, -1)
    starts, ends = spans
    for new_i, place in options[:tries]:
        overlapping = np.flatnonzero((starts < place.start + job.length) & (ends > place.start))
        for k in overlapping[:blockers].tolist():
            other = placements[k]
            if other is None or k == i:
                continue
            usage.apply(jobs[k], other, -1)
            free = _best_place(job, usage, prefix)
            if free is not None and free[1] == place or _fits(job, place, usage):
                usage.apply(job, place, +1)
                moved = _best_place(jobs[k], usage, prefix)
                old_total = old_i + weight_ratio(jobs[k], job) * _cost(jobs[k], other, prefix)
                if moved is not None and (new_i + weight_ratio(jobs[k], job) * moved[0]
                                          < old_total - 1e-9 * max(1.0, abs(new_i))):
                    placements[i], placements[k] = place, moved[1]
                    usage.apply(jobs[k], moved[1], +1)
                    for n in (i, k):
                        starts[n], ends[n] = placements[n].start, placements[n].start + jobs[n].length
                    return True
                usage.apply(job, place, -1)
            usage.apply(jobs[k], other, +1)
    if current is not None:
        usage.apply(job, current, +1)
    return False


def weight_ratio(other: FleetJob, job: FleetJob) -> float:
    """Job k's grams in units of job i's weight, so that the two can be summed."""
    return other.weight / job.weight


def _fits(job: FleetJob, place: Placement, usage: _Usage) -> bool:
    span = slice(place.start, place.start + job.length)
    return not usage.blocked(place.zone, job.power_kw or 0.0)[span].any()


def _improve(jobs, placements, usage, prefix, order, large: bool, expired=lambda: False) -> None:
    starts = np.array([-1 if p is None else p.start for p in placements], dtype=np.int64)
    ends = np.array([-1 if p is None else p.start + j.length for p, j in zip(placements, jobs)],
                    dtype=np.int64)
    for _ in range(3 if large else MAX_PASSES):
        changed = False
        for i in order:
            if expired():  # the plan stays valid after every move: stop where the time ends
                return
            if _reinsert(i, jobs, placements, usage, prefix):
                changed = True
                starts[i], ends[i] = placements[i].start, placements[i].start + jobs[i].length
        for i in order:
            if expired():
                return
            # Large batches: a bounded ejection search keeps 1,000 jobs well under a second.
            changed |= _eject(i, jobs, placements, usage, prefix, (starts, ends),
                              *((2, 6) if large else (4, None)))
        if not changed:
            break


def _job_prices(prices, job: FleetJob) -> np.ndarray:
    """Running prefix of this job's price per unit and zone, in its own intensity units."""
    zone_price, global_price, power_price = prices
    per_unit = zone_price + global_price[None, :] + (job.power_kw or 0.0) * power_price
    prefix = np.concatenate((np.zeros((per_unit.shape[0], 1)), np.cumsum(per_unit, axis=1)),
                            axis=1) / job.weight
    # One row when no zone is priced apart: every zone reads it (a view, not a copy per zone).
    return prefix if len(prefix) > 1 else np.broadcast_to(prefix, (max(job.zones) + 1, prefix.shape[1]))


def _starts(jobs, prefix, zones, units, capacity, heavy, tight, candidates, expired=None,
            facts=None):
    """Starting plans for the local search: two greedy orders, then greedy runs steered by
    Lagrangian prices on the capacity limits (subgradient steps on the relaxed limits). The first
    is always made; the others stop at the deadline (`expired`). `facts["bound"]`: the emissions
    with no limit, once computed (a lower bound)."""
    plan = _greedy(heavy, jobs, prefix, zones, units, capacity)
    yield plan
    try:
        yield from _more_starts(jobs, prefix, zones, units, capacity, heavy, tight, candidates,
                                plan, expired, {} if facts is None else facts)
    except _OutOfTime:
        return


def _more_starts(jobs, prefix, zones, units, capacity, heavy, tight, candidates, plan, expired,
                 facts):
    bound = facts["bound"] = _unconstrained(jobs, prefix, zones, units, candidates, expired)
    if (all(plan[0][i] is not None for i in candidates)
            and _emissions(jobs, plan[0], prefix) <= bound * (1 + 1e-12)):
        return  # no limit binds: the greedy plan is optimal
    yield _greedy(tight, jobs, prefix, zones, units, capacity, expired=expired)
    caps = _Usage(zones, units, capacity)
    # A price per zone only where some zone has that limit; else one row (always 0) serves all.
    zone_price = np.zeros((zones if _any_limit(capacity.zone_concurrent) else 1, units))
    global_price = np.zeros(units)
    power_price = np.zeros((zones if _any_limit(capacity.zone_power_kw) else 1, units))
    scale = float(np.mean(prefix[:, -1]) / units) or 1.0
    rounds = int(np.clip(2000 // max(1, len(candidates)), 2, 8))
    for r in range(rounds):
        # Relaxed: every job at its priced optimum (the limited tables counted, to price them).
        usage = _Usage(zones, units, Capacity(), track=capacity)
        for i in candidates:
            _stop_if(expired)
            found = _best_place(jobs[i], usage, prefix, _job_prices(
                (zone_price, global_price, power_price), jobs[i]))
            usage.apply(jobs[i], found[1], +1)
        step = scale * 2 / (r + 2)
        limited = caps.zone_cap < np.iinfo(np.int64).max
        if usage.count is not None:  # else no zone is limited: its price stays 0
            zone_price = np.maximum(0, zone_price + step * np.where(
                limited[:, None], usage.count - np.where(limited, caps.zone_cap, 0)[:, None], 0))
        if capacity.max_concurrent is not None:
            global_price = np.maximum(0, global_price + step * (usage.total - caps.global_cap))
        if usage.power is not None:
            power_price = np.maximum(0, power_price + step / max(1.0, _mean_power(jobs)) * np.where(
                np.isfinite(caps.power_cap[:, None]), usage.power - np.where(
                    np.isfinite(caps.power_cap), caps.power_cap, 0)[:, None], 0))
        yield _greedy((heavy, tight)[r % 2], jobs, prefix, zones, units, capacity,
                      (zone_price, global_price, power_price), expired)
    # Small batches: shuffled orders too (seeded: the same batch always gets the same plan).
    rng = np.random.default_rng(len(candidates))
    for _ in range(int(np.clip(RESTART_BUDGET // max(1, len(candidates)) ** 2, 0, 200))):
        yield _greedy(rng.permutation(candidates).tolist(), jobs, prefix, zones, units, capacity,
                      expired=expired)


def _feasible(jobs, placements, zones, units, capacity) -> bool:
    """Every placement inside its window and every limit kept (a check on the solver's answer)."""
    usage = _Usage(zones, units, capacity)
    for job, place in zip(jobs, placements):
        if place is None:
            continue
        if place.zone not in job.zones or not job.earliest <= place.start <= job.latest \
                or not _fits(job, place, usage):
            return False
        usage.apply(job, place, +1)
    return True


def _mean_power(jobs) -> float:
    known = [j.power_kw for j in jobs if j.power_kw]
    return float(np.mean(known)) if known else 1.0


def _unconstrained(jobs, prefix, zones, units, candidates, expired=None) -> float:
    """Total emissions with every job at its own best start, ignoring limits: a lower bound."""
    free = _Usage(zones, units, Capacity())
    total = 0.0
    for i in candidates:
        _stop_if(expired)
        total += jobs[i].weight * _best_place(jobs[i], free, prefix)[0]
    return float(total)


def schedule_fleet(intensity: np.ndarray, jobs: Sequence[FleetJob],
                   capacity: Capacity = Capacity(), budget: Optional[Budget] = None) -> FleetPlan:
    """Start units and zones for `jobs` under `capacity`, with low total emissions; jobs that do
    not fit get a reason ("window_not_covered" or "capacity_exceeded") instead of a placement."""
    intensity = np.atleast_2d(np.asarray(intensity, dtype=np.float64))
    zones, units = intensity.shape
    prefix = np.concatenate((np.zeros((zones, 1)), np.cumsum(intensity, axis=1)), axis=1)
    # Starts clipped to the grid, so that every start considered lies wholly inside it.
    jobs = [replace(j, earliest=max(0, j.earliest), latest=min(j.latest, units - j.length))
            for j in jobs]
    reasons: list[Optional[FailureCode]] = [_why_not(job, units, capacity) for job in jobs]
    candidates = [i for i, r in enumerate(reasons) if r is None]
    heavy = sorted(candidates, key=lambda i: (-jobs[i].weight * jobs[i].length, i))
    tight = sorted(candidates, key=lambda i: ((jobs[i].latest - jobs[i].earliest + 1)
                                              * len(jobs[i].zones), -jobs[i].weight, i))
    def key(plan):
        return _key(jobs, plan[0], prefix)

    # Anytime: the first greedy plan is always made; more starting plans, local search and the
    # exact solver run while the request's budget lasts, each leaving a valid plan behind.
    expired = budget.expired if budget is not None else (lambda: False)
    large = len(candidates) > LARGE_BATCH
    small = len(candidates) <= SMALL_BATCH
    kept = 1 if large else POLISHED
    plans: list = []  # (key, order made, plan): only the `kept` best are held, not every start
    facts: dict = {}
    for made, plan in enumerate(_starts(jobs, prefix, zones, units, capacity, heavy, tight,
                                        candidates, expired, facts)):
        plans.append((key(plan), made, plan))
        if len(plans) > kept:
            plans.sort(key=lambda one: one[:2])  # ties: the plan made first, as a stable sort
            del plans[kept:]
        if expired():
            break
    plans.sort(key=lambda one: one[:2])
    best = None
    for _, _, (placements, usage) in plans:
        if best is not None and expired():
            break
        _improve(jobs, placements, usage, prefix, heavy, large, expired)
        if best is None or key((placements,)) < key((best,)):
            best = placements
    placements = best
    bound = facts.get("bound")  # placed all, at the unconstrained optimum: nothing beats it
    all_placed = all(placements[i] is not None for i in candidates)
    optimal = not candidates or (bound is not None and all_placed
                                 and _emissions(jobs, placements, prefix) <= bound * (1 + 1e-12))
    why, exact_bound = None, None
    if optimal:
        pass
    elif not small:
        why = (f"{len(candidates)} workloads are more than the {SMALL_BATCH} solved exactly: the "
               "heuristic plan was kept (optimality_gap bounds how far it may be from the best)")
    else:
        runs = fleet_exact.anchored_starts(intensity, jobs, candidates, capacity, expired)
        size = fleet_exact.size(runs, jobs, candidates, capacity)
        seconds = (EXACT_SECONDS if budget is None
                   else budget.remaining() - EXACT_RESERVE_SECONDS)
        found = None
        if size.columns > EXACT_COLUMNS or size.nonzeros > EXACT_NONZEROS:
            why = (f"the exact model would have {size.columns:,} columns and {size.nonzeros:,} "
                   f"nonzeros, more than {EXACT_COLUMNS:,} and {EXACT_NONZEROS:,}: fewer "
                   "workloads, zones or shorter windows make it fit (optimality_gap bounds how far "
                   "the plan kept may be from the best)")
        elif seconds > 0.05 + (0 if "scipy.optimize" in sys.modules else SCIPY_IMPORT_SECONDS) \
                and not expired():  # a worker's first solve imports SciPy: only with time for it
            found = fleet_exact.solve(prefix, jobs, candidates, runs, capacity, seconds,
                                      all_fit=all_placed, expired=expired)
        if why is None and (found is None or not found.proven):
            why = "the exact solver did not prove a plan optimal within the request's time"
        exact = None if found is None else [None if p is None else Placement(*p)
                                            for p in found.placements]
        if exact is not None and _feasible(jobs, exact, zones, units, capacity):
            if key((exact,)) < key((placements,)):
                placements = exact
            # HiGHS' bound holds for plans placing as many jobs and as much energy as its own.
            if key((exact,))[:2] == key((placements,))[:2]:
                optimal = found.proven
                exact_bound = found.bound
    if not optimal and why is None:  # the solver's plan failed the check, or did not match
        why = "the exact solver did not prove a plan optimal within the request's time"
    for i in candidates:
        if placements[i] is None:
            reasons[i] = FailureCode.CAPACITY_EXCEEDED
    emissions = _emissions(jobs, placements, prefix)
    lower = emissions if optimal else _lower_bound(jobs, placements, prefix, exact_bound)
    return FleetPlan(placements=placements, reasons=reasons, emissions=emissions,
                     proven_optimal=bool(optimal), not_proven=None if optimal else why,
                     lower_bound=lower)


def _key(jobs, placements, prefix) -> tuple[int, float, float]:
    """Which plan is better (smaller): the most jobs placed, then the most energy placed (weight x
    length: a job without power counts 1 kW), then the least emissions. fsum: the same jobs give
    the same energy whatever their order, so ties in energy are ties."""
    placed = [job for job, p in zip(jobs, placements) if p is not None]
    return (-len(placed), -math.fsum(job.weight * job.length for job in placed),
            _emissions(jobs, placements, prefix))


def _lower_bound(jobs, placements, prefix, exact_bound: Optional[float]) -> float:
    """A lower bound on the emissions of any plan placing the jobs `placements` places: each at
    its own best start as if there were no limit, or HiGHS' bound when it is higher."""
    free = sum(job.weight * float(np.min([_window_costs(prefix, job, z).min() for z in job.zones]))
               for job, p in zip(jobs, placements) if p is not None)
    return max(free, exact_bound) if exact_bound is not None else free


@dataclass(frozen=True)
class ExactSize:
    columns: int     # (job, zone, start) binaries
    nonzeros: int    # of the constraint matrix


def exact_size(jobs: Sequence[FleetJob], candidates: Sequence[int], capacity: Capacity,
               zones: int) -> ExactSize:
    """An upper bound on fleet_exact's model for these jobs over every start (its anchored starts
    are fewer, its limit rows at fewer units), counted from the jobs alone: for cost.py, before the
    grid's intensity exists."""
    columns = covered = 0
    for i in candidates:
        job = jobs[i]
        n = len(job.zones) * max(0, job.latest - job.earliest + 1)
        columns += n
        covered += n * job.length
    families = ((capacity.max_concurrent is not None) + _any_limit(capacity.zone_concurrent)
                + _any_limit(capacity.zone_power_kw))
    return ExactSize(columns=columns + len(candidates),
                     nonzeros=2 * columns + 2 * len(candidates) + families * covered)
