"""Which contiguous window-search path each request shape takes, and what each path saves.

    .venv/bin/python bench/optimizer_bench.py [--pairs N] [--quick] [--json out.json]

The requests are built as the service builds them: a JSON body through the web request models
(`Workload` / `WorkloadBatch`), its locations resolved by the engine, `to_job` with the service's
defaults and "now" at arbitrary seconds (with microseconds, as the clock gives it), then
`CarbonEngine.optimize` over the providers the service builds (`build_provider`): the built-in demo
(hourly, 72 h) and, when ../shared/data holds the data-portal exports, the file provider replaying
them (FILE_REPLAY, hourly, 24 h forecasts, "as_of" at arbitrary seconds). Shapes: the README's
request, the CI client's, batches of 1/8/50/500 workloads, 1 to 4 zones, durations in odd minutes
and whole hours, windows from 2 h to 72 h (past the forecast: estimates and the risk gate),
interruptible or not, and windows a user gives on whole hours (earliest_start and deadline).

Census: every path function is wrapped (in this process only) and counted over several "now"s per
shape, in (workload, zone) searches: `batch` answered in window_batch.best_windows's pass
(planner._search_together), `whole` window._whole_steps, `grid` window._on_grid, `general` best_window's interpolating path, `none` no
run fits. `base` counts baselines made in planner._baselines_together's pass.

Timing: for each path a shape calls, the planner (cost.estimate then planner.plan_all, as the
engine calls them, on the series the engine gathered for the shape's first "now"s) with the path
as it is, and with it disabled: replaced by what the service would run without it (the plain
single search). Samples come in adjacent pairs, one with and one without (the order alternating),
each the CPU time (process_time) of enough calls to last 10 ms; the median of the pairs' ratios is
reported with its quartiles: `without/with` above 1 means the path saves that share of the
planner's time, below 1 that trying it costs. Budgets keep the service's work cap but a deadline
no run reaches. The two answers are compared (`same`): a path whose removal changed an answer
would not be a fair test.
`engine ms` is one whole CarbonEngine.optimize call (data gathered as well) with every path on.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
import zlib
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from carbon_optimizer.data.cache import ForecastCache  # noqa: E402
from carbon_optimizer.data.providers.factory import build_provider  # noqa: E402
from carbon_optimizer.engine import CarbonEngine  # noqa: E402
from carbon_optimizer.scheduling import chunks, cost as request_cost, planner, window  # noqa: E402
from carbon_optimizer.scheduling.budget import WORK_PER_SECOND, Budget  # noqa: E402
from carbon_optimizer.scheduling.model import Run, Schedule  # noqa: E402
from carbon_optimizer.settings import Settings, load_settings  # noqa: E402
from carbon_optimizer.timeseries import rfc3339  # noqa: E402
from carbon_optimizer.web import request_models  # noqa: E402

RECORDED = ROOT.parent / "shared" / "data" / "carbon-intensity"
# CPU time of this process, not wall time: the machine is shared (every search is single-threaded).
clock = time.process_time


# -- the service, as it is built ------------------------------------------------------------------

@dataclass
class Service:
    name: str
    settings: Settings
    engine: CarbonEngine
    nows: Callable[[np.random.Generator], datetime]  # a "now" this service is asked at


def budget(settings: Settings) -> Budget:
    """The service's budget (its work and memory caps: the same requests are refused), with a
    deadline no run here reaches: on a shared machine a request cut short at its deadline would
    answer deadline_exceeded in one timing and not in the other."""
    return Budget(seconds=60, work=int(settings.solve_timeout_seconds * WORK_PER_SECOND))


class _NoKey:
    """The secret store's shape, holding no Electricity Maps key (build_provider reads it)."""
    backend = "none"

    @staticmethod
    def current() -> SimpleNamespace:
        return SimpleNamespace(electricity_maps_api_key=None)


def _service(name: str, environ: dict[str, str], first: datetime, days: float) -> Service:
    settings = load_settings(environ)
    cache = ForecastCache(redis_url=None, ttl=settings.cache_ttl_seconds,
                          stale_ttl=settings.cache_stale_ttl_seconds, lock_seconds=1, failure_backoff=0)
    engine = CarbonEngine(build_provider(settings, _NoKey()), cache,
                          budget=lambda: budget(settings))

    def nows(rng: np.random.Generator) -> datetime:  # arbitrary seconds and microseconds
        return first + timedelta(seconds=float(rng.uniform(0, days * 86400)))
    return Service(name, settings, engine, nows)


def services() -> dict[str, Service]:
    found = {"demo": _service("demo", {"CARBON_PROVIDER": "demo"},
                              datetime(2026, 11, 23, tzinfo=timezone.utc), 7)}
    if RECORDED.is_dir():
        found["recorded"] = _service("recorded", {
            "CARBON_PROVIDER": "file", "CARBON_DATA_DIR": str(RECORDED), "FILE_REPLAY": "true",
            "DEFAULT_ZONES": "ES"}, datetime(2022, 2, 1, tzinfo=timezone.utc), 300)
    return found


def jobs_of(service: Service, body: dict, now: datetime):
    """The Jobs the service makes of `body` at `now` (request_jobs.jobs_asked's steps, without
    HTTP), and the moment it answers as of (`as_of` on a replaying service, else now)."""
    settings, engine = service.settings, service.engine
    if "workloads" in body:
        batch = request_models.WorkloadBatch.model_validate(body)
        workloads, as_of = batch.workloads, batch.as_of
    else:
        workloads = [request_models.Workload.model_validate(body)]
        as_of = workloads[0].as_of
    now = as_of.astimezone(timezone.utc) if as_of is not None else now
    asked = [z for workload in workloads for z in workload.zones or settings.default_zones]
    resolved = engine.resolve_locations(asked, suggested=0).zones
    jobs = []
    for workload in workloads:
        zones: dict[str, None] = {}
        for one in workload.zones or settings.default_zones:
            zones.setdefault(resolved[one])
        jobs.append(workload.to_job(now, settings.default_zones,
                                    timedelta(hours=settings.default_window_hours), zones=list(zones)))
    return jobs, now


# -- what users send -------------------------------------------------------------------------------

def _iso(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return "PT" + (f"{hours}H" if hours else "") + (f"{rest}M" if rest else "")


def _on_the_hour(now: datetime, hours_ahead: int) -> datetime:
    """A whole hour a user would write: `hours_ahead` after the next one."""
    return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1 + hours_ahead)


DEMO_ZONES = ("DE", "FR", "PL", "NL", "ES", "SE")


def _mixed(count: int, seed: int, zones=DEMO_ZONES) -> list[dict]:
    """A batch as a CI matrix sends it: 1-4 zones each, durations mostly in odd minutes, windows
    from 2 h to 72 h. Contiguous only: an interruptible workload's chunk search takes 20-250 ms
    (its window search some 50 us of it), so in a batch it would only bury the paths in noise;
    interruptible requests are their own shape."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        k = int(rng.choice([1, 1, 2, 2, 3, 4]))
        minutes = int(rng.choice([17, 25, 45, 47, 60, 90, 120, 137, 180, 240, 373]))
        delay = int(rng.choice([2, 2, 6, 6, 12, 24, 24, 48, 72]))
        one = {"id": f"w{i}", "duration": _iso(minutes), "max_delay": f"PT{delay}H",
               "zones": [str(z) for z in rng.choice(zones, size=min(k, len(zones)), replace=False)]}
        out.append(one)
    return out


def _mixed_on_the_hour(count: int, seed: int, now: datetime) -> list[dict]:
    """A batch whose windows are given on whole hours (earliest_start, deadline)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        hours = int(rng.choice([1, 2, 3, 4]))
        start = _on_the_hour(now, int(rng.integers(0, 4)))
        end = start + timedelta(hours=hours + int(rng.choice([2, 6, 12, 24])))
        out.append({"id": f"w{i}", "duration": f"PT{hours}H", "earliest_start": rfc3339(start),
                    "deadline": rfc3339(end),
                    "zones": [str(z) for z in rng.choice(DEMO_ZONES, size=int(rng.integers(1, 5)),
                                                         replace=False)]})
    return out


@dataclass(frozen=True)
class Shape:
    name: str
    service: str
    body: Callable[[datetime], dict]
    nows: int = 12       # "now"s the census counts over
    timed_nows: int = 3  # of those, the requests each timing runs (one after another)


README = {"duration": "PT2H", "zones": ["DE", "FR"], "max_delay": "PT12H", "power_kw": 3}
SHAPES = [
    Shape("README: PT2H DE,FR max_delay 12h", "demo", lambda now: README),
    Shape("client: PT45M DE,FR max_delay 6h", "demo",
          lambda now: {"id": "nightly-e2e", "duration": "PT45M", "zones": ["DE", "FR"], "max_delay": "PT6H"}),
    Shape("client: PT30M 2 cloud regions 2h", "demo",
          lambda now: {"duration": "PT30M", "zones": ["aws:eu-west-3", "aws:eu-central-1"],
                       "max_delay": "PT2H"}),
    Shape("1 zone PT47M default 24h", "demo", lambda now: {"duration": "PT47M"}),
    Shape("1 zone PT2H max_delay 2h", "demo", lambda now: {"duration": "PT2H", "max_delay": "PT2H"}),
    Shape("4 zones PT2H max_delay 24h", "demo",
          lambda now: {"duration": "PT2H", "zones": list(DEMO_ZONES[:4]), "max_delay": "PT24H"}),
    Shape("4 zones PT137M deadline +72h", "demo",
          lambda now: {"duration": "PT137M", "zones": list(DEMO_ZONES[:4]),
                       "deadline": rfc3339(now + timedelta(hours=72))}),
    Shape("2 zones PT3H interruptible 24h", "demo",
          lambda now: {"duration": "PT3H", "zones": ["DE", "FR"], "max_delay": "PT24H",
                       "interruptible": True}, nows=6, timed_nows=1),
    Shape("on the hour: PT2H DE,FR 12h", "demo",
          lambda now: {"duration": "PT2H", "zones": ["DE", "FR"],
                       "earliest_start": rfc3339(_on_the_hour(now, 1)),
                       "deadline": rfc3339(_on_the_hour(now, 13))}),
    Shape("on the hour: PT4H 4 zones 24h", "demo",
          lambda now: {"duration": "PT4H", "zones": list(DEMO_ZONES[:4]),
                       "earliest_start": rfc3339(_on_the_hour(now, 0)),
                       "deadline": rfc3339(_on_the_hour(now, 24))}),
    Shape("on the hour: PT1H 1 zone 2h", "demo",
          lambda now: {"duration": "PT1H", "earliest_start": rfc3339(_on_the_hour(now, 0)),
                       "deadline": rfc3339(_on_the_hour(now, 2))}),
    Shape("recorded: PT2H ES,US-CAL-CISO 12h", "recorded",
          lambda now: {"duration": "PT2H", "zones": ["ES", "US-CAL-CISO"], "max_delay": "PT12H",
                       "as_of": rfc3339(now)}),
    Shape("recorded: PT47M ES default 24h", "recorded",
          lambda now: {"duration": "PT47M", "as_of": rfc3339(now)}),
    Shape("recorded on the hour: PT2H 2 zones", "recorded",
          lambda now: {"duration": "PT2H", "zones": ["ES", "US-CAL-CISO"], "as_of": rfc3339(now),
                       "earliest_start": rfc3339(_on_the_hour(now, 1)),
                       "deadline": rfc3339(_on_the_hour(now, 13))}),
    Shape("batch 8: client matrix PT45M DE,FR 6h", "demo",
          lambda now: {"workloads": [{"id": f"suite-{i}", "duration": _iso(m), "zones": ["DE", "FR"],
                                      "max_delay": "PT6H"}
                                     for i, m in enumerate((45, 45, 30, 60, 75, 45, 20, 90))]}),
    Shape("batch 8 mixed", "demo", lambda now: {"workloads": _mixed(8, 8)}, nows=8),
    Shape("batch 50 mixed", "demo", lambda now: {"workloads": _mixed(50, 50)}, nows=6),
    Shape("batch 500 mixed", "demo", lambda now: {"workloads": _mixed(500, 500)}, nows=3, timed_nows=1),
    Shape("batch 500 x README", "demo",
          lambda now: {"workloads": [dict(README, id=f"r{i}") for i in range(500)]}, nows=3,
          timed_nows=1),
    Shape("batch 50 on the hour", "demo",
          lambda now: {"workloads": _mixed_on_the_hour(50, 51, now)}, nows=6),
    Shape("recorded batch 50 mixed", "recorded",
          lambda now: {"workloads": _mixed(50, 52, zones=("ES", "US-CAL-CISO")),
                       "as_of": rfc3339(now)}, nows=6),
]


# -- the paths: counted, and disabled --------------------------------------------------------------

@contextmanager
def replaced(module, name: str, value) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextmanager
def counting(counts: Counter) -> Iterator[None]:
    """Every path function wrapped to count the (workload, zone) searches it answers."""
    originals = {name: getattr(module, name) for module, name in (
        (planner, "_search_together"), (planner, "best_windows"), (planner, "_baselines_together"),
        (window, "best_window"), (window, "_whole_steps"),
        (window, "_on_grid"), (chunks, "cheapest_units"))}

    def search_together(jobs, zones, budget=None):
        counts["batch_calls"] += 1
        return originals["_search_together"](jobs, zones, budget)

    def best_windows(series, which, *rest):
        counts["batch"] += len(which)
        return originals["best_windows"](series, which, *rest)

    def baselines_together(jobs, zones):
        counts["base_calls"] += 1
        found = originals["_baselines_together"](jobs, zones)
        counts["base"] += len(found)
        return found

    def best_window(*args, **kwargs):
        found = originals["best_window"](*args, **kwargs)
        counts["single"] += 1
        counts["none"] += found is None
        return found

    def whole_steps(*args):
        counts["whole"] += 1
        return originals["_whole_steps"](*args)

    def on_grid(*args):
        counts["grid"] += 1
        return originals["_on_grid"](*args)

    def cheapest_units(*args):
        counts["chunk_dp"] += 1
        return originals["cheapest_units"](*args)
    with ExitStack() as stack:
        for module, name, wrapper in (
                (planner, "_search_together", search_together), (planner, "best_windows", best_windows),
                (planner, "_baselines_together", baselines_together),
                (window, "best_window", best_window),
                (chunks, "best_window", best_window), (window, "_whole_steps", whole_steps),
                (window, "_on_grid", on_grid), (chunks, "cheapest_units", cheapest_units)):
            stack.enter_context(replaced(module, name, wrapper))
        yield
    counts["general"] += counts["single"] - counts["none"] - counts["whole"] - counts["grid"]


_GRIDS: dict[tuple[int, int, int], np.ndarray] = {}


def _pick(candidates: np.ndarray, emissions: np.ndarray, integral: np.ndarray,
          duration: int) -> Run:
    """best_window's choice among its candidates (its last lines, for the replacements below)."""
    index = int(np.argmin(emissions))
    tolerance = window._TIE_TOLERANCE * max(abs(float(integral[-1])), 1.0)
    tied = emissions <= emissions[index] + tolerance
    if np.count_nonzero(tied) > 1:
        indices = np.flatnonzero(tied)
        index = int(indices[np.argmin(candidates[indices])])
    start = int(candidates[index])
    return Run(0, ((start, start + duration),), float(emissions[index] / duration))


def whole_steps_on_grid(values, integral, t0, step, duration, lo, hi) -> Run:
    """window._whole_steps disabled: what best_window runs without that branch (the even-grid
    candidates of _on_grid). Its boundaries are memoised here, as the series' own are."""
    n = len(values)
    boundaries = _GRIDS.get((t0, step, n))
    if boundaries is None:
        boundaries = _GRIDS[(t0, step, n)] = t0 + step * np.arange(n + 1, dtype=np.int64)
    if integral is None:
        integral = np.empty(n + 1, dtype=np.float64)
        integral[0] = 0.0
        np.multiply(np.cumsum(values, out=integral[1:]), float(step), out=integral[1:])
    candidates, emissions = window._on_grid(boundaries, values, integral, step, duration, lo, hi)
    return _pick(candidates, emissions, integral, duration)


def on_grid_general(boundaries, values, integral, step, duration, lo, hi):
    """window._on_grid disabled: best_window's general candidates (kinks, interpolated)."""
    g = window.GRANULARITY_SECONDS
    kinks = np.concatenate((boundaries, boundaries - duration))
    below = (kinks // g) * g
    candidates = np.concatenate((below, below + g, [lo, hi]))
    candidates = candidates[(candidates >= lo) & (candidates <= hi)]
    emissions = (np.interp(candidates + duration, boundaries, integral)
                 - np.interp(candidates, boundaries, integral))
    return candidates, emissions


# Each path, disabled: replaced by what the service runs without it.
DISABLED = {
    "batch": (planner, "_search_together", lambda jobs, zones, budget=None: {}),
    "base": (planner, "_baselines_together", lambda jobs, zones: {}),
    "whole": (window, "_whole_steps", whole_steps_on_grid),
    "grid": (window, "_on_grid", on_grid_general),
}


@dataclass(frozen=True)
class Comparison:
    label: str
    path: str                              # timed with it and without it
    called: Callable[[Counter], bool]      # whether a shape's census calls it
    taken: Callable[[Counter], bool]       # whether it answers any of the shape's searches
    under: tuple[str, ...] = ()            # paths disabled in both arms


COMPARISONS = [
    Comparison("batch", "batch", lambda c: c["batch_calls"] > 0, lambda c: c["batch"] > 0),
    Comparison("base", "base", lambda c: c["base_calls"] > 0, lambda c: c["base"] > 0),
    Comparison("whole", "whole", lambda c: c["whole"] > 0, lambda c: c["whole"] > 0),
    Comparison("grid", "grid", lambda c: c["grid"] > 0, lambda c: c["grid"] > 0),
]


# -- measuring -------------------------------------------------------------------------------------

@dataclass
class Case:
    """One request as the planner receives it: what the engine handed plan_all."""
    jobs: list
    zones: dict
    at: int


def capture(service: Service, body: dict, now: datetime) -> Case:
    jobs, now = jobs_of(service, body, now)
    seen: list[Case] = []
    real = planner.plan_all

    def plan_all(jobs, zones, at, budget, estimated=None):
        seen.append(Case(list(jobs), zones, at))
        return real(jobs, zones, at, budget, estimated)
    with replaced(planner, "plan_all", plan_all):
        service.engine.optimize(jobs, now)
    return seen[0]


def plan(service: Service, case: Case):
    """The planner's part of engine.optimize: estimate, then plan_all under a fresh budget."""
    cost = request_cost.estimate(case.jobs, case.zones, budget(service.settings))
    return planner.plan_all(case.jobs, case.zones, case.at, budget(service.settings), cost)


def answers(outcomes) -> list:
    """What a path must not change: each run chosen, its coverage, its baseline's run, and
    (rounded) the means, which the paths compute by different arithmetic."""
    def mean(x: Optional[float]) -> Optional[float]:
        return None if x is None else float(f"{x:.9g}")
    return [(o.zone, o.intervals, mean(o.mean_intensity), o.coverage,
             o.baseline and (o.baseline.zone, o.baseline.start, mean(o.baseline.mean_intensity)))
            if isinstance(o, Schedule) else (o.code, o.message) for o in outcomes]


def sample(run: Callable[[], object], least: float = 0.01) -> float:
    """CPU seconds of one run, looped until the sample lasts `least`."""
    started, calls = clock(), 0
    while True:
        run()
        calls += 1
        spent = clock() - started
        if spent >= least:
            return spent / calls


def compare(run: Callable[[], object], disable: tuple, pairs: int) -> dict:
    """`run` with the path and without it, in adjacent pairs of samples (the order alternating),
    so that the machine's load drifting between samples falls on both: the median of the pairs'
    ratios, and the quartiles of those ratios (how far to trust it). The collector is off while
    timing: a collection falling in one sample and not the other would be counted as the path's."""
    timed: dict[str, list[float]] = {"with": [], "without": []}
    ratios = []
    gc.collect()
    gc.disable()
    try:
        for p in range(pairs):
            got = {}
            for mode in (("with", "without") if p % 2 == 0 else ("without", "with")):
                with ExitStack() as stack:
                    if mode == "without":
                        stack.enter_context(replaced(*disable))
                    got[mode] = sample(run)
                timed[mode].append(got[mode])
            ratios.append(got["without"] / got["with"])
    finally:
        gc.enable()
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return {"with_ms": 1e3 * statistics.median(timed["with"]),
            "without_ms": 1e3 * statistics.median(timed["without"]),
            "ratio": statistics.median(ratios), "ratio_q1": q1, "ratio_q3": q3}


def run_shape(shape: Shape, service: Service, pairs: int) -> dict:
    rng = np.random.default_rng(zlib.crc32(shape.name.encode()))  # the same nows every run
    timed_nows = shape.timed_nows
    nows = [service.nows(rng) for _ in range(max(shape.nows, timed_nows))]
    counts: Counter = Counter()
    with counting(counts):
        for now in nows[:shape.nows]:
            service.engine.optimize(*jobs_of(service, shape.body(now), now))
    requests = shape.nows
    cases = [capture(service, shape.body(now), now) for now in nows[:timed_nows]]
    workloads = len(cases[0].jobs)

    def run():
        for case in cases:
            plan(service, case)
    engine_runs = [(jobs_of(service, shape.body(now), now)) for now in nows[:timed_nows]]
    engine_ms = 1e3 * statistics.median(
        sample(lambda: [service.engine.optimize(jobs, now) for jobs, now in engine_runs])
        for _ in range(3)) / timed_nows
    row = {"shape": shape.name, "service": service.name, "workloads": workloads,
           "requests_counted": requests, "counts": dict(counts), "engine_ms": engine_ms,
           "paths": {}}
    for comparison in COMPARISONS:
        if not comparison.called(counts):
            continue
        disable = DISABLED[comparison.path]
        with ExitStack() as both:
            for path in comparison.under:
                both.enter_context(replaced(*DISABLED[path]))
            before = [answers(plan(service, case)) for case in cases]
            with replaced(*disable):
                after = [answers(plan(service, case)) for case in cases]
            result = compare(run, disable, pairs)
        result["same"] = before == after
        result["taken"] = comparison.taken(counts)
        # per request (the planner runs the timed nows one after another)
        result["with_ms"] /= timed_nows
        result["without_ms"] /= timed_nows
        row["paths"][comparison.label] = result
    return row


# -- report ----------------------------------------------------------------------------------------

COUNTED = ("batch", "whole", "grid", "general", "none", "base", "chunk_dp")


def print_row(row: dict) -> None:
    c = row["counts"]
    census = " ".join(f"{k}={c.get(k, 0)}" for k in COUNTED if c.get(k, 0))
    print(f"\n{row['shape']}  [{row['service']}, {row['workloads']} workload(s), "
          f"{row['requests_counted']} nows; engine {row['engine_ms']:.3f} ms/request]")
    print(f"    searches by path: {census}")
    for label, r in row["paths"].items():
        print(f"    {label:<18} {'answers' if r['taken'] else 'tried  '}  with {r['with_ms']:8.3f} ms  "
              f"without {r['without_ms']:8.3f} ms  without/with {r['ratio']:.3f} "
              f"(quartiles {r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})  "
              f"same answers: {'yes' if r['same'] else 'NO'}", flush=True)


def summary(rows: list[dict]) -> None:
    print("\n# per path: the median without/with of each shape (above 1: the path saves that share "
          "of the planner's time; below 1: it costs that share)")
    for comparison in COMPARISONS:
        for taken, what in ((True, "answers searches"), (False, "called, answers none")):
            ratios = sorted((r["ratio"], row["shape"]) for row in rows
                            if (r := row["paths"].get(comparison.label)) and r["taken"] is taken)
            if ratios:
                print(f"{comparison.label:<18} {what:<21} in {len(ratios):>2} shapes: "
                      f"{ratios[0][0]:.3f} ({ratios[0][1]}) to {ratios[-1][0]:.3f} ({ratios[-1][1]})")
        if not any(comparison.label in row["paths"] for row in rows):
            print(f"{comparison.label:<18} called by no shape")
    never = [k for k in ("general", "none") if not any(row["counts"].get(k) for row in rows)]
    if never:
        print(f"never taken by any shape: {', '.join(never)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=15, help="pairs of samples per comparison")
    parser.add_argument("--quick", action="store_true", help="5 pairs, every other shape")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the demo provider says it is the demo, once per service
    available = services()
    shapes = [s for s in SHAPES if s.service in available]
    pairs = args.pairs
    if args.quick:
        shapes, pairs = shapes[::2], 5
    info = machine()
    print("# window-search paths on what users send —", json.dumps(info))
    if "recorded" not in available:
        print(f"# no recorded data at {RECORDED}: the recorded shapes are left out")
    started = time.monotonic()
    rows = []
    for shape in shapes:
        row = run_shape(shape, available[shape.service], pairs)
        rows.append(row)
        print_row(row)
    summary(rows)
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
