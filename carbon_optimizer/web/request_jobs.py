"""A request's body turned into the jobs it asks for: workloads parsed and validated, every
location (workload zones and capacity keys alike) resolved to a zone by one engine call, and every
fault reported with the field that holds it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from pydantic import ValidationError

from carbon_optimizer.data.cloud_regions import ResolvedLocations
from carbon_optimizer.errors import FailureCode, FieldError, RequestError
from carbon_optimizer.scheduling.model import CapacityLimits, Job
from carbon_optimizer.settings import Settings
from carbon_optimizer.timeseries import rfc3339
from carbon_optimizer.web.app_state import app_state
from carbon_optimizer.web.error_details import (
    MAX_ERROR_DETAILS, Details, field_path, unknown_location, validation_error,
)
from carbon_optimizer.web.request_body import stop_if_gone
from carbon_optimizer.web.request_models import FleetCapacity, Workload, WorkloadBatch

# What one request's locations may cost before any budget exists (DEPLOYMENT.md, "What one request
# may cost"): distinct names are counted first (a set over the request, cheap), each distinct name
# is resolved once (a dict lookup), and only the first few unknown ones get close matches (~0.4 ms
# each, over every zone and region); an error lists its first details and counts the rest, so its
# size does not grow with the request's.
MAX_LOCATIONS = 100
MAX_SUGGESTED_LOCATIONS = 5


@dataclass(frozen=True)
class JobsAsked:
    """An optimize request, ready for the engine."""

    now: datetime                        # the request's "now" (as_of when replaying)
    jobs: list[Job]
    locations: list[dict[str, str]]      # per job: zone -> the location asked for it
    capacity: Optional[CapacityLimits]   # a batch's shared limits (None: each job on its own)
    batch: bool                          # asked as {"workloads": [...]}
    signal: Optional[str] = None         # the signal asked for (None: the deployment's default)
    replan_of: tuple[Optional[str], ...] = ()  # per job: the plan it revises (a re-ask), if any


def jobs_asked(body: object, gone: Optional[Callable[[], bool]] = None) -> JobsAsked:
    """The jobs `body` asks for, or a RequestError naming every field to fix. `gone` says when the
    client has left: the work stops then."""
    state = app_state()
    settings = state.settings
    workloads, batch = _parse_workloads(body, settings.max_batch_size)
    now = _as_of(workloads, batch, settings) or state.clock()
    signal = _signal(workloads, batch)
    state.engine.feeds.get(signal)  # SignalNotServed (400, naming those served) before any location
    _count_locations(workloads, settings.default_zones, batch is not None)
    capacity = batch.capacity if batch is not None else None
    keys = _capacity_keys(capacity)
    names = [name for workload in workloads for name in (workload.zones or settings.default_zones)]
    resolved = state.engine.resolve_locations(names + keys, MAX_SUGGESTED_LOCATIONS, signal)
    jobs, locations = _jobs(workloads, batch is not None, now, settings, resolved, gone)
    limits = _capacity_limits(capacity, locations, resolved) if capacity is not None else None
    return JobsAsked(now, jobs, locations, limits, batch is not None, signal,
                     tuple(workload.replan_of for workload in workloads))


def _signal(workloads: list[Workload], batch: Optional[WorkloadBatch]) -> Optional[str]:
    """The one signal the request asks for: the batch's, or its workloads' (all the same). Zones
    are never compared across signals, so a request naming two is refused, naming both."""
    asked = {w.signal for w in workloads if w.signal is not None}
    if batch is not None and batch.signal is not None:
        asked.add(batch.signal)
    if len(asked) > 1:
        fields = [f"workloads[{i}].signal" for i, w in enumerate(workloads)
                  if w.signal is not None and (batch is None or w.signal != batch.signal)]
        raise RequestError(FailureCode.INVALID_REQUEST, "one request, one signal", details=[
            {"field": field, "message": f"this request asks for {' and '.join(sorted(asked))}; "
                                        "zones are never compared across signals: send one "
                                        "request per signal"} for field in fields[:MAX_ERROR_DETAILS]])
    return next(iter(asked), None)


def _parse_workloads(body: object, max_batch_size: int) -> tuple[list[Workload], Optional[WorkloadBatch]]:
    """The workloads asked for, and the batch they came in (None for a single workload)."""
    if not isinstance(body, dict):
        raise RequestError(FailureCode.INVALID_REQUEST, "the body must be a JSON object: one workload, or {\"workloads\": [...]}")
    if "workloads" in body:
        items = body["workloads"]
        if isinstance(items, list) and len(items) > max_batch_size:
            raise RequestError(FailureCode.INVALID_REQUEST, "too many workloads", details=[
                {"field": "workloads", "message": f"at most {max_batch_size} workloads per request"}])
        try:
            batch = WorkloadBatch.model_validate(body)
            return batch.workloads, batch
        except ValidationError as exc:
            raise validation_error(exc) from None
    try:
        return [Workload.model_validate(body)], None
    except ValidationError as exc:
        raise validation_error(exc) from None


def _as_of(workloads: list[Workload], batch: Optional[WorkloadBatch], settings: Settings) -> Optional[datetime]:
    """The moment a replay request answers as of: `as_of` of the single workload or of the batch
    (not of a workload inside a batch). Only a replaying file provider can answer as of another
    moment; elsewhere the field is refused, naming it."""
    if batch is not None:
        inside = [i for i, w in enumerate(workloads) if w.as_of is not None]
        if inside:
            raise RequestError(FailureCode.INVALID_REQUEST, "as_of goes at the top of a batch", details=[
                {"field": f"workloads[{i}].as_of", "message": "give as_of once, at the top of the batch"}
                for i in inside])
    as_of = batch.as_of if batch is not None else workloads[0].as_of
    if as_of is None:
        return None
    if settings.providers[0] != "file" or not settings.file_replay:
        raise RequestError(FailureCode.INVALID_REQUEST, "as_of is only accepted by a replaying service",
                           details=[{"field": "as_of", "message":
                                     "as_of needs CARBON_PROVIDER=file and FILE_REPLAY=true on the "
                                     f"service; got {rfc3339(as_of)}"}])
    return as_of.astimezone(timezone.utc)


def _count_locations(workloads: list[Workload], default_zones: list[str], batch: bool) -> None:
    """Refuse, before resolving any, a request naming more than MAX_LOCATIONS distinct locations."""
    names = {name for workload in workloads for name in (workload.zones or default_zones)}
    if len(names) > MAX_LOCATIONS:
        raise RequestError(FailureCode.INVALID_REQUEST, "too many distinct zones and cloud regions", details=[
            {"field": "workloads[*].zones" if batch else "zones",
             "message": f"at most {MAX_LOCATIONS} distinct zones and cloud regions in one request "
                        f"(got {len(names)})"}])


def _capacity_keys(capacity: Optional[FleetCapacity]) -> list[str]:
    """The capacity's keys to resolve with the workloads' locations: none when a limit has more
    keys than a batch may name locations (refused after the workloads' faults, unresolved)."""
    asked = capacity.per_location() if capacity is not None else {}
    if any(len(limits) > MAX_LOCATIONS for limits in asked.values()):
        return []
    return [key for limits in asked.values() for key in limits]


def _jobs(workloads: list[Workload], batch: bool, now: datetime, settings: Settings,
          resolved: ResolvedLocations, gone: Optional[Callable[[], bool]]) -> tuple[list[Job], list[dict[str, str]]]:
    """The jobs asked for, with every location resolved to a zone, and per job zone -> location."""
    default_zones, default_window = settings.default_zones, timedelta(hours=settings.default_window_hours)
    jobs, locations, details, unknown = [], [], Details(), Details()
    for index, workload in enumerate(workloads):
        stop_if_gone(gone, len(workloads), 0)
        prefix = f"workloads[{index}]." if batch else ""
        # A default from configuration is checked too: the field to fix is then the request's.
        where = _zones(workload.zones or default_zones, f"{prefix}zones", resolved, unknown)
        locations.append(where)
        try:
            jobs.append(workload.to_job(now, default_zones, default_window, zones=list(where) or None))
        except ValueError as exc:
            field = exc.field if isinstance(exc, FieldError) else ""
            details.add({"field": field_path((("workloads", index) if batch else ()) + ((field,) if field else ())),
                         "message": str(exc)})
    _refuse(details, unknown, "workloads" if batch else "zones")
    return jobs, locations


def _zones(asked: list[str], field: str, resolved: ResolvedLocations, unknown: Details) -> dict[str, str]:
    """zone -> the first location asked that resolved to it, in the order asked; unknown
    locations become error details naming their field (zones[1])."""
    zones: dict[str, str] = {}
    for position, location in enumerate(asked):
        if location in resolved.unknown:
            if len(unknown.kept) < MAX_ERROR_DETAILS:  # a detail is written only to be listed
                unknown.add(unknown_location(f"{field}[{position}]", resolved.unknown[location]))
            else:
                unknown.more += 1
        else:
            zones.setdefault(resolved.zones[location], location)
    return zones


def _refuse(details: Details, unknown: Details, more: str) -> None:
    """Raise when anything was wrong: zone_not_found when the only fault is an unknown location;
    `more` is the field the count of details not listed goes under."""
    if unknown and not details:
        raise RequestError(FailureCode.ZONE_NOT_FOUND, "unknown zone or cloud region; see details",
                           details=unknown.listed(more))
    if details or unknown:
        both = Details()
        for detail in details.kept + unknown.kept:
            both.add(detail)
        both.more += details.more + unknown.more
        raise RequestError(FailureCode.INVALID_REQUEST, "the request is not valid; see details",
                           details=both.listed(more))


def _capacity_limits(capacity: FleetCapacity, locations: list[dict[str, str]],
                     resolved: ResolvedLocations) -> CapacityLimits:
    """The batch's capacity with its keys resolved as workload zones are (the same lookup, the
    same close matches, the same bounds). A key for a zone no workload of the batch may run in
    would limit nothing, and two keys for one zone contradict or repeat each other: both are
    refused."""
    asked = capacity.per_location()
    for name, limits in asked.items():
        # A batch names at most MAX_LOCATIONS locations: more keys cannot all be of use.
        if len(limits) > MAX_LOCATIONS:
            raise RequestError(FailureCode.INVALID_REQUEST, "too many capacity keys", details=[
                {"field": f"capacity.{name}", "message": f"at most {MAX_LOCATIONS} zones and cloud "
                                                         f"regions (got {len(limits)})"}])
    used = {zone for where in locations for zone in where}
    zone_of: dict[str, str] = {}
    details, unknown = Details(), Details()
    for name, limits in asked.items():
        named: dict[str, str] = {}  # zone -> the first key that named it
        for key in limits:
            field = f"capacity.{name}.{key}"
            if key in resolved.unknown:
                unknown.add(unknown_location(field, resolved.unknown[key]))
                continue
            found = zone_of[key] = resolved.zones[key]
            if found in named:
                details.add({"field": field, "message": f"{named[found]} and {key} both name zone "
                                                        f"{found}: give one limit per zone"})
            elif found not in used:
                where = key if key == found else f"{key} (zone {found})"
                details.add({"field": field, "message":
                             f"no workload of this batch may run in {where}, so this limit would "
                             f"limit nothing; the batch's zones are {_listed(sorted(used))}"})
            named.setdefault(found, key)
    _refuse(details, unknown, "capacity")
    return capacity.limits(zone_of)


def _listed(zones: list[str], most: int = 10) -> str:
    return ", ".join(zones[:most]) + (f" and {len(zones) - most} more" if len(zones) > most else "")
