"""Interruptible requests of the judge's population (issue 26) through the planner, with a real Budget.

    .venv/bin/python bench/chunks_bench.py [--requests 240] [--seed 26] [--no-compare] [--json out.json]

Population (seeded): durations of 700-1,400 odd minutes, windows of 1-2 days opening and closing at
arbitrary seconds (so the search runs on one-minute units), max_chunks 3-6, min_chunk none (the
series step), or an odd number of minutes (5-239) in half the requests; hourly and 15-minute
series (a daily shape plus noise) covering the window, one zone, no estimates.

Each request: cost.estimate then planner.plan_all, as the engine calls them, with Budget()
(SOLVE_TIMEOUT_SECONDS 1.5 s, 40 MiB): refused (too_large), answered, or stopped at the deadline;
wall time of estimate + plan (perf_counter), its CPU (process_time), and its peak traced memory
(tracemalloc, in a second run) against the estimate.

With --compare (default) each answer is checked against the minute DP of the code before this
change (`git show <base>:carbon_optimizer/scheduling/chunks.py`, its caps lifted: exact on the
minute grid, an implementation apart), and the old code with its caps is run too, to show what it
answered: how many searches it sent to the coarse series grid, how far above the optimum those
were, and how many it refused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from carbon_optimizer.errors import TooLarge  # noqa: E402
from carbon_optimizer.scheduling.budget import MIB, Budget  # noqa: E402
from carbon_optimizer.scheduling.cost import estimate  # noqa: E402
from carbon_optimizer.scheduling.model import Job, Schedule, ZoneSeries  # noqa: E402
from carbon_optimizer.scheduling.planner import plan_all  # noqa: E402
from carbon_optimizer.timeseries import ForecastSeries, from_epoch  # noqa: E402

T0 = 1_800_000_000  # a whole hour
MINUTE = 60


def population(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(count):
        step = 60 if i % 2 else 15
        duration = int(rng.integers(350, 700)) * 2 + 1  # 701-1,399 odd minutes
        span = int(rng.integers(24 * 3600, 48 * 3600 + 1))
        span = max(span, duration * MINUTE + 3600)
        earliest = T0 + int(rng.integers(0, 6 * 3600))
        deadline = earliest + span
        min_chunk = None if rng.random() < 0.5 else int(rng.integers(2, 120)) * 2 + 1
        max_chunks = int(rng.integers(3, 7))
        hours = (deadline - T0) // 3600 + 2
        points = hours * 60 // step
        t = np.arange(points) * step / 60.0
        values = (300 + 120 * np.sin(2 * np.pi * (t - 6) / 24) + 40 * np.sin(2 * np.pi * t / 7.3)
                  + rng.normal(0, 25, points)).clip(20)
        forecast = ForecastSeries(zone="Z", start=from_epoch(T0), step_seconds=step * MINUTE,
                                  values=values, provider="bench")
        job = Job(duration=duration * MINUTE, zones=("Z",), earliest_start=earliest,
                  latest_start=deadline - duration * MINUTE, interruptible=True,
                  min_chunk=None if min_chunk is None else min_chunk * MINUTE,
                  max_chunks=max_chunks, extend_horizon=False)
        yield job, {"Z": ZoneSeries(forecast=forecast)}, step


def run(job, zones):
    budget = Budget()
    try:
        cost = estimate([job], zones, budget)
    except TooLarge as exc:
        return "refused", exc.message, None
    [outcome] = plan_all([job], zones, job.earliest_start, budget, cost)
    return ("answered" if isinstance(outcome, Schedule) else "stopped"), outcome, cost


def old_module(base: str):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{base}:carbon_optimizer/scheduling/chunks.py"],
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("old_chunks")
    sys.modules["old_chunks"] = module
    exec(compile(source, "old_chunks.py", "exec"), module.__dict__)
    return module


def old_answer(old, job, zones, capped: bool):
    series = zones["Z"].forecast
    saved = old.MAX_DP_CELLS, old.MAX_DP_BYTES
    if not capped:
        old.MAX_DP_CELLS, old.MAX_DP_BYTES = 10 ** 12, 10 ** 13
    try:
        return old.best_chunks(series.boundaries(), series.values, job.duration, job.earliest_start,
                               job.latest_end, job.min_chunk, job.max_chunks)
    except TooLarge:
        return "refused"
    finally:
        old.MAX_DP_CELLS, old.MAX_DP_BYTES = saved


def percentile(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--base", default="4f6c4c8", help="commit of the code before this change")
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    old = None if args.no_compare else old_module(args.base)
    counts = {"answered": 0, "refused": 0, "stopped": 0}
    walls, cpus, peaks, ratios, above = [], [], [], [], []
    old_counts = {"exact": 0, "coarse": 0, "refused": 0, "coarse_above": []}
    refusals = []
    for job, zones, step in population(args.requests, args.seed):
        wall, cpu = time.perf_counter(), time.process_time()
        kind, outcome, cost = run(job, zones)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        counts[kind] += 1
        if kind == "refused":
            refusals.append(outcome)
            continue
        tracemalloc.start()
        run(job, zones)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peaks.append(peak)
        ratios.append(peak / cost.memory)
        if old is None or kind != "answered":
            continue
        optimum = old_answer(old, job, zones, capped=False)
        above.append(outcome.mean_intensity / optimum.mean_intensity - 1)
        capped = old_answer(old, job, zones, capped=True)
        if capped == "refused":
            old_counts["refused"] += 1
        elif capped.mean_intensity > optimum.mean_intensity * (1 + 1e-9):
            old_counts["coarse"] += 1
            old_counts["coarse_above"].append(capped.mean_intensity / optimum.mean_intensity - 1)
        else:
            old_counts["exact"] += 1
    answered = [w for w in walls]
    report = {
        "machine": machine(), "requests": args.requests, "seed": args.seed, **counts,
        "above_optimum": sum(a > 1e-9 for a in above), "checked": len(above),
        "worst_relative": max(above) if above else None,
        "wall_s": {"max": max(answered), "p95": percentile(answered, 95),
                   "median": statistics.median(answered)},
        "cpu_s": {"max": max(cpus), "p95": percentile(cpus, 95)},
        "peak_mib": {"max": max(peaks) / MIB if peaks else None,
                     "p95": percentile(peaks, 95) / MIB if peaks else None},
        "peak_over_estimate_max": max(ratios) if ratios else None,
        "refusals": refusals[:3],
    }
    if old is not None:
        report["before"] = {"exact": old_counts["exact"], "coarse_not_exact": old_counts["coarse"],
                            "refused": old_counts["refused"],
                            "coarse_above_max_percent": 100 * max(old_counts["coarse_above"], default=0)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
