"""Fleet benchmark: 1,000 workloads on a 72-hour forecast at 15-minute steps, under capacity.

Run: .venv/bin/python bench/fleet_bench.py
Prints the scheduling time, and the plan's grams against two references computed in the same run:
every job at its own best start ignoring capacity (a lower bound) and every job run at once.
Then smaller batches (20 to 200 jobs, 12 hours of slack, limits that bind): the time of each, and
of the heuristic alone (fleet.SMALL_BATCH = 0) for comparison, since small batches go to HiGHS
(since issue 26 only batches of at most fleet.SMALL_BATCH workloads: bench/fleet_exact_bench.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from carbon_optimizer.scheduling import fleet  # noqa: E402
from carbon_optimizer.scheduling.fleet import Capacity, FleetJob, schedule_fleet  # noqa: E402

UNITS = 72 * 4  # 15-minute steps over 72 hours
JOBS = 1000


def instance(seed: int = 7):
    rng = np.random.default_rng(seed)
    hours = np.arange(UNITS) / 4
    # Two zones with a midday solar dip at different UTC hours, plus noise.
    intensity = np.stack([
        300 - 120 * np.clip(np.cos((hours - 12) / 24 * 2 * np.pi), 0, None) + rng.normal(0, 15, UNITS),
        220 - 90 * np.clip(np.cos((hours - 20) / 24 * 2 * np.pi), 0, None) + rng.normal(0, 15, UNITS),
    ])
    jobs = []
    for _ in range(JOBS):
        length = int(rng.integers(1, 25))               # 15 minutes to 6 hours
        earliest = int(rng.integers(0, UNITS - length))
        slack = int(rng.integers(0, 24 * 4))            # up to 24 hours of flexibility
        latest = min(UNITS - length, earliest + slack)
        zones = (0, 1) if rng.random() < 0.5 else (int(rng.integers(0, 2)),)
        jobs.append(FleetJob(length, earliest, latest, zones, float(rng.integers(1, 10))))
    capacity = Capacity(max_concurrent=150, zone_concurrent=[100, 80], zone_power_kw=[500.0, 400.0])
    return intensity, jobs, capacity


def main() -> None:
    intensity, jobs, capacity = instance()
    began = time.perf_counter()
    plan = schedule_fleet(intensity, jobs, capacity)
    elapsed = time.perf_counter() - began
    prefix = np.concatenate((np.zeros((2, 1)), np.cumsum(intensity, axis=1)), axis=1)
    now = sum(j.weight * (prefix[j.zones[0], j.earliest + j.length] - prefix[j.zones[0], j.earliest])
              for j in jobs)
    free = schedule_fleet(intensity, jobs, Capacity())
    print(f"fleet: {JOBS} workloads, {UNITS} x 15-minute units, 2 zones, capacity "
          f"{capacity.max_concurrent} jobs / {capacity.zone_concurrent} per zone / "
          f"{capacity.zone_power_kw} kW")
    print(f"  scheduled {plan.placed}, unschedulable {JOBS - plan.placed}, in {elapsed:.3f} s")
    print(f"  emissions vs no capacity limit (lower bound): {plan.emissions / free.emissions:.4f}x; "
          f"vs run at earliest start in first zone: {plan.emissions / now:.4f}x")


def sized_instance(count: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    intensity, _, _ = instance()
    jobs = []
    for i in range(count):
        length = int(rng.integers(1, 25))
        earliest = int(rng.integers(0, UNITS - length - 48))
        zones = (0, 1) if i % 2 else (int(rng.integers(0, 2)),)
        jobs.append(FleetJob(length, earliest, earliest + 48, zones, float(rng.integers(1, 10))))
    capacity = Capacity(max_concurrent=count // 5, zone_concurrent=[count // 8, count // 10],
                        zone_power_kw=[count * 0.6, count * 0.5])
    return intensity, jobs, capacity


def sizes() -> None:
    print("batch | binaries | as shipped: s, placed, grams | heuristic alone: s, placed, grams")
    for count in (20, 50, 100, 200):
        intensity, jobs, capacity = sized_instance(count)
        binaries = sum(len(j.zones) * (j.latest - j.earliest + 1) for j in jobs)
        row = [f"{count} jobs", f"{binaries:,}"]
        shipped = fleet.SMALL_BATCH
        for exact in (shipped, 0):
            fleet.SMALL_BATCH = exact
            began = time.perf_counter()
            plan = schedule_fleet(intensity, jobs, capacity)
            row.append(f"{time.perf_counter() - began:.2f} s, {plan.placed}, {plan.emissions:,.0f}")
        fleet.SMALL_BATCH = shipped
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
    sizes()
