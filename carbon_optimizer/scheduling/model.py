"""The typed values of the scheduling path: what goes into a plan and what comes out.

request -> Job -> ZoneSeries per zone -> a solver (window, chunks, fleet) -> Run -> Schedule or
Unschedulable.
Times are whole epoch seconds; intensities gCO2eq/kWh; nothing here is rounded or formatted (the
web layer serialises once, at the edge).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Mapping, Optional, Union

import numpy as np

from carbon_optimizer.errors import FailureCode
from carbon_optimizer.timeseries import ForecastSeries

if TYPE_CHECKING:
    from carbon_optimizer.scheduling.estimators import ErrorReplay


# Imported from this module only (carbon_optimizer.scheduling.model), everywhere: one path per name.
@dataclass(frozen=True)
class Job:
    """One workload, in epoch seconds, defaults already applied."""
    duration: int
    zones: tuple[str, ...]
    earliest_start: int
    latest_start: int
    id: Optional[str] = None
    power_kw: Optional[float] = None
    energy_kwh: Optional[float] = None
    interruptible: bool = False        # may run in chunks
    min_chunk: Optional[int] = None    # seconds; None: the forecast step
    max_chunks: Optional[int] = None
    extend_horizon: bool = True        # past the forecast, search on estimates

    @property
    def energy(self) -> Optional[float]:
        """kWh for the whole job, when power or energy was given."""
        if self.energy_kwh is not None:
            return self.energy_kwh
        if self.power_kw is not None:
            return self.power_kw * self.duration / 3600
        return None

    @property
    def latest_end(self) -> int:
        return self.latest_start + self.duration

    @property
    def search_key(self) -> "Job":
        """The job without what only its answer reports (id, power, energy): jobs with the same
        key get the same run and the same risk gate."""
        return replace(self, id=None, power_kw=None, energy_kwh=None)


@dataclass(frozen=True)
class CapacityLimits:
    """What a batch shares at every moment; None is unlimited."""
    max_concurrent: Optional[int] = None
    max_concurrent_per_zone: Mapping[str, int] = field(default_factory=dict)
    max_power_kw: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ZoneSeries:
    """A zone's carbon data as the solvers see it, and where it came from.

    `forecast` is the provider's series; `extended` (when a search reaches past it) is the same
    series followed by estimates, flagged in its `estimated` mask; `estimate_error` the measured
    mean absolute error (gCO2eq/kWh) of each estimated point, by lead (horizon.mean_absolute);
    `error_replay` the estimator's replayed signed errors, from which the risk gate states a
    calibrated error of each run's mean (None: only `estimate_error` is known, taken as a bound).
    """
    forecast: ForecastSeries
    stale: bool = False
    fetched_at: Optional[int] = None
    extended: Optional[ForecastSeries] = None
    estimate_error: Optional[np.ndarray] = field(default=None, compare=False)
    error_replay: Optional["ErrorReplay"] = field(default=None, compare=False)
    # What the series measures, for the answer's provenance (one signal per request).
    signal: str = "average"
    units: str = "gCO2eq/kWh"
    attribution: Optional[str] = None

    @property
    def zone(self) -> str:
        return self.forecast.zone

    def searched(self, job: Job) -> ForecastSeries:
        """The series a search for `job` runs over."""
        return self.extended if job.extend_horizon and self.extended is not None else self.forecast


@dataclass(frozen=True)
class ZoneFailure:
    """A zone asked for whose carbon data could not be had."""
    zone: str
    code: FailureCode
    message: str


Zones = Mapping[str, Union[ZoneSeries, ZoneFailure]]


class _Intervals:
    """start, end and duration of a value holding `intervals` (in order; one for a contiguous
    run): a Run, and the Schedule made of one."""
    intervals: tuple[tuple[int, int], ...]

    @property
    def start(self) -> int:
        return self.intervals[0][0]

    @property
    def end(self) -> int:
        return self.intervals[-1][1]

    @property
    def duration(self) -> int:
        return sum(b - a for a, b in self.intervals)


@dataclass(frozen=True)
class Run(_Intervals):
    """A chosen run, the one value every solver returns (window, chunks, the fleet, the batched
    search): its intervals in order (one for a contiguous run), their mean intensity, and which of
    the zones searched it is in, as an index into the series the solver was given."""
    zone_index: int
    intervals: tuple[tuple[int, int], ...]
    mean_intensity: float


@dataclass(frozen=True)
class Baseline:
    """Running at the earliest allowed start (or the first covered moment) in the first zone."""
    zone: str
    start: int
    end: int
    mean_intensity: float


@dataclass(frozen=True)
class Coverage:
    """How much of the allowed window real data covers, and what of the choice rests on estimates."""
    window_coverage: float                 # share of [earliest start, latest end] the forecast covers
    search_limited_by_horizon: bool        # part of the allowed window was not searched
    estimated: bool                        # the chosen intervals rest partly on estimated values
    estimated_start: Optional[int] = None  # the part past the provider's forecast: first moment ...
    estimated_seconds: Optional[int] = None  # ... and length
    replan_at: Optional[int] = None        # when asking again may find a cleaner run (horizon.py)
    # The risk gate (horizon.risk_gate): the stated error of the estimated part of the chosen
    # window, and whether a window past the forecast looked better but not by more than that error.
    estimate_error: Optional[float] = None  # gCO2eq/kWh on the chosen run's mean
    error_coverage: Optional[float] = None  # the truth's mean is below estimate + error this often
    estimator: Optional[str] = None         # the estimator chosen for the zone (estimators.py)
    waited_for_forecast: bool = False


@dataclass(frozen=True)
class Schedule(_Intervals):
    """A plan for one job: where, when (one interval, or chunks), and what it emits."""
    job: Job
    zone: str
    intervals: tuple[tuple[int, int], ...]  # in order; one for a contiguous run
    mean_intensity: float
    baseline: Optional[Baseline]
    coverage: Coverage
    source: ZoneSeries                      # the chosen zone's data
    unavailable: tuple[ZoneFailure, ...] = ()

    @property
    def emissions_grams(self) -> Optional[float]:
        energy = self.job.energy
        return None if energy is None else self.mean_intensity * energy

    @property
    def baseline_emissions_grams(self) -> Optional[float]:
        energy = self.job.energy
        return None if energy is None or self.baseline is None else self.baseline.mean_intensity * energy

    @property
    def saving_percent(self) -> Optional[float]:
        if self.baseline is None or self.baseline.mean_intensity <= 0:
            return None
        return 100.0 * (1 - self.mean_intensity / self.baseline.mean_intensity)


@dataclass(frozen=True)
class Unschedulable:
    """Why a job has no plan."""
    job: Job
    code: FailureCode
    message: str
    unavailable: tuple[ZoneFailure, ...] = ()


Outcome = Union[Schedule, Unschedulable]


@dataclass(frozen=True)
class CapacityPlan:
    """How a batch under capacity was placed: whether the plan is proven optimal (no plan places
    more workloads, or as many for fewer grams), and if not, why (the exact model was too large,
    or its solver ran out of time: the heuristic plan was kept)."""
    proven_optimal: bool
    not_proven: Optional[str] = None
    # When not proven: at most this share of the plan's emissions is above the least any plan
    # placing the same workloads could emit (0.02: within 2 %); None when it is proven.
    gap: Optional[float] = None


class Outcomes(list):
    """A batch's outcomes in order, and `capacity_plan` when it was placed under capacity."""
    capacity_plan: Optional[CapacityPlan] = None

