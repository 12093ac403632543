"""The Green Software Foundation Carbon Aware SDK's WebAPI (v1.8), served at its own root-relative
paths so that its clients (its generated npm and Java clients, the kubernetes-carbon-intensity-
exporter, jord, circa) need only a new base URL: the `casdk` blueprint.

Each route parses its parameters (casdk_params.py: the SDK's names, its 400s), asks the engine
(cached forecasts, measured history, the planner's exact window search: casdk_answers.py) and
answers with the SDK's DTOs (casdk_models.py). Paths, parameter names, status codes and shapes are
the SDK's (src/CarbonAware.WebApi/src/Controllers/CarbonAwareController.cs, LocationsController.cs);
the API key and rate limits apply as on the rest of the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional, Sequence

from flask import Blueprint, Response
from pydantic import ValidationError

from carbon_optimizer.data.cloud_regions import RegionTable
from carbon_optimizer.errors import CarbonDataError, FailureCode, NotRecorded
from carbon_optimizer.scheduling.model import ZoneSeries
from carbon_optimizer.timeseries import to_epoch
from carbon_optimizer.web import casdk_answers as answers, casdk_models as models, limits
from carbon_optimizer.web.app_state import app_state
from carbon_optimizer.web.casdk_params import (
    Problem, argument_error, body_int, body_items, body_string, body_time, query_int, require_fields,
    query_location, query_locations, query_time, required_query_time,
)
from carbon_optimizer.web.request_models import LOCATION_ADAPTER

casdk = Blueprint("casdk", __name__)
JSON = "application/json"


@casdk.errorhandler(Problem)
def _problem(exc: Problem):
    return exc.response()


def _json(body: bytes) -> Response:
    return Response(body, mimetype=JSON)


def _no_content() -> Response:
    answer = Response(status=204)
    del answer.headers["Content-Type"]  # no body, so no type
    return answer


# -- locations --------------------------------------------------------------------------------------

def _as_location(name: str, regions: RegionTable) -> str:
    """The SDK's users name Azure regions bare (eastus): such a name is the table's azure:<name>;
    a zone key or a provider:region name is ours already."""
    if ":" not in name and regions.get(f"azure:{name}") is not None:
        return f"azure:{name.lower()}"
    return name


def _zones(names: Sequence[str], parameter: str = "location") -> dict[str, str]:
    """Each location asked -> its zone; a 400 naming `parameter` for the first it cannot serve."""
    for name in names:
        try:
            LOCATION_ADAPTER.validate_python(name)
        except ValidationError:
            raise argument_error(parameter, f"'{name[:64]}' is not a location: an Azure region "
                                            "(eastus), a zone key (DE) or a cloud region (aws:eu-west-1)") from None
    engine = app_state().engine
    asked = {name: _as_location(name, engine.regions) for name in names}
    resolved = engine.resolve_locations(list(dict.fromkeys(asked.values())), suggested=1)
    for name in names:
        exc = resolved.unknown.get(asked[name])
        if exc is not None:
            hint = f"; did you mean {', '.join(exc.suggestions)}?" if exc.suggestions else \
                "; GET /locations lists the Azure regions, GET /api/v1/zones every zone"
            raise argument_error(parameter, f"{exc}{hint}")
    return {name: resolved.zones[asked[name]] for name in names}


def _data_problem(exc: CarbonDataError, parameter: str = "location") -> Problem:
    """A carbon-data failure in the SDK's shape: an unknown or unrecorded zone is the client's
    (400 naming the parameter), a passing upstream fault a 503 with Retry-After."""
    code = exc.code
    if code in (FailureCode.ZONE_NOT_FOUND, FailureCode.ZONE_NOT_ENTITLED) or isinstance(exc, NotRecorded):
        return argument_error(parameter, exc.message)
    if code.transient:
        return Problem(503, "ServiceUnavailable", detail=exc.message,
                       code=code)
    return Problem(code.status, code.value, detail=exc.message)


# -- measured emissions -----------------------------------------------------------------------------

def _range(time: Optional[datetime], to_time: Optional[datetime]) -> tuple[int, int]:
    """time and toTime as the SDK checks them: toTime needs time, time must be before toTime."""
    if to_time is not None and time is None:
        raise argument_error("time", "time must be defined if toTime is defined")
    if time is not None and to_time is not None and time >= to_time:
        raise argument_error("time", "time must be before toTime")
    start = to_epoch(time) if time is not None else to_epoch(app_state().clock())
    return start, to_epoch(to_time) if to_time is not None else start


def _measured(names: Sequence[str], reach: int = 0) -> tuple[dict[str, tuple[str, list[answers.Point]]], int, int]:
    """Each location's zone and measured points in [time, toTime + `reach` seconds] (the latest
    point when no `time` is given, as the SDK's sources answer "now"), and that range's ends."""
    time, to_time = query_time("time"), query_time("toTime")
    query_int("durationMinutes")  # checked on every route: a bad value is a 400 wherever it is sent
    start, end = _range(time, to_time)
    zones = _zones(names)
    state = app_state()
    source, now = state.engine.source, state.clock()
    found: dict[str, tuple[str, list[answers.Point]]] = {}
    # A remote provider's histories, every zone at once under one deadline: however many
    # locations a request names, a slow provider holds it for one wait, not one each.
    held = state.engine.histories([zones[n] for n in names], now) if source.remote else {}
    for name in names:
        zone = zones[name]
        try:
            if source.remote:
                points = (answers.latest_of(held.get(zone)) if time is None
                          else answers.points_of(held.get(zone), start, max(end, start + reach)))
            else:
                points = (answers.latest(source, zone, now) if time is None
                          else answers.measured(source, zone, start, max(end, start + reach), now))
        except CarbonDataError as exc:
            raise _data_problem(exc) from None
        found[name] = (zone, points)
    if time is None:  # the latest points: a window starts at the earliest of them
        starts = [p.start for _, points in found.values() for p in points]
        start = end = min(starts) if starts else start
    return found, start, end


def _emissions(found: dict[str, tuple[str, list[answers.Point]]]) -> Response:
    data = [d for name, (_, points) in found.items() for d in answers.emissions_data(name, points)]
    return _json(models.EMISSIONS_DATA_LIST.dump_json(data)) if data else _no_content()


@casdk.get("/emissions/bylocation")
def emissions_by_location():
    return _emissions(_measured([query_location()])[0])


@casdk.get("/emissions/bylocations")
def emissions_by_locations():
    return _emissions(_measured(query_locations())[0])


@casdk.get("/emissions/bylocations/best")
@limits.limit(limits.optimize_limit)
def best_emissions_by_locations():
    """Without durationMinutes the SDK's answer: every measured point with the least rating; with
    it, the planner's cleanest window of that length inside [time, toTime] (from `time` when no
    toTime is given), across the locations."""
    names = query_locations()
    minutes = query_int("durationMinutes") or 0
    found, start, end = _measured(names, reach=minutes * 60)
    best = answers.best_measured(found, start, end, minutes, app_state().clock())
    return _json(models.EMISSIONS_DATA_LIST.dump_json(best)) if best else _no_content()


# -- forecasts --------------------------------------------------------------------------------------

def _forecast(zone: str, at: datetime, parameter: str = "location") -> ZoneSeries:
    try:
        return app_state().engine.forecast(zone, at)
    except CarbonDataError as exc:
        raise _data_problem(exc, parameter) from None


@casdk.get("/emissions/forecasts/current")
@limits.limit(limits.optimize_limit)
def current_forecast():
    names = query_locations()
    data_start, data_end = query_time("dataStartAt"), query_time("dataEndAt")
    window = query_int("windowSize")
    if data_start is not None and data_end is not None and data_start >= data_end:
        raise argument_error("dataStartAt", "dataStartAt must be before dataEndAt")
    zones = _zones(names)
    now = app_state().clock()
    # Every location's forecast at once, under one deadline (a slow provider: one wait).
    series = app_state().engine.forecasts([zones[name] for name in names], now)
    for got in series.values():
        if isinstance(got, CarbonDataError):
            raise _data_problem(got)
    found = [answers.forecast_answer(name, series[zones[name]], now, data_start, data_end,  # type: ignore[arg-type]
                                     window, now) for name in names]
    return _json(models.FORECAST_LIST.dump_json(found))


def _replays() -> bool:
    """Whether this deployment can answer as of a past moment: only a replaying file provider
    holds what was known then (as POST /api/v1/optimize's as_of)."""
    settings = app_state().settings
    return settings.providers[0] == "file" and settings.file_replay


@casdk.post("/emissions/forecasts/batch")
@limits.limit(limits.optimize_limit, methods=["POST"])
def batch_forecast():
    asked = []
    items = body_items()
    require_fields(items, ("location", "requestedAt"))
    for index, item in enumerate(items):
        where = f"[{index}]"
        location = body_string(item, "location", where)
        requested = body_time(item, "requestedAt", where, required=True)
        start, end = body_time(item, "dataStartAt", where), body_time(item, "dataEndAt", where)
        window = body_int(item, "windowSize", where)
        if start is not None and end is not None and start >= end:
            raise argument_error(f"{where}.dataStartAt", "dataStartAt must be before dataEndAt")
        asked.append((location, requested, start, end, window))
    if not _replays():
        # The SDK's answer for a data source without historical forecasts (its NotImplementedException).
        raise Problem(501, "NotImplementedException",
                      detail="this service's carbon-data provider keeps no historical forecasts: "
                             "requestedAt is answered only by CARBON_PROVIDER=file with FILE_REPLAY=true")
    zones = _zones(list(dict.fromkeys(a[0] for a in asked)))
    now = app_state().clock()
    found = []
    for location, requested, start, end, window in asked:
        zone = _forecast(zones[location], requested, "requestedAt")
        found.append(answers.forecast_answer(location, zone, requested, start, end, window, now))
    return _json(models.FORECAST_LIST.dump_json(found))


# -- average carbon intensity -----------------------------------------------------------------------

def _average(location: str, zone: str, start: datetime, end: datetime,
             parameter: str = "startTime") -> models.CarbonIntensityDTO:
    if start >= end:
        raise argument_error(parameter, "startTime must be before endTime")
    state = app_state()
    try:
        points = answers.measured(state.engine.source, zone, to_epoch(start), to_epoch(end), state.clock())
    except CarbonDataError as exc:
        raise _data_problem(exc) from None
    mean = answers.average(points, to_epoch(start), to_epoch(end))
    if mean is None:
        raise argument_error(parameter, f"no measured carbon intensity for {location} between "
                                        f"{start.isoformat()} and {end.isoformat()}")
    return models.CarbonIntensityDTO(location=location, startTime=start, endTime=end, carbonIntensity=mean)


@casdk.get("/emissions/average-carbon-intensity")
def average_carbon_intensity():
    location = query_location()
    start, end = required_query_time("startTime"), required_query_time("endTime")
    zone = _zones([location])[location]
    return _json(_average(location, zone, start, end).to_json())


@casdk.post("/emissions/average-carbon-intensity/batch")
@limits.limit(limits.optimize_limit, methods=["POST"])
def average_carbon_intensity_batch():
    asked = []
    items = body_items()
    require_fields(items, ("location", "startTime", "endTime"))
    for index, item in enumerate(items):
        where = f"[{index}]"
        asked.append((body_string(item, "location", where), body_time(item, "startTime", where, required=True),
                      body_time(item, "endTime", where, required=True)))
    zones = _zones(list(dict.fromkeys(a[0] for a in asked)))
    found = [_average(location, zones[location], start, end, f"[{index}].startTime")
             for index, (location, start, end) in enumerate(asked)]
    return _json(models.INTENSITY_LIST.dump_json(found))


# -- locations --------------------------------------------------------------------------------------

@casdk.get("/locations")
def locations():
    """The cloud regions a request may name, with where they are: Azure's bare (as the SDK names
    them), the others as provider:region."""
    found = {(r.region if r.provider == "azure" else r.name): r for r in app_state().engine.regions}
    if not found:
        return _no_content()
    return _json(models.LOCATIONS.dump_json({name: models.Location.of(name, r) for name, r in found.items()}))

