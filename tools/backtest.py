"""Backtest: replay recorded carbon intensity through the service's own engine, and measure what its
answers would have emitted against running at once and against the oracle.

    .venv/bin/python -m tools.backtest            # full run; rewrites docs/backtest.md and .png
    .venv/bin/python -m tools.backtest --days 30 --cases "24 h job" --forecasts "24 h" \
        --doc /tmp/x.md --png /tmp/x.png          # a subset, leaving docs/ alone
    .venv/bin/python -m tools.backtest --data ~/export --zones DE --years 2023   # another export

For each case (zone-year, job length, slack, interruptible or not) and forecast kind, a job arrives
every `--every` hours (the nightly job once a day). At each arrival the backtest builds a `Job` and
asks `CarbonEngine.optimize` over a `ReplayProvider`, which reveals only what was known at that
moment (a perfect forecast of a limited horizon, optionally with seeded noise; the ten days before
it as history). It is the code a replaying service runs for a request with `as_of`
(CARBON_PROVIDER=file, FILE_REPLAY=true: CsvFileProvider hands each question to a ReplayProvider).
The engine's estimates past the horizon are made from that history and forecast only: nothing is
fitted on the replayed years, nor on any other data.
Every answer resting on estimates is also checked against the truth: was the run's true mean within
its estimated mean + the stated error (`expected_error`, a 0.9 quantile)? The report gives the
share per case.
The backtest has no window search or estimator of its own: it reads the engine's chosen intervals
(`chosen_intervals`) and integrates the TRUE recorded intensity over them. The oracle (the best
choice over the true series) is computed here, as the measuring stick only.

Data: Electricity Maps data-portal exports (Electricity Maps (electricitymaps.com), ODbL), hourly,
life-cycle intensity, read by path and never copied.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from carbon_optimizer.data.cache import ForecastCache
from carbon_optimizer.data.providers.replay import ReplayProvider
from carbon_optimizer.engine import CarbonEngine
from carbon_optimizer.scheduling.model import Job, Outcome, Schedule
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, to_epoch
from tools.backtest_report import ATTRIBUTION, chart, commit_label, findings, machine, table, write_doc

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "carbon-intensity"
HOUR = 3600
# 5 is coprime with 24: over the year every arrival hour of the day appears about equally often.
DEFAULT_EVERY = 5
# At most this many questions per job when following replan_at: each comes at least
# MIN_REPLAN_SECONDS after the one before, so a window allows no more than slack / that; this
# bound only stops an engine bug from looping.
MAX_ASKS = 1000
# A question asked at replan_at reaches the service this long after it (as any request does), so
# its starts are whole minutes from the next one: the run in hand moves by a minute.
ASK_LATENCY = 1
# Relative tolerance when comparing emissions (sums of ~1e6 g/kWh x s): below it, a tie.
TIE = 1e-9


@dataclass(frozen=True)
class Case:
    name: str
    duration: int                   # seconds
    slack: int                      # seconds from the earliest to the latest start
    interruptible: bool = False
    daily_at: Optional[int] = None  # UTC hour of a once-a-day arrival; None: every `every` hours
    reference_delay: int = 0        # "run at once" starts this long after the arrival


@dataclass(frozen=True)
class ForecastKind:
    name: str
    hours: Optional[int]            # the provider's horizon; None: the job's whole allowed window
    noise: float = 0.0              # error sd as a share of the zone's mean
    extend_horizon: bool = True     # the Job's flag: search past the forecast on the engine's estimates
    replan: bool = False            # ask again at replan_at, up to the start (as `wait` does)


CASES = [
    Case("1 h job, 24 h slack", HOUR, 24 * HOUR),
    Case("1 h job, 72 h slack", HOUR, 72 * HOUR),
    Case("6 h job, 24 h slack", 6 * HOUR, 24 * HOUR),
    Case("6 h job, 72 h slack", 6 * HOUR, 72 * HOUR),
    Case("24 h job, 24 h slack", 24 * HOUR, 24 * HOUR),
    Case("24 h job, 72 h slack", 24 * HOUR, 72 * HOUR),
    Case("6 h job, 24 h slack, interruptible", 6 * HOUR, 24 * HOUR, interruptible=True),
    Case("24 h job, 24 h slack, interruptible", 24 * HOUR, 24 * HOUR, interruptible=True),
    Case("6 h job, 72 h slack, interruptible", 6 * HOUR, 72 * HOUR, interruptible=True),
    # A nightly job due at 01:00 UTC that may move 4 h either way: submitted at 21:00, its
    # reference is its nominal 01:00 start (as in the previous backtest), not the submission time.
    Case("nightly 30 min at 01:00, ±4 h", 30 * 60, 8 * HOUR, daily_at=21, reference_delay=4 * HOUR),
]
FORECASTS = [
    ForecastKind("perfect", None),
    ForecastKind("noisy 5%", None, noise=0.05),
    ForecastKind("24 h + extension", 24, extend_horizon=True),
    ForecastKind("24 h + extension, asking again", 24, extend_horizon=True, replan=True),
    ForecastKind("24 h only", 24, extend_horizon=False),
    ForecastKind("24 h only, asking again", 24, extend_horizon=False, replan=True),
]


@dataclass(frozen=True)
class Dataset:
    label: str     # "ES 2022"
    zone: str
    begin: int     # arrivals at or after this epoch second ...
    end: int       # ... and before this one
    data_end: int  # where the recording stops: every allowed window must end by then


@dataclass
class CaseResult:
    dataset: str
    case: str
    forecast: str
    realized: np.ndarray = field(repr=False)    # per job: true emissions of the engine's choice
    reference: np.ndarray = field(repr=False)   # ... of running at once
    oracle: np.ndarray = field(repr=False)      # ... of the best choice over the true series
    unscheduled: int = 0                        # answers with no plan (counted as run at once)
    asks: Optional[np.ndarray] = field(default=None, repr=False)  # per job: questions after the first
    # Every answer resting on estimates with a stated error (the risk gate took it): how many, and
    # how many of them had the true mean within the stated error (truth <= estimate + error).
    on_estimates: int = 0
    within_error: int = 0

    @property
    def jobs(self) -> int:
        return len(self.realized)

    def summary(self) -> dict:
        total = self.reference.sum()
        ours = 100 * (1 - self.realized.sum() / total)
        best = 100 * (1 - self.oracle.sum() / total)
        worse = self.realized > self.reference * (1 + TIE)
        return {"data": self.dataset, "case": self.case, "forecast": self.forecast, "jobs": self.jobs,
                "oracle": best, "saving": ours, "captured": 100 * ours / best if best > 0 else float("nan"),
                "worse": 100 * worse.mean(), "unscheduled": self.unscheduled,
                "asks_mean": float(self.asks.mean()) if self.asks is not None and self.jobs else 0.0,
                "asks_max": int(self.asks.max()) if self.asks is not None and self.jobs else 0,
                "on_estimates": self.on_estimates,
                "within_error": (100 * self.within_error / self.on_estimates if self.on_estimates
                                 else float("nan"))}


class InvalidAnswer(AssertionError):
    """The engine answered with intervals the job does not allow: an engine bug, not a figure."""


# -- reading the engine's answer ------------------------------------------------------------------

def chosen_intervals(outcome: Outcome) -> list[tuple[int, int]]:
    """The intervals (epoch seconds) the engine chose for one job; empty when it scheduled nothing.
    The one place that reads the engine's answer."""
    if not isinstance(outcome, Schedule):
        return []
    return [(int(a), int(b)) for a, b in outcome.intervals]


def _check(intervals: list[tuple[int, int]], job: Job) -> None:
    total = sum(b - a for a, b in intervals)
    ordered = all(a < b for a, b in intervals) and all(
        intervals[i][1] <= intervals[i + 1][0] for i in range(len(intervals) - 1))
    inside = intervals[0][0] >= job.earliest_start and intervals[-1][1] <= job.latest_start + job.duration
    contiguous = job.interruptible or (len(intervals) == 1 and intervals[0][0] <= job.latest_start)
    if not (total == job.duration and ordered and inside and contiguous):
        raise InvalidAnswer(f"the engine chose {intervals} for {job}")


def stated_claim(outcome: Outcome) -> Optional[tuple[float, float]]:
    """(estimated mean, stated error) of an answer resting on estimates with a finite stated
    error; None for any other answer."""
    if not isinstance(outcome, Schedule) or outcome.coverage.estimated_start is None:
        return None
    error = outcome.coverage.estimate_error
    if error is None or not np.isfinite(error):
        return None
    return float(outcome.mean_intensity), float(error)


# -- the truth and the oracle (the measuring stick; never a scheduling path) --------------------

class Truth:
    """The recorded series as exact integrals: emissions of any interval, best possible choices."""

    def __init__(self, series: ForecastSeries):
        self.boundaries = series.boundaries().astype(np.float64)
        self.values = np.asarray(series.values, dtype=np.float64)
        self.integral = np.concatenate(([0.0], np.cumsum(self.values * np.diff(self.boundaries))))

    def emissions(self, intervals: Sequence[tuple[int, int]]) -> float:
        """The integral of intensity over the intervals, gCO2eq/kWh x s (x kW / 3600: grams)."""
        edges = np.asarray(intervals, dtype=np.float64)
        at = np.interp(edges, self.boundaries, self.integral)
        return float((at[:, 1] - at[:, 0]).sum())

    def _local(self, begin: int, end: int) -> slice:
        lo = max(0, int(np.searchsorted(self.boundaries, begin, side="right")) - 1)
        hi = min(len(self.boundaries), int(np.searchsorted(self.boundaries, end, side="left")) + 1)
        return slice(lo, hi)

    def best_contiguous(self, duration: int, earliest: int, latest: int) -> float:
        """Least emissions of one run starting anywhere in [earliest, latest].

        A run's emissions are linear in its start between the moments when its start or its end
        crosses a boundary of the series, so the least is at one of those moments or at an end.
        """
        local = self._local(earliest, latest + duration)
        b = self.boundaries[local]
        starts = np.concatenate((b, b - duration, [earliest, latest]))
        starts = starts[(starts >= earliest) & (starts <= latest)]
        at_start = np.interp(starts, self.boundaries, self.integral)
        at_end = np.interp(starts + duration, self.boundaries, self.integral)
        return float((at_end - at_start).min())

    def best_split(self, duration: int, begin: int, end: int) -> float:
        """Least emissions of `duration` seconds taken anywhere in [begin, end), in any pieces:
        the cleanest stretches first."""
        local = self._local(begin, end)
        edges = np.clip(self.boundaries[local], begin, end)
        lengths, values = np.diff(edges), self.values[local][:len(edges) - 1]
        order = np.argsort(values, kind="stable")
        taken = np.minimum(lengths[order], np.maximum(0.0, duration - np.concatenate(
            ([0.0], np.cumsum(lengths[order])[:-1]))))
        if taken.sum() < duration - 1e-6:
            raise ValueError("the recording does not cover the job's window")
        return float((taken * values[order]).sum())


# -- one case ---------------------------------------------------------------------------------------

def arrivals(dataset: Dataset, case: Case, every: int, days: Optional[int] = None) -> np.ndarray:
    """Arrival times (epoch seconds, on the hour) whose whole allowed window lies in the data."""
    end = dataset.end if days is None else min(dataset.end, dataset.begin + days * 86400)
    last = dataset.data_end - case.slack - case.duration  # the recording must cover the window
    if case.daily_at is not None:
        first = dataset.begin + ((case.daily_at * HOUR - dataset.begin) % 86400)
        step = 86400
    else:
        first, step = dataset.begin, every * HOUR
    times = np.arange(first, end, step, dtype=np.int64)
    return times[times <= last]


def new_cache() -> ForecastCache:
    # The replay provider's shared_cache is False, so the engine's data source keeps nothing in it.
    return ForecastCache(redis_url=None, ttl=300, stale_ttl=3600, lock_seconds=1, failure_backoff=0)


def simulate(recorded: ReplayProvider, dataset: Dataset, case: Case, kind: ForecastKind,
             every: int = DEFAULT_EVERY, days: Optional[int] = None, seed: int = 0) -> CaseResult:
    """Ask the engine at every arrival; measure its choices on the true series."""
    zone = dataset.zone
    series = recorded.recorded(zone)
    truth = Truth(series)
    times = arrivals(dataset, case, every, days)
    # "perfect": the forecast reaches the end of the job's allowed window.
    hours = kind.hours if kind.hours is not None else -(-(case.slack + case.duration) // HOUR)
    provider = recorded.with_options(forecast_hours=hours, noise=kind.noise, seed=seed)
    engine = CarbonEngine(provider, new_cache())
    realized, reference, oracle = (np.empty(len(times)) for _ in range(3))
    unscheduled = 0
    asks = np.zeros(len(times), dtype=np.int64)
    claims = [0, 0]  # answers on estimates, of which the truth was within the stated error

    def judge(answer: Outcome) -> None:
        claim = stated_claim(answer)
        if claim is not None:
            spans = chosen_intervals(answer)
            truth_mean = truth.emissions(spans) / sum(b - a for a, b in spans)
            claims[0] += 1
            claims[1] += truth_mean <= claim[0] + claim[1] + 1e-9
    for i, now in enumerate(times.tolist()):
        job = Job(duration=case.duration, zones=(zone,), earliest_start=now,
                  latest_start=now + case.slack, interruptible=case.interruptible,
                  extend_horizon=kind.extend_horizon)
        at_once = [(now + case.reference_delay, now + case.reference_delay + case.duration)]
        outcome = engine.optimize([job], from_epoch(now))[0]
        judge(outcome)
        for _ in range(MAX_ASKS if kind.replan else 0):
            # The client's rule (carbon-optimizer wait): at replan_at, if it comes no later than
            # the start, ask again with what is left of the window; the later answer stands.
            again = outcome.coverage.replan_at if isinstance(outcome, Schedule) else None
            if again is None or again > outcome.start or again > job.latest_start:
                break
            again = min(again + ASK_LATENCY, job.latest_start)
            job = replace(job, earliest_start=again)
            later = engine.optimize([job], from_epoch(again))[0]
            asks[i] += 1
            if not isinstance(later, Schedule):
                break  # no answer then: the plan in hand stands
            judge(later)
            outcome = later
        job = replace(job, earliest_start=now)
        intervals = chosen_intervals(outcome)
        if intervals:
            _check(intervals, job)
        else:  # no plan: the caller runs the job at once
            unscheduled += 1
            intervals = at_once
        realized[i] = truth.emissions(intervals)
        reference[i] = truth.emissions(at_once)
        oracle[i] = (truth.best_split(case.duration, now, now + case.slack + case.duration)
                     if case.interruptible else
                     truth.best_contiguous(case.duration, now, now + case.slack))
    return CaseResult(dataset.label, case.name, kind.name, realized, reference, oracle, unscheduled,
                      asks, claims[0], claims[1])


def datasets_for(recorded: ReplayProvider, zones: Sequence[str], years: Sequence[int]) -> list[Dataset]:
    """One dataset per zone and year; arrivals in that year, windows may run into the next."""
    found = []
    for zone in zones:
        series = recorded.recorded(zone)
        for year in years:
            begin = to_epoch(datetime(year, 1, 1, tzinfo=timezone.utc))
            if series.start_epoch <= begin < series.end_epoch:
                year_end = to_epoch(datetime(year + 1, 1, 1, tzinfo=timezone.utc))
                found.append(Dataset(f"{zone} {year}", zone, begin, year_end, series.end_epoch))
    return found


def _task(args) -> list[dict]:
    recorded, dataset, case, kinds, every, days = args
    # A kind's noise seed is its place in FORECASTS, so that a --forecasts subset draws the same.
    return [simulate(recorded, dataset, case, kind, every, days,
                     seed=FORECASTS.index(kind) if kind in FORECASTS else i).summary()
            for i, kind in enumerate(kinds)]


def run(recorded: ReplayProvider, datasets: Sequence[Dataset], cases=CASES, forecasts=FORECASTS,
        every: int = DEFAULT_EVERY, days: Optional[int] = None, workers: int = 1) -> list[dict]:
    """Summaries for every dataset x case x forecast kind, in that order."""
    tasks = [(recorded, d, c, list(forecasts), every, days) for d in datasets for c in cases]
    if workers <= 1:
        parts = [_task(t) for t in tasks]
    else:  # cases are independent: one per process
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_task, tasks))
    return [row for part in parts for row in part]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data-portal exports (*.csv)")
    parser.add_argument("--zones", nargs="+", default=["ES", "US-CAL-CISO"])
    parser.add_argument("--years", nargs="+", type=int, default=[2021, 2022])
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY, help="hours between arrivals")
    parser.add_argument("--days", type=int, default=None, help="only the first DAYS of each year")
    parser.add_argument("--cases", nargs="+", default=None,
                        help="only the cases whose name contains one of these (e.g. '24 h job')")
    parser.add_argument("--forecasts", nargs="+", default=None,
                        help="only the forecast kinds whose name contains one of these")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "backtest.md",
                        help="markdown to update between its markers ('' for none)")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "backtest.png")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    recorded = ReplayProvider.from_directory(args.data)
    datasets = datasets_for(recorded, args.zones, args.years)
    if not datasets:
        parser.error(f"no data for zones {args.zones} in years {args.years} under {args.data}")
    cases = [c for c in CASES if args.cases is None or any(p in c.name for p in args.cases)]
    kinds = [k for k in FORECASTS if args.forecasts is None or any(p in k.name for p in args.forecasts)]
    if not cases or not kinds:
        parser.error(f"no case matches {args.cases} or no forecast kind matches {args.forecasts}")
    rows = run(recorded, datasets, cases, kinds, every=args.every, days=args.days,
               workers=args.workers)
    seconds = time.perf_counter() - began
    print(table(rows))
    print("\n" + "\n".join(f"- {note}" for note in findings(rows)))
    calls = sum(r["jobs"] for r in rows)
    if str(args.png):
        args.png.parent.mkdir(parents=True, exist_ok=True)
        chart(rows, args.png)
    if str(args.doc) not in ("", "."):
        given = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
        meta = {"command": ".venv/bin/python -m tools.backtest" + (f" {given}" if given else ""),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": machine(), "seconds": seconds, "calls": calls, "commit": commit_label(),
                "every": args.every, "days": args.days}
        write_doc(args.doc, rows, meta, os.path.relpath(args.png, args.doc.parent))
    print(f"\n{calls} engine calls in {seconds:.1f} s. Data: {ATTRIBUTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
