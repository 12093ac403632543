"""Response models: they document the answers (OpenAPI) and build them: each answer is made by one
`of` classmethod from the engine's typed values, so the document and the answers cannot drift
apart."""

from __future__ import annotations

import functools
import math
from datetime import datetime
from typing import Annotated, Literal, Mapping, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from carbon_optimizer.data.cloud_regions import CloudRegion
from carbon_optimizer.data.feeds import Feed
from carbon_optimizer.data.providers.base import SIGNALS
from carbon_optimizer.errors import FailureCode
from carbon_optimizer.scheduling.model import Outcomes, Schedule, Unschedulable, ZoneFailure, ZoneSeries
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, rfc3339, to_epoch

# An answer repeats the same few moments (a zone's forecast start and end in every workload's
# provenance, starts on the same hours): each is written once. Equal datetimes are the same instant,
# so they have the same text.
_rfc3339 = functools.lru_cache(maxsize=4096)(rfc3339)
UtcTime = Annotated[datetime, PlainSerializer(_rfc3339, return_type=str, when_used="json"),
                    WithJsonSchema({"type": "string", "format": "date-time",
                                    "examples": ["2026-11-23T08:00:00Z"]})]


# The same few moments recur in an answer (and in the next one): each datetime is made once.
_moment = functools.lru_cache(maxsize=4096)(from_epoch)


def _time(epoch_seconds: Optional[float]) -> Optional[datetime]:
    return None if epoch_seconds is None else _moment(epoch_seconds)


def _round(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(value, digits)


class Response(BaseModel):
    """Base of every answer model."""
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> str:
        """The answer as JSON text (pydantic-core writes it, in one pass): optional members the
        builder left out are omitted, not null."""
        return self.model_dump_json(exclude_unset=True)


class EstimatedPart(Response):
    start: UtcTime
    minutes: int
    share: float = Field(description="share of the run's time that rests on estimates (0..1)")
    expected_error: Optional[float] = Field(
        description="gCO2eq/kWh: how much dirtier than estimated the run's mean intensity may be, "
                    "stated at `error_coverage`: the estimator, replayed from earlier moments of "
                    "this zone's own recent data, erred by more on the mean over these lead times "
                    "in at most that share of them (a one-sided conformal quantile; null: not "
                    "measurable). The run was chosen because it beats the best run inside the "
                    "forecast by more than this (by the higher 0.95 quantile when that run "
                    "starts before a client could ask again)")
    error_coverage: Optional[float] = Field(
        None, description="the share of replayed cases in which the truth stayed within "
                          "`expected_error` (0.9; null: the error is a bound of unknown coverage)")
    estimator: Optional[str] = Field(
        None, description="the estimator chosen for this zone by its replayed error: blend "
                          "(yesterday blended with the daily profile), daily_profile (the last "
                          "week's mean day) or weekly_naive (the last week repeated; needs two "
                          "weeks of history)")


class Chunk(Response):
    start: UtcTime
    end: UtcTime
    duration_minutes: int


SIGNAL_FIELD = "the signal the intensities are of (average, average_direct, marginal)"
UNITS_FIELD = "the unit of every intensity in this answer"
ATTRIBUTION_FIELD = "the credit the provider's licence asks for when its data is shown (null: none)"


class Provenance(Response):
    provider: str
    signal: str = Field(description=SIGNAL_FIELD)
    units: str = Field(description=UNITS_FIELD)
    attribution: Optional[str] = Field(None, description=ATTRIBUTION_FIELD)
    updated_at: Optional[UtcTime] = Field(description="when the provider last updated this forecast")
    fetched_at: Optional[UtcTime] = Field(description="when this service fetched it (null: not cached)")
    stale: bool = Field(description="served past its TTL because the provider failed")
    forecast_start: UtcTime
    forecast_end: UtcTime = Field(description="where the provider's forecast ends (estimates, if "
                                              "any, lie after it)")
    window_coverage: float = Field(description="share of the allowed window the forecast covers")
    search_limited_by_horizon: bool = Field(
        description="part of the allowed window was not searched: it runs past the forecast "
                    "(extend_horizon false) or past the 14 days of estimates after it")
    estimated: bool = Field(description="the chosen window rests partly on estimated values")
    estimated_part: Optional[EstimatedPart] = Field(
        description="the part of the chosen window past the provider's forecast")
    replan_at: Optional[UtcTime] = Field(
        description="when to ask again, with the same window, never after this run's start "
                    "(or its first chunk's): when a forecast covers the estimated part of this "
                    "run or the run on estimates that was turned down, if that comes before the "
                    "start; for a run inside the forecast whose window runs past some zone's "
                    "forecast, or a run no forecast covers before it starts, at its start (a "
                    "newer forecast may show a cleaner run; the run in hand is still offered "
                    "then, from the next whole minute); for a run on estimates, no later than the "
                    "start of the best run inside the forecast. null: the answer is final")
    waited_for_forecast: bool = Field(
        False, description="a run past the forecast looked cleaner, but not by more than the "
                           "estimates' stated error (expected_error's quantile; 0.95 when this "
                           "run starts before a client could ask again): this run stays inside "
                           "the forecast")

    @classmethod
    def of(cls, schedule: Schedule) -> "Provenance":
        source, coverage = schedule.source, schedule.coverage
        forecast = source.forecast
        part = None
        if coverage.estimated_start is not None:
            seconds = coverage.estimated_seconds or 0
            run = sum(b - a for a, b in schedule.intervals)
            error = coverage.estimate_error
            stated = error is not None and math.isfinite(error)
            part = EstimatedPart(start=_moment(coverage.estimated_start), minutes=seconds // 60,
                                 share=round(seconds / max(1, run), 4),
                                 expected_error=round(error, 2) if stated else None,
                                 error_coverage=coverage.error_coverage if stated else None,
                                 estimator=coverage.estimator)
        return cls(provider=forecast.provider, signal=source.signal, units=source.units,
                   attribution=source.attribution, updated_at=forecast.updated_at,
                   fetched_at=_time(source.fetched_at), stale=source.stale,
                   forecast_start=forecast.start, forecast_end=_moment(forecast.end_epoch),
                   window_coverage=round(coverage.window_coverage, 4),
                   search_limited_by_horizon=coverage.search_limited_by_horizon,
                   estimated=coverage.estimated, estimated_part=part,
                   replan_at=_time(coverage.replan_at),
                   waited_for_forecast=coverage.waited_for_forecast)


def _location(locations: Optional[Mapping[str, str]], zone: str) -> str:
    return (locations or {}).get(zone, zone)


LOCATION_DESCRIPTION = "the location asked for that resolved to `zone`: the zone key itself, or a cloud region"


class Baseline(Response):
    location: str = Field(description=LOCATION_DESCRIPTION)
    zone: str
    start: UtcTime
    end: UtcTime
    carbon_intensity: float


class UnavailableZone(Response):
    location: str = Field(description=LOCATION_DESCRIPTION)
    zone: str
    code: FailureCode
    message: str

    @classmethod
    def all_of(cls, failures: tuple[ZoneFailure, ...],
               locations: Optional[Mapping[str, str]] = None) -> dict:
        """The `unavailable_zones` member, when any zone failed."""
        if not failures:
            return {}
        return {"unavailable_zones": [cls(location=_location(locations, f.zone), zone=f.zone,
                                          code=f.code, message=f.message) for f in failures]}


PLAN_ID_DESCRIPTION = ("this plan's id (32 hexadecimal digits): send it as `replan_of` when asking "
                       "again for the same job, and to POST /api/v1/plans/{plan_id}/started when "
                       "the run starts")


class ScheduledWorkload(Response):
    id: Optional[str]
    plan_id: str = Field(description=PLAN_ID_DESCRIPTION)
    status: Literal["scheduled"]
    location: str = Field(description=LOCATION_DESCRIPTION)
    zone: str = Field(description="the Electricity Maps zone chosen")
    start: UtcTime = Field(description="RFC 3339, UTC, minute precision")
    end: UtcTime
    start_in_seconds: int = Field(description="whole seconds from now until start (0: start now)")
    duration_minutes: int
    carbon_intensity: float = Field(description="mean gCO2eq/kWh over the chosen window")
    baseline: Optional[Baseline] = Field(description="starting at the earliest start in the first zone")
    saving_percent: Optional[float]
    emissions_grams: Optional[float]
    baseline_emissions_grams: Optional[float]
    saving_grams: Optional[float]
    provenance: Provenance
    unavailable_zones: Optional[list[UnavailableZone]] = Field(
        None, description="zones asked for whose carbon data could not be had (present only then)")
    chunks: Optional[list[Chunk]] = Field(
        None, description="interruptible workloads: the intervals to run, in order")

    @classmethod
    def of(cls, schedule: Schedule, now: datetime, locations: Optional[Mapping[str, str]],
           plan_id: str) -> "ScheduledWorkload":
        """`locations`: zone -> the location asked for it (absent: the zone key itself)."""
        job, baseline = schedule.job, schedule.baseline
        emissions = _round(schedule.emissions_grams, 3)
        baseline_emissions = _round(schedule.baseline_emissions_grams, 3)
        extra: dict = UnavailableZone.all_of(schedule.unavailable, locations)
        if job.interruptible:
            extra["chunks"] = [Chunk(start=_moment(a), end=_moment(b),
                                     duration_minutes=(b - a) // 60) for a, b in schedule.intervals]
        return cls(
            id=job.id, plan_id=plan_id, status="scheduled", location=_location(locations, schedule.zone),
            zone=schedule.zone,
            start=_moment(schedule.start), end=_moment(schedule.end),
            start_in_seconds=max(0, schedule.start - to_epoch(now)),
            duration_minutes=job.duration // 60,
            carbon_intensity=round(schedule.mean_intensity, 3),
            baseline=None if baseline is None else Baseline(
                location=_location(locations, baseline.zone), zone=baseline.zone, start=_moment(baseline.start), end=_moment(baseline.end),
                carbon_intensity=round(baseline.mean_intensity, 3)),
            saving_percent=_round(schedule.saving_percent, 2),
            emissions_grams=emissions,
            baseline_emissions_grams=baseline_emissions,
            saving_grams=None if emissions is None or baseline_emissions is None
            else round(baseline_emissions - emissions, 3),
            provenance=Provenance.of(schedule), **extra)


class UnschedulableWorkload(Response):
    id: Optional[str]
    plan_id: None = Field(None, description="null: an unschedulable workload has no plan")
    status: Literal["unschedulable"]
    code: FailureCode
    reason: str
    unavailable_zones: Optional[list[UnavailableZone]] = Field(
        None, description="zones asked for whose carbon data could not be had (present only then)")

    @classmethod
    def of(cls, failure: Unschedulable,
           locations: Optional[Mapping[str, str]] = None) -> "UnschedulableWorkload":
        return cls(id=failure.job.id, plan_id=None, status="unschedulable", code=failure.code,
                   reason=failure.message, **UnavailableZone.all_of(failure.unavailable, locations))


class BatchSummary(Response):
    workloads: int
    scheduled: int
    unschedulable: int
    saving_grams: Optional[float] = Field(
        description="sum over the scheduled workloads that give energy; null when none does, as a "
                    "single answer's saving_grams is null without power_kw (0 would claim no saving)")


class CapacityPlanInfo(Response):
    proven_optimal: bool = Field(
        description="true: no plan over whole-minute starts places more workloads, or as many "
                    "with more energy, or as many and as much for fewer grams (the exact solver "
                    "proved it with no gap, or every workload runs at its own best start). false: "
                    "valid but perhaps not the best; `note` says why, `optimality_gap` how far")
    note: Optional[str] = Field(None, description="why the plan is not proven optimal (present only then)")
    optimality_gap: Optional[float] = Field(
        None, description="present when the plan is not proven optimal: at most this share of the "
                          "plan's emissions (each workload's power_kw, 1 kW without it, times its "
                          "intensity and time) lies above a lower bound on what any plan placing the "
                          "same workloads could emit (0.02: within 2 %). The bound is HiGHS' when "
                          "it ran, else every placed workload at its own best start as if there "
                          "were no limit; it says nothing about leaving out other workloads")


class BatchResponse(Response):
    results: list[Union[ScheduledWorkload, UnschedulableWorkload]]
    summary: BatchSummary
    capacity_plan: Optional[CapacityPlanInfo] = Field(
        None, description="a batch placed under `capacity` (present only then): whether its plan "
                          "is proven optimal, else why not and its optimality_gap. A batch of at "
                          "most 10 workloads gets the proven optimum when its exact model is small "
                          "enough to solve within the request's time; when not every workload fits, "
                          "the plan places the most workloads, then the most energy (power_kw x "
                          "duration, 1 kW without power_kw), then emits the least")

    @classmethod
    def of(cls, outcomes: list, now: datetime, locations: Optional[Sequence[Mapping[str, str]]],
           plan_ids: Sequence[Optional[str]]) -> "BatchResponse":
        """`locations`: per workload, in order, zone -> the location asked for it; `plan_ids`:
        per workload, its plan's id (None where it is unschedulable)."""
        per_job = locations or [{}] * len(outcomes)
        results = [ScheduledWorkload.of(o, now, where, plan_id) if isinstance(o, Schedule)
                   else UnschedulableWorkload.of(o, where)
                   for o, where, plan_id in zip(outcomes, per_job, plan_ids)]
        scheduled = [r for r in results if isinstance(r, ScheduledWorkload)]
        grams = [r.saving_grams for r in scheduled if r.saving_grams is not None]
        extra: dict = {}
        plan = outcomes.capacity_plan if isinstance(outcomes, Outcomes) else None
        if plan is not None:
            extra["capacity_plan"] = CapacityPlanInfo(
                proven_optimal=plan.proven_optimal,
                **({} if plan.not_proven is None else {"note": plan.not_proven}),
                **({} if plan.gap is None else {"optimality_gap": round(plan.gap, 6)}))
        return cls(results=results, summary=BatchSummary(
            workloads=len(results), scheduled=len(scheduled),
            unschedulable=len(results) - len(scheduled),
            saving_grams=round(sum(grams), 3) if grams else None), **extra)


class ForecastPoint(Response):
    datetime: UtcTime
    carbon_intensity: float
    estimated: bool


class ForecastProvenance(Response):
    provider: str
    signal: str = Field(description=SIGNAL_FIELD)
    units: str = Field(description=UNITS_FIELD)
    attribution: Optional[str] = Field(None, description=ATTRIBUTION_FIELD)
    updated_at: Optional[UtcTime]
    fetched_at: Optional[UtcTime]
    stale: bool
    forecast_start: UtcTime
    forecast_end: UtcTime = Field(description="where the provider's forecast ends; points after it "
                                              "are estimates (flagged estimated)")


class ForecastResponse(Response):
    location: str = Field(description=LOCATION_DESCRIPTION)
    zone: str
    step_seconds: int
    forecast: list[ForecastPoint]
    provenance: ForecastProvenance
    history: Optional[list[ForecastPoint]] = Field(
        None, description="with history=true: the provider's recent measurements before the forecast "
                          "starts (the last day or so; empty when it has none), normalised like the "
                          "forecast: estimated marks a missing measurement held at the value before")

    @classmethod
    def of(cls, zone: ZoneSeries, location: Optional[str] = None,
           history: Optional[ForecastSeries] = None, with_history: bool = False) -> "ForecastResponse":
        extra: dict = {}
        if with_history:
            extra["history"] = [] if history is None else [
                ForecastPoint(datetime=from_epoch(t), carbon_intensity=v, estimated=e)
                for t, v, e in zip(history.boundaries()[:-1].tolist(), history.values.tolist(),
                                   history.estimated_mask().tolist())
                if t < zone.forecast.start_epoch]  # where the forecast speaks, it is shown instead
        forecast = zone.forecast
        series = zone.extended or forecast
        estimated = series.estimated_mask().tolist()
        points = [ForecastPoint(datetime=from_epoch(t), carbon_intensity=v, estimated=e)
                  for t, v, e in zip(series.boundaries()[:-1].tolist(), series.values.tolist(),
                                     estimated)]
        return cls(location=location or forecast.zone, zone=forecast.zone,
                   step_seconds=series.step_seconds, forecast=points,
                   provenance=ForecastProvenance(
                       provider=forecast.provider, signal=zone.signal, units=zone.units,
                       attribution=zone.attribution, updated_at=forecast.updated_at,
                       fetched_at=_time(zone.fetched_at), stale=zone.stale,
                       forecast_start=forecast.start, forecast_end=forecast.end), **extra)


class ErrorDetail(Response):
    field: str
    message: str
    suggestions: Optional[list[str]] = Field(
        None, description="for an unknown zone or cloud region: the closest ones this service knows")


class ErrorBody(Response):
    code: FailureCode
    message: str
    details: Optional[list[ErrorDetail]] = None


class ErrorResponse(Response):
    error: ErrorBody


class HealthResponse(Response):
    status: Literal["ok", "degraded"] = Field(
        description="degraded: a dependency the answers rest on is failing (Redis, a provider, "
                    "the secret store, shared rate limits). The `ledger` check is shown but never "
                    "makes the service degraded: a ledger outage loses no answer")
    checks: dict[str, dict[str, Union[str, int, float, bool, None]]]


class RunStartedResponse(Response):
    status: Literal["accepted"] = Field(description="handed to the plan ledger, which writes it "
                                                    "shortly (not checked against the plan yet)")
    plan_id: str
    started_at: UtcTime


class LiveResponse(Response):
    status: Literal["ok"]


class CloudRegionEntry(Response):
    location: str = Field(description="how to name it in a request: provider:region")
    provider: str
    region: str
    zone: str = Field(description="the Electricity Maps zone whose grid powers the region")
    place: str = Field(description="where the region is")
    source: str = Field(description="the public page that says where the region is (or "
                                    "\"configuration\" for a CLOUD_REGION_OVERRIDES entry)")
    served: bool = Field(description="the provider of the signal listed serves it (one that "
                                     "locates regions by coordinates: once this worker located it)")
    signals: list[str] = Field(description="the signals known to serve it here: those of providers "
                                           "keyed like the table (Electricity Maps, demo, files) "
                                           "that serve its zone; a provider that locates regions "
                                           "by coordinates (WattTime, NESO) is asked on first use")

    @classmethod
    def of(cls, region: CloudRegion, served: bool, signals: list[str]) -> "CloudRegionEntry":
        return cls(location=region.name, provider=region.provider, region=region.region,
                   zone=region.zone, place=region.location, source=region.source,
                   served=served, signals=signals)


class SignalEntry(Response):
    name: str
    description: str
    provider: str = Field(description="the provider that serves it (the first configured for it)")
    units: str
    attribution: Optional[str] = Field(None, description=ATTRIBUTION_FIELD)
    default: bool = Field(description="served to requests that name no signal")


class ZonesResponse(Response):
    provider: str = Field(description="the provider of the signal listed")
    signal: str = Field(description="the signal whose zones are listed (?signal=, default: the "
                                    "deployment's default)")
    zones: list[str] = Field(description="every zone key it serves, sorted")
    signals: list[SignalEntry] = Field(description="every signal this deployment serves")
    cloud_regions: list[CloudRegionEntry] = Field(
        description="the cloud regions a request may name instead of a zone, with their zones")

    @classmethod
    def of(cls, feed: Feed, zones: Sequence[str], regions: Sequence[CloudRegion],
           feeds: Sequence[Feed]) -> "ZonesResponse":
        served = frozenset(zones)
        first: dict[str, Feed] = {}
        for f in feeds:
            first.setdefault(f.signal, f)
        # Other feeds' lists only when held: this answer never fetches.
        lists = {s: (served if f is feed else f.source.held_zones()) for s, f in first.items()}

        def serves(f: Feed, zones_held: Optional[frozenset[str]], region: CloudRegion) -> bool:
            zone = f.region_zone(region)
            if zone is None:
                return False
            # A located zone is one the provider gave for it: served even if its list is not held.
            return zone in zones_held if zones_held is not None else not f.table_zones

        return cls(provider=feed.provider, signal=feed.signal, zones=sorted(served),
                   signals=[SignalEntry(name=s, description=SIGNALS[s].description, provider=f.provider,
                                        units=f.units, attribution=f.attribution,
                                        default=f is feeds[0]) for s, f in first.items()],
                   cloud_regions=[CloudRegionEntry.of(r, serves(feed, served, r), [
                       s for s, f in first.items() if serves(f, lists[s], r)]) for r in regions])
