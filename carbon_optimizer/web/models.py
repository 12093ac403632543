"""Request and response models: they validate requests and generate the OpenAPI document."""

from __future__ import annotations

import functools
import math

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal, Mapping, Optional, Sequence, Union

from pydantic import (
    AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer,
    PlainValidator, StrictBool, StrictInt, TypeAdapter,
    ValidationError,
    WithJsonSchema, model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from carbon_optimizer.data.cloud_regions import CloudRegion
from carbon_optimizer.errors import FailureCode, FieldError
from carbon_optimizer.scheduling.model import (
    CapacityLimits, Job, Outcomes, Schedule, Unschedulable, ZoneFailure, ZoneSeries,
)
from carbon_optimizer.settings import ZONE_KEY_PATTERN
from carbon_optimizer.timeseries import ForecastSeries, from_epoch, rfc3339, to_epoch

MAX_DURATION = timedelta(days=7)
MAX_WINDOW = timedelta(days=31)
MAX_FORECAST_HOURS = 31 * 24  # GET /forecast?hours=: as far as an allowed window may reach
ZONE_PATTERN = ZONE_KEY_PATTERN
# What a client may name as a location: a zone key (DE) or a cloud region (aws:eu-west-1). Loose on
# purpose, so that a near miss ("de", "eu-west-1") reaches the lookup and is answered with the
# close matches; still no spaces, slashes or other characters that mean nothing here.
LOCATION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$"
ISO_DURATION_PATTERN = r"^P(?!$)(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$"

_timedelta = TypeAdapter(timedelta)


def _duration(value: object) -> object:
    """Integer minutes, or an ISO 8601 duration string such as PT2H30M."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO 8601 duration in days, hours and minutes such as PT2H30M or P2D (no years or months), or whole minutes")
    if isinstance(value, int):
        if abs(value) > 10 ** 7:  # beyond any valid duration, and beyond what timedelta holds
            raise ValueError("must be above 0 and at most 7 days")
        return timedelta(minutes=value)
    if isinstance(value, str):
        text = value.strip()
        parsed = (_parse_short_iso_duration if len(text) <= 32 else _parse_iso_duration)(text)
        if parsed is not None:
            return parsed
    raise ValueError("must be an ISO 8601 duration in days, hours and minutes such as PT2H30M or P2D (no years or months), or whole minutes")


def _parse_iso_duration(text: str) -> Optional[timedelta]:
    """An ISO 8601 duration's timedelta, None when `text` is not one."""
    if not re.fullmatch(ISO_DURATION_PATTERN, text):
        return None
    try:
        return _timedelta.validate_python(text)
    except ValidationError:
        return None


# A batch repeats the same few durations: each is parsed once (timedeltas are immutable). Short
# texts only, so that the cache's memory stays small whatever clients send.
_parse_short_iso_duration = functools.lru_cache(maxsize=512)(_parse_iso_duration)


def _iso_duration(value: object) -> object:
    if isinstance(value, str):
        return _duration(value)
    raise ValueError("must be an ISO 8601 duration such as PT4H")


Duration = Annotated[timedelta, BeforeValidator(_duration), WithJsonSchema({
    "oneOf": [
        {"type": "string", "pattern": ISO_DURATION_PATTERN, "examples": ["PT2H30M"]},
        {"type": "integer", "minimum": 1, "description": "minutes"},
    ],
    "description": "ISO 8601 duration or integer minutes"})]
IsoDuration = Annotated[timedelta, BeforeValidator(_iso_duration), WithJsonSchema({
    "type": "string", "pattern": ISO_DURATION_PATTERN, "examples": ["PT6H"],
    "description": "ISO 8601 duration"})]
Location = Annotated[str, Field(
    pattern=LOCATION_PATTERN, examples=["DE", "aws:eu-west-1"],
    description="an Electricity Maps zone key (DE), or a cloud region as provider:region "
                "(aws:eu-west-1, gcp:europe-west4, azure:westeurope); GET /api/v1/zones lists both")]
LOCATION_ADAPTER = TypeAdapter(Location)


def _timestamp(value: object) -> object:
    """RFC 3339 text only, as documented: pydantic alone would also take epoch numbers ("0", 0)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.match(r"\d{4}-\d{2}-\d{2}[Tt ]", value):
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-11-23T08:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    """The instant in UTC, once, here: every later step (window arithmetic, epochs, messages) can
    then count on it. An offset can carry a valid local time out of the calendar
    (0001-01-01T00:00:00+14:00 is in year 0 in UTC): refused here, naming the value."""
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z once in UTC "
                         f"(got {value.isoformat()})") from None


Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp), AfterValidator(_in_utc),
                      Field(description="RFC 3339 timestamp with an offset", examples=["2026-11-23T08:00:00Z"])]




def _minutes(value: Optional[timedelta]) -> str:
    return "none" if value is None else f"{value.total_seconds() / 60:g} min"


class Workload(BaseModel):
    """One job to place in the cleanest window (and zone)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"id": "nightly-build", "duration": "PT1H30M", "zones": ["DE", "FR"],
                      "max_delay": "PT12H", "power_kw": 2.5}]})

    id: Optional[str] = Field(None, max_length=200, description="echoed back")
    duration: Duration
    zones: Optional[list[Location]] = Field(
        None, min_length=1, max_length=50,
        description="candidate locations: zone keys or cloud regions; default from configuration. "
                    "Locations in the same zone count once (the first one named)")
    earliest_start: Optional[Timestamp] = Field(None, description="default: now")
    deadline: Optional[Timestamp] = Field(None, description="latest finish")
    latest_start: Optional[Timestamp] = None
    max_delay: Optional[IsoDuration] = Field(None, description="latest start, after earliest_start")
    power_kw: Optional[float] = Field(None, gt=0, le=1e6, allow_inf_nan=False)
    energy_kwh: Optional[float] = Field(None, gt=0, le=1e9, allow_inf_nan=False)
    interruptible: StrictBool = Field(False, description="may run in chunks; the answer lists them")
    min_chunk: Optional[Duration] = Field(None, description="shortest chunk; default: the forecast step")
    max_chunks: Optional[StrictInt] = Field(None, ge=1, le=1000, description="most chunks allowed")
    extend_horizon: StrictBool = Field(
        True, description="where the allowed window runs past the provider's forecast, search all of "
                          "it, past the forecast on estimates made from the zone's own recent "
                          "history (at most 14 days on). A window there is chosen only when it "
                          "beats the best one inside the forecast by more than the estimates' "
                          "measured error; the answer gives the estimated part and replan_at. "
                          "false: search only what the forecast covers")
    as_of: Optional[Timestamp] = Field(
        None, description="replay only (CARBON_PROVIDER=file, FILE_REPLAY=true): answer as if it "
                          "were this moment; in a batch, give it once at the top")

    @model_validator(mode="after")
    def _consistent(self) -> "Workload":
        if not self.interruptible and (self.min_chunk is not None or self.max_chunks is not None):
            raise FieldError("interruptible", "min_chunk and max_chunks need interruptible: true")
        if self.min_chunk is not None and (
                self.min_chunk <= timedelta(0) or self.min_chunk > self.duration
                or self.min_chunk % timedelta(minutes=1)):
            raise FieldError("min_chunk", f"min_chunk must be whole minutes, above 0 and at most the duration (got {_minutes(self.min_chunk)} for a duration of {_minutes(self.duration)})")
        if self.duration <= timedelta(0) or self.duration > MAX_DURATION:
            raise FieldError("duration", f"duration must be above 0 and at most 7 days (got {_minutes(self.duration)})")
        if self.duration % timedelta(minutes=1):
            raise FieldError("duration", f"duration must be a whole number of minutes (got {self.duration.total_seconds():g} s)")
        limits = [n for n in ("deadline", "latest_start", "max_delay") if getattr(self, n) is not None]
        if len(limits) > 1:
            raise FieldError(limits[1], f"give at most one of deadline, latest_start, max_delay (got {', '.join(limits)})")
        if self.max_delay is not None and self.max_delay < timedelta(0):
            raise FieldError("max_delay", f"max_delay must not be negative (got {_minutes(self.max_delay)})")
        if self.power_kw is not None and self.energy_kwh is not None:
            raise FieldError("energy_kwh", "give power_kw or energy_kwh, not both")
        if self.zones is not None and len(set(self.zones)) != len(self.zones):
            raise FieldError("zones", "zones must not repeat")
        return self

    def _window_field(self) -> str:
        """The field that set the end of the allowed window (the one to change when it is wrong)."""
        for name in ("deadline", "latest_start", "max_delay"):
            if getattr(self, name) is not None:
                return name
        return "earliest_start" if self.earliest_start is not None else "duration"

    def _out_of_calendar(self, earliest: datetime, default_window: timedelta) -> str:
        """Why the window's end cannot be computed, with the values that put it past the calendar."""
        if self.deadline is not None:
            reach = f"deadline {rfc3339(self.deadline)} minus duration {_minutes(self.duration)}"
        elif self.max_delay is not None:
            reach = f"earliest start {rfc3339(earliest)} plus max_delay {_minutes(self.max_delay)}"
        else:
            reach = (f"earliest start {rfc3339(earliest)} plus the default window of "
                     f"{_minutes(default_window)}")
        return f"the allowed window must lie between the years 1 and 9999 ({reach} does not)"

    def to_job(self, now: datetime, default_zones: list[str], default_window: timedelta,
               zones: Optional[Sequence[str]] = None) -> Job:
        """Apply defaults; raise ValueError when the allowed window is empty or too long. `zones`,
        when given, are the zones the locations asked resolved to (they win over `self.zones`)."""
        earliest = self.earliest_start or now
        try:
            if self.deadline is not None:
                latest = self.deadline - self.duration
            elif self.latest_start is not None:
                latest = self.latest_start
            elif self.max_delay is not None:
                latest = earliest + self.max_delay
            else:
                latest = earliest + default_window - self.duration
        except OverflowError:
            raise FieldError(self._window_field(), self._out_of_calendar(earliest, default_window)) from None
        if latest < earliest:
            raise FieldError(self._window_field(), f"the workload cannot start and finish inside its allowed window (earliest start {rfc3339(earliest)}, latest start {rfc3339(latest)}, duration {_minutes(self.duration)})")
        if earliest < now:  # nothing starts in the past: an earliest start gone by means "from now"
            if latest < now - timedelta(minutes=1):  # a minute's grace for a client's "start now"
                raise FieldError(self._window_field(), f"the latest start ({rfc3339(latest)}) has passed (now is "
                                 f"{rfc3339(now)}): the workload can no longer start inside its "
                                 "allowed window")
            earliest, latest = now, max(latest, now)
        if latest - earliest > MAX_WINDOW:
            raise FieldError(self._window_field(), f"the allowed window is longer than 31 days ({rfc3339(earliest)} to {rfc3339(latest)})")
        return Job(id=self.id, duration=int(self.duration.total_seconds()),
                   zones=tuple(zones or self.zones or default_zones),
                   earliest_start=to_epoch(earliest.astimezone(timezone.utc)),
                   latest_start=to_epoch(latest.astimezone(timezone.utc)),
                   power_kw=self.power_kw, energy_kwh=self.energy_kwh,
                   interruptible=self.interruptible, max_chunks=self.max_chunks,
                   min_chunk=None if self.min_chunk is None else int(self.min_chunk.total_seconds()),
                   extend_horizon=self.extend_horizon)


MAX_CONCURRENT = 100_000
MAX_POWER_KW = 1_000_000_000
CAPACITY_KEYS = ("Keys are zone keys or cloud regions (aws:eu-west-1), resolved as workload zones "
                 "are: each must resolve to a zone some workload of the batch may run in (a limit "
                 "anywhere else would limit nothing), and each zone may be named once")


def _shown(value: object) -> str:
    """A client's value in a message, short (no braces: pydantic formats messages)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return "an object" if isinstance(value, dict) else "a list"


def _count_problem(value: object, low: int) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_CONCURRENT:
        return f"must be a whole number from {low} to {MAX_CONCURRENT} (got {_shown(value)})"
    return None


def _power_problem(value: object) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value <= MAX_POWER_KW:  # compared, not converted: a huge int would overflow
        return f"must be a number of kW above 0 and at most {MAX_POWER_KW} (got {_shown(value)})"
    return None


def _per_location(value: object, what: str, problem) -> dict:
    """An object of location -> limit, checked by hand so that each error's path is the key a
    client wrote (capacity.max_power_kw.DE), not pydantic's names for a union or a dict's key."""
    if not isinstance(value, dict):
        raise ValueError(f"must be an object of zone key or cloud region -> {what} "
                         f"(got {_shown(value)})")
    errors = []
    for key, limit in value.items():
        if not re.fullmatch(LOCATION_PATTERN, key):
            errors.append((key, "must be an Electricity Maps zone key such as DE, or a cloud region "
                                "such as aws:eu-west-1"))
        elif (found := problem(limit)) is not None:
            errors.append((key, found))
    if errors:
        raise ValidationError.from_exception_data("capacity", [
            InitErrorDetails(type=PydanticCustomError("capacity_limit", message), loc=(key,),
                             input=value[key]) for key, message in errors])
    return value


def _max_concurrent(value: object) -> object:
    if isinstance(value, dict):
        return _per_location(value, f"a whole number from 0 to {MAX_CONCURRENT}",
                             lambda limit: _count_problem(limit, 0))
    found = _count_problem(value, 1)
    if found is not None:
        raise ValueError(f"{found}, or an object of zone key or cloud region -> a whole number "
                         f"from 0 to {MAX_CONCURRENT}")
    return value


_BY_LOCATION = {"type": "object", "propertyNames": {"pattern": LOCATION_PATTERN},
                "examples": [{"DE": 2, "aws:eu-west-1": 1}]}
MaxConcurrent = Annotated[Union[int, dict[str, int]], PlainValidator(_max_concurrent), WithJsonSchema({
    "oneOf": [{"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENT,
               "description": "for all zones together"},
              {**_BY_LOCATION, "additionalProperties": {"type": "integer", "minimum": 0,
                                                        "maximum": MAX_CONCURRENT},
               "description": "per zone (0: none there)"}]})]
MaxPowerKw = Annotated[dict[str, float], PlainValidator(
    lambda value: _per_location(value, "kW", _power_problem)), WithJsonSchema({
        **_BY_LOCATION, "additionalProperties": {"type": "number", "exclusiveMinimum": 0,
                                                 "maximum": MAX_POWER_KW}})]


class FleetCapacity(BaseModel):
    """Limits the batch shares at every moment; the batch is then placed jointly."""
    model_config = ConfigDict(extra="forbid")
    max_concurrent: Optional[MaxConcurrent] = Field(
        None, description="workloads running at once: one number for all zones, or per zone. "
                          + CAPACITY_KEYS)
    max_power_kw: Optional[MaxPowerKw] = Field(
        None, description="per zone: the sum of running workloads' power_kw. " + CAPACITY_KEYS)

    def per_location(self) -> dict[str, dict[str, float]]:
        """The per-zone limits as asked: field name -> location -> limit (keys not yet resolved)."""
        found = {"max_concurrent": self.max_concurrent, "max_power_kw": self.max_power_kw}
        return {name: limits for name, limits in found.items() if isinstance(limits, dict)}

    def limits(self, zone_of: Mapping[str, str]) -> CapacityLimits:
        """`zone_of`: each location named as a key -> its zone (resolved as workload zones are)."""
        per_zone = self.max_concurrent if isinstance(self.max_concurrent, dict) else None
        return CapacityLimits(
            max_concurrent=None if per_zone is not None else self.max_concurrent,
            max_concurrent_per_zone={zone_of[k]: v for k, v in (per_zone or {}).items()},
            max_power_kw={zone_of[k]: float(v) for k, v in (self.max_power_kw or {}).items()})


class WorkloadBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workloads: list[Workload] = Field(min_length=1, description="at most MAX_BATCH_SIZE (default 500)")
    capacity: Optional[FleetCapacity] = Field(
        None, description="shared limits; workloads that cannot fit are reported unschedulable")
    as_of: Optional[Timestamp] = Field(
        None, description="replay only (CARBON_PROVIDER=file, FILE_REPLAY=true): answer the whole "
                          "batch as if it were this moment")


OptimizeRequest = Union[Workload, WorkloadBatch]

# -- responses ------------------------------------------------------------------------------------
# The models below document the answers (OpenAPI) and build them: each answer is made by one `of`
# classmethod from the engine's typed values, so the document and the answers cannot drift apart.

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
        description="gCO2eq/kWh: the estimates' measured absolute error at these lead times, on the "
                    "run's mean intensity (null: not measurable); the run was chosen because it "
                    "beats the best run inside the forecast by more than this")


class Chunk(Response):
    start: UtcTime
    end: UtcTime
    duration_minutes: int


class Provenance(Response):
    provider: str
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
                           "estimates' measured error: this run stays inside the forecast")

    @classmethod
    def of(cls, schedule: Schedule) -> "Provenance":
        source, coverage = schedule.source, schedule.coverage
        forecast = source.forecast
        part = None
        if coverage.estimated_start is not None:
            seconds = coverage.estimated_seconds or 0
            run = sum(b - a for a, b in schedule.intervals)
            error = coverage.estimate_error
            part = EstimatedPart(start=_moment(coverage.estimated_start), minutes=seconds // 60,
                                 share=round(seconds / max(1, run), 4),
                                 expected_error=None if error is None or not math.isfinite(error)
                                 else round(error, 2))
        return cls(provider=forecast.provider, updated_at=forecast.updated_at,
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


class ScheduledWorkload(Response):
    id: Optional[str]
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
    def of(cls, schedule: Schedule, now: datetime,
           locations: Optional[Mapping[str, str]] = None) -> "ScheduledWorkload":
        """`locations`: zone -> the location asked for it (absent: the zone key itself)."""
        job, baseline = schedule.job, schedule.baseline
        emissions = _round(schedule.emissions_grams, 3)
        baseline_emissions = _round(schedule.baseline_emissions_grams, 3)
        extra: dict = UnavailableZone.all_of(schedule.unavailable, locations)
        if job.interruptible:
            extra["chunks"] = [Chunk(start=_moment(a), end=_moment(b),
                                     duration_minutes=(b - a) // 60) for a, b in schedule.intervals]
        return cls(
            id=job.id, status="scheduled", location=_location(locations, schedule.zone),
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
    status: Literal["unschedulable"]
    code: FailureCode
    reason: str
    unavailable_zones: Optional[list[UnavailableZone]] = Field(
        None, description="zones asked for whose carbon data could not be had (present only then)")

    @classmethod
    def of(cls, failure: Unschedulable,
           locations: Optional[Mapping[str, str]] = None) -> "UnschedulableWorkload":
        return cls(id=failure.job.id, status="unschedulable", code=failure.code,
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
        description="true: no plan places more workloads, or as many for fewer grams (the exact "
                    "solver proved it, or every workload runs at its own best start). false: the "
                    "heuristic plan was kept, valid but perhaps not the best; `note` says why")
    note: Optional[str] = Field(None, description="why the plan is not proven optimal (present only then)")


class BatchResponse(Response):
    results: list[Union[ScheduledWorkload, UnschedulableWorkload]]
    summary: BatchSummary
    capacity_plan: Optional[CapacityPlanInfo] = Field(
        None, description="a batch placed under `capacity`: whether its plan is proven optimal "
                          "(present only then)")

    @classmethod
    def of(cls, outcomes: list, now: datetime,
           locations: Optional[Sequence[Mapping[str, str]]] = None) -> "BatchResponse":
        """`locations`: per workload, in order, zone -> the location asked for it."""
        per_job = locations or [{}] * len(outcomes)
        results = [ScheduledWorkload.of(o, now, where) if isinstance(o, Schedule)
                   else UnschedulableWorkload.of(o, where) for o, where in zip(outcomes, per_job)]
        scheduled = [r for r in results if isinstance(r, ScheduledWorkload)]
        grams = [r.saving_grams for r in scheduled if r.saving_grams is not None]
        extra: dict = {}
        plan = outcomes.capacity_plan if isinstance(outcomes, Outcomes) else None
        if plan is not None:
            extra["capacity_plan"] = CapacityPlanInfo(
                proven_optimal=plan.proven_optimal,
                **({} if plan.not_proven is None else {"note": plan.not_proven}))
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
                       provider=forecast.provider, updated_at=forecast.updated_at,
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
    status: Literal["ok", "degraded"]
    checks: dict[str, dict[str, Optional[str]]]


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
    served: bool = Field(description="the configured carbon-data provider serves its zone")

    @classmethod
    def of(cls, region: CloudRegion, served: frozenset[str]) -> "CloudRegionEntry":
        return cls(location=region.name, provider=region.provider, region=region.region,
                   zone=region.zone, place=region.location, source=region.source,
                   served=region.zone in served)


class ZonesResponse(Response):
    provider: str = Field(description="the configured carbon-data provider")
    zones: list[str] = Field(description="every zone key it serves, sorted")
    cloud_regions: list[CloudRegionEntry] = Field(
        description="the cloud regions a request may name instead of a zone, with their zones")

    @classmethod
    def of(cls, provider: str, zones: Sequence[str], regions: Sequence[CloudRegion]) -> "ZonesResponse":
        served = frozenset(zones)
        return cls(provider=provider, zones=sorted(served),
                   cloud_regions=[CloudRegionEntry.of(r, served) for r in regions])
