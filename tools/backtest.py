"""Backtest: replay historical carbon intensity, submit workloads over the year, and compare the
emissions realized by our choices with running at once and with the oracle (perfect knowledge).

    .venv/bin/python backtest.py [--data ../shared/data/carbon-intensity] [--png docs/backtest.png]

Data: Electricity Maps data-portal exports (Electricity Maps (electricitymaps.com), ODbL), hourly,
life-cycle intensity, read by path and never copied. Everything is vectorised over arrivals: every
arrival's forecast is one row of a matrix, window sums come from cumulative sums along the rows.

Forecasts: perfect (the real values), noisy (plus Gaussian error of 5% or 10% of the zone's mean,
independent per issue time and hour, fixed seeds), and horizon-limited (the first 24 h real, the rest
estimated by horizon_extension.estimate_values from the forecast's last day and an hour-of-week
profile of the four weeks before the arrival) against searching inside those 24 h only.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from carbon_optimizer.scheduling.horizon import estimate_values
from carbon_optimizer.data.providers.csv_file import read_portal_csv
from carbon_optimizer.timeseries import series_from_points

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "carbon-intensity"
WEEK = 168
WARM_UP = 5 * WEEK  # arrivals start after five weeks, so the profile has four weeks behind it
HORIZON = 24


@dataclass(frozen=True)
class Scenario:
    name: str
    length: float             # hours; 0.5 runs for half of one hour
    slack: int                # hours between earliest and latest start
    every: int = 1            # an arrival every so many hours ...
    phase: int = 0            # ... at this hour of the day (UTC)
    baseline_offset: int = 0  # "run now" starts this many hours after the arrival
    interruptible: bool = False


SCENARIOS = [
    Scenario("nightly 30 min at 01:00, +-2 h", 0.5, 4, 24, 23, 2),
    Scenario("nightly 30 min at 01:00, +-4 h", 0.5, 8, 24, 21, 4),
    Scenario("nightly 30 min at 01:00, +-8 h", 0.5, 16, 24, 17, 8),
    Scenario("1 h job, 24 h slack", 1, 24),
    Scenario("6 h job, 24 h slack", 6, 24),
    Scenario("24 h job, 24 h slack", 24, 24),
    Scenario("1 h job, 168 h slack", 1, 168),
    Scenario("6 h job, 24 h slack, interruptible", 6, 24, interruptible=True),
    Scenario("24 h job, 24 h slack, interruptible", 24, 24, interruptible=True),
]
FORECASTS = ["perfect", "noisy 5%", "noisy 10%", "24 h + extension", "24 h only"]


def load_zone(directory: Path, zone: str, years: list[int]) -> np.ndarray:
    """Hourly intensities for the zone over the years, gaps held from the previous hour."""
    points = []
    for year in years:
        path = directory / f"{zone}_{year}_hourly.csv"
        points += [(moment, value) for _, moment, value in read_portal_csv(path)]
    return series_from_points(zone, "file", points).values


def _arrivals(count: int, scenario: Scenario, reach: int) -> np.ndarray:
    first = WARM_UP + (scenario.phase - WARM_UP) % 24 if scenario.every == 24 else WARM_UP
    return np.arange(first, count - reach, scenario.every)


def _profile_rows(actual: np.ndarray, arrivals: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Hour-of-week means over the four weeks before each arrival, at arrival + offset."""
    targets = arrivals[:, None] + offsets[None, :]
    weeks_back = (offsets[None, :] + WEEK) // WEEK  # the first whole week that lies before arrival
    return np.mean([actual[targets - WEEK * (weeks_back + k)] for k in range(4)], axis=0)


def forecast_matrix(actual: np.ndarray, arrivals: np.ndarray, reach: int, kind: str,
                    seed: int = 0) -> np.ndarray:
    """What the scheduler believes at each arrival about the next `reach` hours (rows)."""
    offsets = np.arange(reach)
    truth = actual[arrivals[:, None] + offsets[None, :]]
    if kind == "perfect" or kind == "24 h only":
        return truth
    if kind.startswith("noisy"):
        share = float(kind.split()[1].rstrip("%")) / 100
        rng = np.random.default_rng(seed)
        return truth + rng.normal(0.0, share * actual.mean(), size=truth.shape)
    if kind == "24 h + extension":
        if reach <= HORIZON:
            return truth
        tail = truth[:, :HORIZON]
        tail_profile = _profile_rows(actual, arrivals, np.arange(HORIZON))
        future_profile = _profile_rows(actual, arrivals, np.arange(HORIZON, reach))
        estimate = estimate_values(tail, reach - HORIZON, tail_profile, future_profile)
        return np.concatenate((tail, estimate), axis=1)
    raise ValueError(kind)


def _window_sums(rows: np.ndarray, length: float) -> np.ndarray:
    """Sum over each window of `length` hours starting at each hour (half an hour: half a slot)."""
    if length < 1:
        return rows * length
    whole = int(length)
    cumulative = np.concatenate((np.zeros((rows.shape[0], 1)), np.cumsum(rows, axis=1)), axis=1)
    return cumulative[:, whole:] - cumulative[:, :-whole]


def simulate(actual: np.ndarray, scenario: Scenario, kind: str, seed: int = 0) -> dict:
    """Total grams per kWh-hour for our choice, run-now and the oracle, over every arrival."""
    length = max(1, int(np.ceil(scenario.length)))
    reach = scenario.slack + length
    arrivals = _arrivals(len(actual), scenario, reach)
    truth = actual[arrivals[:, None] + np.arange(reach)[None, :]]
    believed = forecast_matrix(actual, arrivals, reach, kind, seed)
    if kind == "24 h only" and reach > HORIZON:
        believed = believed.copy()
        believed[:, HORIZON:] = np.inf  # nothing is known past the horizon
    if scenario.interruptible:
        need = int(scenario.length)
        chosen = np.argsort(believed, axis=1, kind="stable")[:, :need]   # cheapest hours believed
        realized = np.take_along_axis(truth, chosen, axis=1).sum(axis=1)
        if kind == "24 h only" and reach > HORIZON and need > HORIZON:
            realized = np.full(len(arrivals), np.nan)
        oracle = np.sort(truth, axis=1)[:, :need].sum(axis=1)
    else:
        true_sums = _window_sums(truth, scenario.length)
        believed_sums = _window_sums(np.where(np.isinf(believed), 1e12, believed), scenario.length)
        believed_sums = believed_sums[:, :scenario.slack + 1]
        true_sums = true_sums[:, :scenario.slack + 1]
        pick = np.argmin(believed_sums, axis=1)
        realized = true_sums[np.arange(len(arrivals)), pick]
        oracle = true_sums.min(axis=1)
    run_now = _window_sums(truth, scenario.length)[:, scenario.baseline_offset]
    return {"arrivals": len(arrivals), "realized": float(np.nansum(realized)),
            "run_now": float(run_now.sum()), "oracle": float(oracle.sum())}


def saving(result: dict) -> tuple[float, float, float]:
    """(our saving %, oracle saving %, share of the oracle's saving we capture %)."""
    ours = 100 * (1 - result["realized"] / result["run_now"])
    best = 100 * (1 - result["oracle"] / result["run_now"])
    return ours, best, (100 * ours / best if best > 0 else 100.0)


def run(datasets: dict[str, np.ndarray], scenarios=SCENARIOS, forecasts=FORECASTS) -> list[dict]:
    rows = []
    for label, actual in datasets.items():
        for scenario in scenarios:
            for seed, kind in enumerate(forecasts):
                if scenario.interruptible and kind == "24 h only" and scenario.length > HORIZON:
                    continue
                result = simulate(actual, scenario, kind, seed=seed)
                ours, best, share = saving(result)
                rows.append({"data": label, "scenario": scenario.name, "forecast": kind,
                             "arrivals": result["arrivals"], "saving": ours, "oracle": best,
                             "captured": share})
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'data':<18} {'scenario':<38} {'forecast':<17} {'jobs':>6} {'saving%':>8} "
             f"{'oracle%':>8} {'of oracle%':>10}"]
    for r in rows:
        lines.append(f"{r['data']:<18} {r['scenario']:<38} {r['forecast']:<17} {r['arrivals']:>6} "
                     f"{r['saving']:>8.2f} {r['oracle']:>8.2f} {r['captured']:>10.1f}")
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datasets = list(dict.fromkeys(r["data"] for r in rows))
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    kinds = list(dict.fromkeys(r["forecast"] for r in rows))
    figure, axes = plt.subplots(len(datasets), 1, figsize=(14, 3.6 * len(datasets)), squeeze=False)
    width = 0.8 / (len(kinds) + 1)
    for axis, label in zip(axes[:, 0], datasets):
        for k, kind in enumerate(kinds + ["oracle"]):
            values = []
            for scenario in scenarios:
                match = [r for r in rows if r["data"] == label and r["scenario"] == scenario
                         and r["forecast"] == (kind if kind != "oracle" else "perfect")]
                values.append((match[0]["oracle"] if kind == "oracle" else match[0]["saving"])
                              if match else np.nan)
            axis.bar(np.arange(len(scenarios)) + k * width, values, width, label=kind)
        axis.set_title(f"{label}: saving vs run-now (%)")
        axis.set_xticks(np.arange(len(scenarios)) + 0.4, scenarios, rotation=12, fontsize=7)
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=len(kinds) + 1)
    figure.text(0.99, 0.005, "Data: Electricity Maps (electricitymaps.com), ODbL", ha="right",
                fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--zones", nargs="+", default=["ES", "US-CAL-CISO"])
    parser.add_argument("--years", nargs="+", type=int, default=[2021, 2022])
    parser.add_argument("--png", type=Path, default=Path("docs/backtest.png"))
    args = parser.parse_args(argv)
    began = time.perf_counter()
    datasets = {}
    for zone in args.zones:
        for year in args.years:
            # Each year alone (the paper's unit), with the previous year's tail as warm-up when known.
            years = [year - 1, year] if (args.data / f"{zone}_{year - 1}_hourly.csv").exists() else [year]
            values = load_zone(args.data, zone, years)
            datasets[f"{zone} {year}"] = values if len(years) == 1 else values[-(8760 + WARM_UP):]
    rows = run(datasets)
    print(table(rows))
    args.png.parent.mkdir(parents=True, exist_ok=True)
    chart(rows, args.png)
    print(f"\nchart: {args.png}; {time.perf_counter() - began:.1f} s. "
          "Data: Electricity Maps (electricitymaps.com), ODbL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
