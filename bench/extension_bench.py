"""Estimates past a forecast and the calibrated risk gate: what they cost a zone and a run.

    .venv/bin/python bench/extension_bench.py

For each history length and step: `horizon.extend_series` (the candidate estimators replayed from
every origin, the choice, the estimates; done once per zone and request), then the gate's stated
error of one run (`run_error`, the choice replayed per origin) for a 6 h contiguous run and for 6 h
of chunks in a 72 h window. Best of 5, on synthetic series (a daily shape, weather with memory,
noise). cost.py's _REPLAY_WORK_PER_CELL and _gate_cost are set from these figures.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine  # noqa: E402
from carbon_optimizer.scheduling.horizon import extend_series, run_error  # noqa: E402
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, to_epoch  # noqa: E402

DAY = 86400
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _series(step: int, days: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY // step) * step
    level = np.cumsum(rng.normal(0, 1, len(t))) * 0.5
    return 300 + 60 * np.cos((t % DAY) / DAY * 2 * np.pi) + level + rng.normal(0, 10, len(t))


def _best(call, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - began)
    return best * 1000


def main() -> None:
    print(machine())
    print("| step | history | estimates | origins x leads | estimator | extend (ms) | "
          "gate, 6 h run (ms) | gate, 6 h of chunks (ms) |")
    print("|---|---|---|---|---|---:|---:|---:|")
    for step, history_days, ahead_days in ((3600, 10, 3), (3600, 10, 14), (3600, 30, 14),
                                           (900, 10, 3), (900, 10, 14), (300, 10, 14),
                                           (300, 30, 14)):
        per_day = DAY // step
        values = _series(step, history_days + 1)
        origin = to_epoch(START)
        history = ForecastSeries("XX", START, step, values[:history_days * per_day], "bench")
        begin = origin + history_days * DAY
        forecast = ForecastSeries("XX", from_epoch(begin), step, values[history_days * per_day:],
                                  "bench")
        end = forecast.end_epoch
        until = end + ahead_days * DAY
        extension = extend_series(forecast, until, history)
        took = _best(lambda: extend_series(forecast, until, history))
        window = (begin, begin + 72 * 3600)
        run = [(end + 20 * 3600, end + 26 * 3600)]
        chunks = [(end + h * 3600, end + (h + 1) * 3600) for h in (3, 9, 20, 27, 33, 44)]
        contiguous = _best(lambda: run_error(run, end, step, extension.replay, 0.9, window,
                                             False, per_day))
        pieces = _best(lambda: run_error(chunks, end, step, extension.replay, 0.9, window,
                                         True, per_day, 6 * 3600 // step))
        shape = extension.replay.signed.shape
        print(f"| {step // 60} min | {history_days} d | {ahead_days} d | {shape[0]} x {shape[1]} | "
              f"{extension.replay.estimator} | {took:.1f} | {contiguous:.2f} | {pieces:.2f} |")


if __name__ == "__main__":
    main()
