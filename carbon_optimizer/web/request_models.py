"""Request models: they validate requests (and document them in the OpenAPI document) and turn a
workload into a `Job`."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Mapping, Optional, Sequence, Union

from pydantic import (
    AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator,
    StrictBool, StrictInt, TypeAdapter, ValidationError, WithJsonSchema, model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from carbon_optimizer.data.providers.base import SIGNALS, SignalName
from carbon_optimizer.errors import FieldError
from carbon_optimizer.scheduling.model import CapacityLimits, Job
from carbon_optimizer.settings import ZONE_KEY_PATTERN
from carbon_optimizer.timeseries import rfc3339, to_epoch

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



# A plan's id as answers give it (ledger/records.py new_plan_id): 32 hexadecimal digits.
PLAN_ID_PATTERN = r"^[0-9a-f]{32}$"


def plan_id_problem(value: object) -> Optional[str]:
    """Why `value` is not a plan id (None when it is one)."""
    if isinstance(value, str) and re.fullmatch(PLAN_ID_PATTERN, value):
        return None
    return f"must be the plan_id of an earlier answer: 32 hexadecimal digits (got {_shown(value)})"


def _plan_id(value: object) -> object:
    found = plan_id_problem(value)
    if found is not None:
        raise ValueError(found)
    return value


PlanId = Annotated[str, PlainValidator(_plan_id), WithJsonSchema({
    "type": "string", "pattern": PLAN_ID_PATTERN, "examples": ["3f2b6c1e9a7d4e0b8c5a1f6d2e9b7c40"]})]


def _minutes(value: Optional[timedelta]) -> str:
    return "none" if value is None else f"{value.total_seconds() / 60:g} min"


SIGNAL_DESCRIPTION = (
    "the carbon signal to schedule on: " + "; ".join(f"`{s.name}`: {s.description}" for s in SIGNALS.values())
    + ". Served by the configured providers (GET /api/v1/zones lists them); default: the first "
      "configured. One request, one signal: zones are never compared across signals")


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
    interruptible: StrictBool = Field(
        False, description="may run in chunks; the answer lists them (the exact optimum over whole "
                           "minutes; a search over its documented bound, about a day's run in a "
                           "3-day window in 10 chunks, is refused 422 too_large naming the knobs)")
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
    signal: Optional[SignalName] = Field(None, description=SIGNAL_DESCRIPTION)
    replan_of: Optional[PlanId] = Field(
        None, description="asking again for the same job (at replan_at, or a last check before "
                          "its start): the plan_id of the answer this one revises, so that the "
                          "plan ledger counts the job once")

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
    signal: Optional[SignalName] = Field(
        None, description=SIGNAL_DESCRIPTION + "; for the whole batch (a workload's own must agree)")


OptimizeRequest = Union[Workload, WorkloadBatch]


class RunStartedReport(BaseModel):
    """POST /api/v1/plans/{plan_id}/started: a planned run really started."""
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"started_at": "2026-11-23T08:00:00Z"}]})

    started_at: Optional[Timestamp] = Field(
        None, description="when the run started (default: when the service received the report)")
