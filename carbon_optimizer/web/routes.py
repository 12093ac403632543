"""The routes: the `api` blueprint (optimize, forecast, the OpenAPI document) and the `ops`
blueprint (health); the pages (/, /docs) are in pages.py. Each parses its request into typed
values, calls the engine, and hands the engine's typed answer to a response model, which writes
the body."""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from carbon_optimizer.engine import CarbonEngine
from carbon_optimizer.errors import CarbonDataError, FailureCode, RequestError, UnknownLocation
from carbon_optimizer.ops import metrics
from carbon_optimizer.ops.thread_load import ENVIRON_KEY as THREAD_LOAD_KEY, ThreadLoad
from carbon_optimizer.scheduling.model import CapacityLimits, Unschedulable
from carbon_optimizer.settings import Settings
from carbon_optimizer.timeseries import rfc3339, to_epoch
from carbon_optimizer.web import limits, openapi
from carbon_optimizer.web import request_models, response_models

log = logging.getLogger(__name__)
api = Blueprint("api", __name__, url_prefix="/api/v1")
ops = Blueprint("ops", __name__)

# What one request's locations may cost before any budget exists (README "The request"): distinct
# names are counted first (a set over the request, cheap), each distinct name is resolved once (a
# dict lookup), and only the first few unknown ones get close matches (~0.4 ms each, over every
# zone and region); an error lists its first details and counts the rest, so its size does not
# grow with the request's.
MAX_LOCATIONS = 100
MAX_SUGGESTED_LOCATIONS = 5
MAX_ERROR_DETAILS = 20
_FIELD_CHARS, _MESSAGE_CHARS = 200, 600  # a field path holds client-chosen keys: cut, not echoed whole
# How often a request's work looks whether its client is still there (a poll and a peek).
PEEK_INTERVAL_SECONDS = 0.005

def _now() -> datetime:
    return current_app.config["CLOCK"]()


def _engine() -> CarbonEngine:
    return current_app.extensions["carbon_engine"]


def _settings() -> Settings:
    return current_app.extensions["carbon_settings"]


def _retry_after() -> str:
    return str(max(1, _settings().upstream_failure_backoff_seconds or 30))


# -- request parsing ------------------------------------------------------------------------------

def _read_body() -> bytes:
    """The request body, or 413 when it is over MAX_CONTENT_LENGTH. Werkzeug refuses a too-large
    Content-Length up front, but a chunked body (no Content-Length) it only cuts at the limit and
    hands over the first part as if it were all: read one byte past the limit instead, to tell."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=False)  # without a terminated stream werkzeug reads nothing
    stream, parts, size = request.environ["wsgi.input"], [], 0
    while size <= limit:
        try:
            part = stream.read(min(65_536, limit + 1 - size))
        except RequestError:  # the server's read deadline (408): keep its answer
            raise
        except Exception:  # noqa: BLE001  (a malformed chunk or a dropped client: not our 500)
            raise ClientDisconnected() from None
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
    raise RequestEntityTooLarge()


def _json_body() -> object:
    if request.mimetype != "application/json":
        raise RequestError(FailureCode.UNSUPPORTED_MEDIA_TYPE, "send the request body as application/json")
    raw = _read_body()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestError(FailureCode.INVALID_REQUEST, "the request body is not valid JSON") from None


def _field_path(location: tuple) -> str:
    """pydantic's error location as a client reads it: workloads[3].duration."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


# Plainer words than pydantic's for the errors clients meet most.
_MESSAGES = {
    "string_pattern_mismatch": "must be an Electricity Maps zone key such as DE or US-CAL-CISO "
                               "(in zones, also a cloud region such as aws:eu-west-1)",
    "extra_forbidden": "unknown field",
    "model_type": "must be a JSON object",
    "timezone_aware": "must be an RFC 3339 timestamp with an offset, e.g. 2026-11-23T08:00:00Z",
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


class _Details:
    """An error's details: the first MAX_ERROR_DETAILS kept, the rest only counted."""

    def __init__(self) -> None:
        self.kept: list[dict] = []
        self.more = 0

    def add(self, detail: dict) -> None:
        if len(self.kept) < MAX_ERROR_DETAILS:
            self.kept.append(detail)
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.kept)

    def listed(self, field: str) -> list[dict]:
        """The details kept, and one that says how many more there are."""
        if not self.more:
            return self.kept
        return self.kept + [{"field": field, "message": f"and {self.more} more like these, not listed"}]


def _validation_error(exc: ValidationError) -> RequestError:
    details = _Details()
    for error in exc.errors(include_input=False, include_url=False):
        if len(details.kept) >= MAX_ERROR_DETAILS:
            details.more += 1
            continue
        cause = (error.get("ctx") or {}).get("error")
        location = tuple(error["loc"]) + ((cause.field,) if isinstance(cause, request_models.FieldError) else ())
        details.add({"field": _cut(_field_path(location), _FIELD_CHARS),
                     "message": _cut(_MESSAGES.get(error["type"], error["msg"].removeprefix("Value error, ")),
                                     _MESSAGE_CHARS)})
    return RequestError(FailureCode.INVALID_REQUEST, "the request is not valid; see details",
                        details=details.listed("body"))


def _parse_workloads(body: object) -> tuple[list[request_models.Workload], Optional[request_models.WorkloadBatch]]:
    """The workloads asked for, and the batch they came in (None for a single workload)."""
    if not isinstance(body, dict):
        raise RequestError(FailureCode.INVALID_REQUEST, "the body must be a JSON object: one workload, or {\"workloads\": [...]}")
    if "workloads" in body:
        items = body["workloads"]
        limit = _settings().max_batch_size
        if isinstance(items, list) and len(items) > limit:
            raise RequestError(FailureCode.INVALID_REQUEST, "too many workloads", details=[
                {"field": "workloads", "message": f"at most {limit} workloads per request"}])
        try:
            batch = request_models.WorkloadBatch.model_validate(body)
            return batch.workloads, batch
        except ValidationError as exc:
            raise _validation_error(exc) from None
    try:
        return [request_models.Workload.model_validate(body)], None
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _as_of(workloads: list[request_models.Workload], batch: Optional[request_models.WorkloadBatch]) -> Optional[datetime]:
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
    settings = _settings()
    if settings.carbon_provider != "file" or not settings.file_replay:
        raise RequestError(FailureCode.INVALID_REQUEST, "as_of is only accepted by a replaying service",
                           details=[{"field": "as_of", "message":
                                     "as_of needs CARBON_PROVIDER=file and FILE_REPLAY=true on the "
                                     f"service; got {rfc3339(as_of)}"}])
    return as_of.astimezone(timezone.utc)


def _unknown(field: str, exc: UnknownLocation) -> dict:
    """One error detail for a location the service cannot serve, with the close matches."""
    if exc.suggestions:
        hint = "; did you mean " + ", ".join(exc.suggestions) + "?"
    else:
        hint = "; GET /api/v1/zones lists the zones and cloud regions served"
    detail: dict = {"field": field, "message": exc.message + hint}
    if exc.suggestions:
        detail["suggestions"] = list(exc.suggestions)
    return detail


def _resolver(served: Optional[frozenset[str]]) -> Callable[[str], "str | UnknownLocation"]:
    """engine.locate for one request, each distinct location resolved once: a batch names the same
    few zones and regions again and again. An unknown location gives its UnknownLocation back (not
    raised), so that every field naming it can be reported; only the first
    MAX_SUGGESTED_LOCATIONS unknown ones come with close matches."""
    locate, seen = _engine().locate, {}
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
            details: _Details) -> dict[str, str]:
    """zone -> the first location asked that resolved to it, in the order asked; unknown
    locations become error details naming their field (zones[1])."""
    zones: dict[str, str] = {}
    for position, location in enumerate(asked):
        found = resolve(location)
        if isinstance(found, UnknownLocation):
            if len(details.kept) < MAX_ERROR_DETAILS:
                details.add(_unknown(f"{field}[{position}]", found))
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


def _stop_if_gone(gone: Optional[Callable[[], bool]], workloads: int, answered: int) -> None:
    """When the client has gone, end the request here: nobody reads its answer."""
    if gone is not None and gone():
        metrics.REQUESTS_ABANDONED.inc()
        log.info("client went away; the request's work stopped",
                 extra={"workloads": workloads, "answered": answered})
        raise ClientDisconnected()


def _jobs(workloads: list[request_models.Workload], batch: bool, now: datetime,
          gone: Optional[Callable[[], bool]] = None):
    """The jobs asked for, with every location resolved to a zone, and per job zone -> location."""
    settings = _settings()
    default_zones, default_window = settings.default_zones, timedelta(hours=settings.default_window_hours)
    _count_locations(workloads, default_zones, batch)
    resolve = _resolver(_engine().served_zones())
    jobs, locations, details, unknown = [], [], _Details(), _Details()
    for index, workload in enumerate(workloads):
        _stop_if_gone(gone, len(workloads), 0)
        prefix = f"workloads[{index}]." if batch else ""
        # A default from configuration is checked too: the field to fix is then the request's.
        where = _locate(workload.zones or default_zones, f"{prefix}zones", resolve, unknown)
        locations.append(where)
        try:
            jobs.append(workload.to_job(now, default_zones, default_window, zones=list(where) or None))
        except ValueError as exc:
            field = exc.field if isinstance(exc, request_models.FieldError) else ""
            details.add({"field": _field_path(((f"workloads", index) if batch else ()) + ((field,) if field else ())),
                         "message": str(exc)})
    _refuse(details, unknown, "workloads" if batch else "zones")
    return jobs, locations


def _refuse(details: _Details, unknown: _Details, more: str) -> None:
    """Raise when anything was wrong: zone_not_found when the only fault is an unknown location;
    `more` is the field the count of details not listed goes under."""
    if unknown and not details:
        raise RequestError(FailureCode.ZONE_NOT_FOUND, "unknown zone or cloud region; see details",
                           details=unknown.listed(more))
    if details or unknown:
        both = _Details()
        for detail in details.kept + unknown.kept:
            both.add(detail)
        both.more += details.more + unknown.more
        raise RequestError(FailureCode.INVALID_REQUEST, "the request is not valid; see details",
                           details=both.listed(more))


def _capacity(capacity: request_models.FleetCapacity, locations: list[dict[str, str]]) -> CapacityLimits:
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
    resolve = _resolver(_engine().served_zones())
    used = {zone for where in locations for zone in where}
    zone_of: dict[str, str] = {}
    details, unknown = _Details(), _Details()
    for name, limits in asked.items():
        named: dict[str, str] = {}  # zone -> the first key that named it
        for key in limits:
            field = f"capacity.{name}.{key}"
            found = resolve(key)
            if isinstance(found, UnknownLocation):
                unknown.add(_unknown(field, found))
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


# -- API routes -----------------------------------------------------------------------------------

def _answer(model: response_models.Response) -> Response:
    """The one place an answer model becomes an HTTP body."""
    return Response(model.to_json(), mimetype="application/json")


def _failure(outcome: Unschedulable) -> RequestError:
    """A single workload that cannot be scheduled, as an error answer with the failure's status."""
    code = outcome.code
    headers = {"Retry-After": _retry_after()} if code.transient else None
    field = "zones" if code in (FailureCode.ZONE_NOT_FOUND, FailureCode.ZONE_NOT_ENTITLED) else "body"
    return RequestError(code, outcome.message, details=[{"field": field, "message": outcome.message}],
                        headers=headers)


def _client_gone() -> Optional[Callable[[], bool]]:
    """A check that the client has closed its connection, for the request's work to stop: the
    socket Gunicorn hands over, polled and peeked (nothing read) at most every
    PEEK_INTERVAL_SECONDS. A peek that reads b"" is the peer's close; bytes are a pipelined next
    request (the body was read whole before), not a close. A client that half-closes its side
    while it waits is taken as gone too, as Go's net/http does. None without a socket (in-process)."""
    # The worker may hand over a wrapper (its write deadline): any object with the socket's calls.
    sock = request.environ.get("gunicorn.socket")
    if not (callable(getattr(sock, "fileno", None)) and callable(getattr(sock, "recv", None))):
        return None
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    state = {"at": 0.0, "gone": False}

    def gone() -> bool:
        if state["gone"]:
            return True
        now = time.monotonic()
        if now - state["at"] < PEEK_INTERVAL_SECONDS:
            return False
        state["at"] = now
        try:
            if poller.poll(0):
                state["gone"] = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # reset by the peer
            state["gone"] = True
        return state["gone"]
    return gone


@api.post("/optimize")
@limits.limit(limits.optimize_limit, methods=["POST"])
def optimize():
    body = _json_body()
    workloads, batch = _parse_workloads(body)
    now = _as_of(workloads, batch) or _now()
    capacity = batch.capacity if batch is not None else None
    gone = _client_gone()
    jobs, locations = _jobs(workloads, batch is not None, now, gone)
    limits_asked = _capacity(capacity, locations) if capacity is not None else None
    outcomes = _engine().optimize(jobs, now, limits_asked, cancelled=gone)
    _stop_if_gone(gone, len(outcomes), sum(not (isinstance(o, Unschedulable)
                                                and o.code is FailureCode.DEADLINE_EXCEEDED)
                                           for o in outcomes))
    if batch is not None:
        return _answer(response_models.BatchResponse.of(outcomes, now, locations))
    outcome = outcomes[0]
    if isinstance(outcome, Unschedulable):
        raise _failure(outcome)
    return _answer(response_models.ScheduledWorkload.of(outcome, now, locations[0]))


def _hours_parameter() -> Optional[int]:
    text = request.args.get("hours")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 4) \
            or not 1 <= int(text) <= request_models.MAX_FORECAST_HOURS:
        raise RequestError(FailureCode.INVALID_REQUEST, "hours must be a whole number of hours from now",
                       details=[{"field": "hours", "message":
                                 f"a whole number from 1 to {request_models.MAX_FORECAST_HOURS}"}])
    return int(text)


def _history_parameter() -> bool:
    text = request.args.get("history")
    if text is None or text == "false":
        return False
    if text == "true":
        return True
    raise RequestError(FailureCode.INVALID_REQUEST, "history must be true or false",
                       details=[{"field": "history", "message": "true or false"}])


@api.get("/forecast")
def forecast():
    location = request.args.get("zone", "")
    try:
        request_models.LOCATION_ADAPTER.validate_python(location)
    except ValidationError:
        raise RequestError(FailureCode.INVALID_REQUEST,
                           "give one zone key or cloud region, e.g. ?zone=DE or ?zone=aws:eu-west-1",
                           details=[{"field": "zone", "message": "missing, or not a zone key or a cloud region"}]
                           ) from None
    hours = _hours_parameter()
    with_history = _history_parameter()
    engine = _engine()
    try:
        zone = engine.locate(location, engine.served_zones())
    except UnknownLocation as exc:
        raise RequestError(exc.code, exc.message, details=[_unknown("zone", exc)]) from None
    now = _now()
    until = to_epoch(now) + 3600 * hours if hours is not None else None
    try:
        found, history = engine.zone_view(zone, now, until, with_history)
    except CarbonDataError as exc:
        # A zone the provider does not know is a missing resource here (404), not a bad request.
        status = 404 if exc.code is FailureCode.ZONE_NOT_FOUND else exc.code.status
        headers = {"Retry-After": _retry_after()} if exc.code.transient else None
        raise RequestError(exc.code, exc.message, headers=headers, status=status) from None
    return _answer(response_models.ForecastResponse.of(found, location, history, with_history))


@api.get("/zones")
def zones():
    engine = _engine()
    try:
        served = engine.zones()
    except CarbonDataError as exc:
        headers = {"Retry-After": _retry_after()} if exc.code.transient else None
        raise RequestError(exc.code, "the carbon-data provider's zone list cannot be had just now: "
                           + exc.message, headers=headers) from None
    return _answer(response_models.ZonesResponse.of(engine.provider.name, served, list(engine.regions)))


@api.get("/openapi.json")
def openapi_document():
    # Read per request: keys can appear on a secret refresh, and the document follows enforcement.
    keyed = bool(current_app.extensions["carbon_secrets"].current().api_keys)
    return jsonify(openapi.served(current_app.extensions["carbon_openapi"], keyed))


# -- operations -----------------------------------------------------------------------------------

@ops.get("/health/live")
def health_live():
    """Liveness: the process answers. Cheap and true whatever the load (a liveness probe that
    failed under load would restart a worker that is only busy)."""
    return _answer(response_models.LiveResponse(status="ok"))


@ops.get("/health")
def health():
    """Readiness and dependency state: 503 while this worker cannot take more requests."""
    load: Optional[ThreadLoad] = request.environ.get(THREAD_LOAD_KEY)  # set by the Gunicorn worker
    if load is not None and load.exhausted():
        busy_for = load.saturated_for()
        raise RequestError(
            FailureCode.SERVICE_UNAVAILABLE,
            f"not ready: every application thread of this worker has been busy for {busy_for:.1f} s",
            details=[{"field": "threads", "message": f"{load.busy} requests for {load.threads} "
                      f"threads, all busy for {busy_for:.1f} s (grace {load.grace:g} s)"}],
            headers={"Retry-After": str(max(1, round(load.grace)))})
    checks = _engine().health()
    checks["secrets"] = current_app.extensions["carbon_secrets"].status()
    checks["rate_limit"] = limits.health_check(redis_reachable=checks["redis"]["status"] == "ok")
    degraded = (checks["redis"]["status"] == "down" or checks["provider"]["status"] != "ok"
                or checks["secrets"]["status"] == "failing" or checks["rate_limit"]["status"] == "fallback")
    return jsonify({"status": "degraded" if degraded else "ok", "checks": checks})
