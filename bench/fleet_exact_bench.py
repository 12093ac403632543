"""Small capacity batches as an independent judge draws them, through planner.plan_batch with a
real Budget (SOLVE_TIMEOUT_SECONDS' default, 1.5 s): the share of answers proven optimal, the time
per answer (max, p95), and the exact model's size.

Run: .venv/bin/python bench/fleet_exact_bench.py [batches] [seed] [longest window, hours]
Population (seeded): 4-10 workloads, 1-3 zones, max_concurrent 1-3 (sometimes per zone, sometimes
power), windows 1-72 h, odd-minute durations 7-600, earliest starts at arbitrary seconds, synthetic
hourly and 15-minute series.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from carbon_optimizer.scheduling.budget import Budget  # noqa: E402
from carbon_optimizer.scheduling.model import CapacityLimits, Job, ZoneSeries  # noqa: E402
from carbon_optimizer.scheduling.planner import plan_batch  # noqa: E402
from carbon_optimizer.timeseries import ForecastSeries, from_epoch  # noqa: E402

T0 = 1_800_000_000  # a whole hour
HOURS = 96


def series(rng, zone: str) -> ZoneSeries:
    step = int(rng.choice([3600, 900]))
    count = HOURS * 3600 // step
    hours = np.arange(count) * step / 3600
    values = (300 - 120 * np.clip(np.cos((hours - rng.uniform(0, 24)) / 24 * 2 * np.pi), 0, None)
              + rng.normal(0, 20, count)).round(1)
    return ZoneSeries(forecast=ForecastSeries(zone=zone, start=from_epoch(T0), step_seconds=step,
                                              values=values, provider="bench"))


def batch(rng, longest_hours: int = 72):
    names = ["A", "B", "C"][: int(rng.integers(1, 4))]
    zones = {z: series(rng, z) for z in names}
    jobs = []
    for i in range(int(rng.integers(4, 11))):
        duration = 60 * int(rng.integers(7, 601) | 1)  # odd minutes
        earliest = T0 + int(rng.integers(0, 6 * 3600))  # arbitrary seconds
        window = int(rng.integers(3600, longest_hours * 3600 + 1))
        allowed = tuple(sorted(rng.choice(names, size=int(rng.integers(1, len(names) + 1)),
                                          replace=False)))
        power = float(rng.integers(1, 20)) if rng.random() < 0.7 else None
        jobs.append(Job(duration=duration, zones=allowed, earliest_start=earliest,
                        latest_start=earliest + window, id=f"w{i}", power_kw=power))
    kind = rng.random()
    cap = int(rng.integers(1, 4))
    if kind < 0.6:
        capacity = CapacityLimits(max_concurrent=cap)
    elif kind < 0.85:
        capacity = CapacityLimits(max_concurrent=cap + 1, max_concurrent_per_zone={names[0]: cap})
    else:
        capacity = CapacityLimits(max_power_kw={z: float(rng.integers(10, 30)) for z in names})
    return jobs, zones, capacity


def main(count: int = 200, seed: int = 26, longest_hours: int = 72) -> None:
    from bench.machine import machine
    print(machine())
    from carbon_optimizer.scheduling import fleet, fleet_exact  # noqa: F401 (SciPy imported first)
    import scipy.optimize  # noqa: F401
    rng = np.random.default_rng(seed)
    times, proven, notes, sizes = [], 0, {}, []
    buckets: dict = {}  # the batch's longest window (h) -> [batches, proven]
    real_size = fleet_exact.size

    def counting(*args, **kwargs):
        found = real_size(*args, **kwargs)
        sizes.append(found)
        return found
    fleet_exact.size = counting
    for _ in range(count):
        jobs, zones, capacity = batch(rng, longest_hours)
        budget = Budget(seconds=1.5)
        began = time.perf_counter()
        outcomes = plan_batch(jobs, zones, capacity, T0, budget)
        times.append(time.perf_counter() - began)
        plan = outcomes.capacity_plan
        proven += plan.proven_optimal
        longest = max(j.latest_start - j.earliest_start for j in jobs) / 3600
        bucket = next(h for h in (3, 6, 12, 24, 48, 72) if longest <= h)
        one = buckets.setdefault(bucket, [0, 0])
        one[0] += 1
        one[1] += plan.proven_optimal
        if not plan.proven_optimal:
            key = (plan.not_proven or "")[:60]
            notes[key] = notes.get(key, 0) + 1
    fleet_exact.size = real_size
    times = np.array(times)
    print(f"{count} batches (seed {seed}, windows 1-{longest_hours} h): proven optimal "
          f"{proven}/{count} ({100 * proven / count:.1f} %)")
    print(f"time per answer: median {np.median(times):.3f} s, p95 {np.percentile(times, 95):.3f} s, "
          f"max {times.max():.3f} s; over 1.5 s: {(times > 1.5).sum()}")
    if sizes:
        columns = np.array([s.columns for s in sizes])
        nonzeros = np.array([s.nonzeros for s in sizes])
        print(f"exact models built or counted: {len(sizes)}; columns median {np.median(columns):.0f}, "
              f"max {columns.max()}; nonzeros median {np.median(nonzeros):.0f}, max {nonzeros.max()}")
    for bucket, (n, ok) in sorted(buckets.items()):
        print(f"  longest window <= {bucket} h: {ok}/{n} proven optimal")
    kinds = {}
    for note, n in notes.items():
        kind = note.split(" would")[0].split(" did")[0]
        kinds[kind] = kinds.get(kind, 0) + n
    for kind, n in kinds.items():
        print(f"  not proven ({n}): {kind} ...")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
