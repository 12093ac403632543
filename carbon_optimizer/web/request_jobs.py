"""A request's body turned into the jobs it asks for: workloads parsed and validated, every
location resolved to a zone (each distinct one once), the batch's capacity keys resolved the same
way, and every fault reported with the field that holds it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from pydantic import ValidationError

from carbon_optimizer.errors import FailureCode, RequestError, UnknownLocation
from carbon_optimizer.scheduling.model import CapacityLimits
from carbon_optimizer.timeseries import rfc3339
from carbon_optimizer.web import request_models
from carbon_optimizer.web.app_state import app_state
from carbon_optimizer.web.error_details import (
    MAX_ERROR_DETAILS, Details, field_path, unknown_location, validation_error,
)
from carbon_optimizer.web.request_body import stop_if_gone

# What one request's locations may cost before any budget exists (README "The request"): distinct
# names are counted first (a set over the request, cheap), each distinct name is resolved once (a
# dict lookup), and only the first few unknown ones get close matches (~0.4 ms each, over every
# zone and region); an error lists its first details and counts the rest, so its size does not
# grow with the request's.
MAX_LOCATIONS = 100
MAX_SUGGESTED_LOCATIONS = 5


def parse_workloads(body: object) -> tuple[list[request_models.Workload], Optional[request_models.WorkloadBatch]]:
    """The workloads asked for, and the batch they came in (None for a single workload)."""
    if not isinstance(body, dict):
        raise RequestError(FailureCode.INVALID_REQUEST, "the body must be a JSON object: one workload, or {\"workloads\": [...]}")
    if "workloads" in body:
        items = body["workloads"]
        limit = app_state().settings.max_batch_size
        if isinstance(items, list) and len(items) > limit:
            raise RequestError(FailureCode.INVALID_REQUEST, "too many workloads", details=[
                {"field": "workloads", "message": f"at most {limit} workloads per request"}])
        try:
            batch = request_models.WorkloadBatch.model_validate(body)
            return batch.workloads, batch
        except ValidationError as exc:
            raise validation_error(exc) from None
    try:
        return [request_models.Workload.model_validate(body)], None
    except ValidationError as exc:
        raise validation_error(exc) from None


def as_of_moment(workloads: list[request_models.Workload], batch: Optional[request_models.WorkloadBatch]) -> Optional[datetime]:
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
    settings = app_state().settings
    if settings.carbon_provider != "file" or not settings.file_replay:
        raise RequestError(FailureCode.INVALID_REQUEST, "as_of is only accepted by a replaying service",
                           details=[{"field": "as_of", "message":
                                     "as_of needs CARBON_PROVIDER=file and FILE_REPLAY=true on the "
                                     f"service; got {rfc3339(as_of)}"}])
    return as_of.astimezone(timezone.utc)


def _resolver(served: Optional[frozenset[str]]) -> Callable[[str], "str | UnknownLocation"]:
    """engine.locate for one request, each distinct location resolved once: a batch names the same
    few zones and regions again and again. An unknown location gives its UnknownLocation back (not
    raised), so that every field naming it can be reported; only the first
    MAX_SUGGESTED_LOCATIONS unknown ones come with close matches."""
    locate, seen = app_state().engine.locate, {}
    suggested = 0

    def resolve(location: str) -> "str | UnknownLocation":
        nonlocal suggested
        found = seen.get(location)
        if found is None:
            try:
                found = locate(location, served, suggested < MAX_SUGGESTED_LOCATIONS)
            except UnknownLocation as exc:
                found = exc
                suggested += 1
            seen[location] = found
        return found
    return resolve


def _locate(asked: list[str], field: str, resolve: Callable[[str], "str | UnknownLocation"],
            details: Details) -> dict[str, str]:
    """zone -> the first location asked that resolved to it, in the order asked; unknown
    locations become error details naming their field (zones[1])."""
    zones: dict[str, str] = {}
    for position, location in enumerate(asked):
        found = resolve(location)
        if isinstance(found, UnknownLocation):
            if len(details.kept) < MAX_ERROR_DETAILS:
                details.add(unknown_location(f"{field}[{position}]", found))
            else:
                details.more += 1
        else:
            zones.setdefault(found, location)
    return zones


def _count_locations(workloads: list[request_models.Workload], default_zones: list[str], batch: bool) -> None:
    """Refuse, before resolving any, a request naming more than MAX_LOCATIONS distinct locations."""
    names = {name for workload in workloads for name in (workload.zones or default_zones)}
    if len(names) > MAX_LOCATIONS:
        raise RequestError(FailureCode.INVALID_REQUEST, "too many distinct zones and cloud regions", details=[
            {"field": "workloads[*].zones" if batch else "zones",
             "message": f"at most {MAX_LOCATIONS} distinct zones and cloud regions in one request "
                        f"(got {len(names)})"}])


def jobs_asked(workloads: list[request_models.Workload], batch: bool, now: datetime,
               gone: Optional[Callable[[], bool]] = None):
    """The jobs asked for, with every location resolved to a zone, and per job zone -> location."""
    settings = app_state().settings
    default_zones, default_window = settings.default_zones, timedelta(hours=settings.default_window_hours)
    _count_locations(workloads, default_zones, batch)
    resolve = _resolver(app_state().engine.served_zones())
    jobs, locations, details, unknown = [], [], Details(), Details()
    for index, workload in enumerate(workloads):
        stop_if_gone(gone, len(workloads), 0)
        prefix = f"workloads[{index}]." if batch else ""
        # A default from configuration is checked too: the field to fix is then the request's.
        where = _locate(workload.zones or default_zones, f"{prefix}zones", resolve, unknown)
        locations.append(where)
        try:
            jobs.append(workload.to_job(now, default_zones, default_window, zones=list(where) or None))
        except ValueError as exc:
            field = exc.field if isinstance(exc, request_models.FieldError) else ""
            details.add({"field": field_path(((f"workloads", index) if batch else ()) + ((field,) if field else ())),
                         "message": str(exc)})
    _refuse(details, unknown, "workloads" if batch else "zones")
    return jobs, locations


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


def capacity_limits(capacity: request_models.FleetCapacity, locations: list[dict[str, str]]) -> CapacityLimits:
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
    resolve = _resolver(app_state().engine.served_zones())
    used = {zone for where in locations for zone in where}
    zone_of: dict[str, str] = {}
    details, unknown = Details(), Details()
    for name, limits in asked.items():
        named: dict[str, str] = {}  # zone -> the first key that named it
        for key in limits:
            field = f"capacity.{name}.{key}"
            found = resolve(key)
            if isinstance(found, UnknownLocation):
                unknown.add(unknown_location(field, found))
                continue
            zone_of[key] = found
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
