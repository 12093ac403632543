"""The routes: the `api` blueprint (optimize, forecast, the OpenAPI document) and the `ops`
blueprint (health); the pages (/, /docs) are in pages.py. Each parses its request into typed
values, calls the engine, and hands the engine's typed answer to a response model, which writes
the body."""

from __future__ import annotations

from typing import Optional

from flask import Blueprint, Response, jsonify, request

from carbon_optimizer.errors import CarbonDataError, FailureCode, RequestError
from carbon_optimizer.ops.thread_load import ENVIRON_KEY as THREAD_LOAD_KEY, ThreadLoad
from carbon_optimizer.scheduling.model import Unschedulable
from carbon_optimizer.timeseries import to_epoch
from carbon_optimizer.web import limits, openapi, response_models
from carbon_optimizer.web.app_state import app_state
from carbon_optimizer.web.query_params import forecast_query, signal_parameter
from carbon_optimizer.web.request_body import client_gone, json_body, stop_if_gone
from carbon_optimizer.web.request_jobs import jobs_asked

api = Blueprint("api", __name__, url_prefix="/api/v1")
ops = Blueprint("ops", __name__)


# -- API routes -----------------------------------------------------------------------------------

def _answer(model: response_models.Response) -> Response:
    """The one place an answer model becomes an HTTP body."""
    return Response(model.to_json(), mimetype="application/json")


def _failure(outcome: Unschedulable) -> RequestError:
    """A single workload that cannot be scheduled, as an error answer with the failure's status."""
    code = outcome.code
    field = "zones" if code in (FailureCode.ZONE_NOT_FOUND, FailureCode.ZONE_NOT_ENTITLED) else "body"
    return RequestError(code, outcome.message, details=[{"field": field, "message": outcome.message}])


@api.post("/optimize")
@limits.limit(limits.optimize_limit, methods=["POST"])
def optimize():
    body = json_body()
    gone = client_gone()
    asked = jobs_asked(body, gone)
    outcomes = app_state().engine.optimize(asked.jobs, asked.now, asked.capacity, cancelled=gone,
                                           signal=asked.signal)
    stop_if_gone(gone, len(outcomes), sum(not (isinstance(o, Unschedulable)
                                                and o.code is FailureCode.DEADLINE_EXCEEDED)
                                           for o in outcomes))
    if asked.batch:
        return _answer(response_models.BatchResponse.of(outcomes, asked.now, asked.locations))
    outcome = outcomes[0]
    if isinstance(outcome, Unschedulable):
        raise _failure(outcome)
    return _answer(response_models.ScheduledWorkload.of(outcome, asked.now, asked.locations[0]))


@api.get("/forecast")
def forecast():
    query = forecast_query()
    state = app_state()
    now = state.clock()
    until = to_epoch(now) + 3600 * query.hours if query.hours is not None else None
    try:
        found, history = state.engine.zone_view(query.zone, now, until, query.with_history, query.signal)
    except CarbonDataError as exc:
        # The provider has no data for this zone (one it lists, or one let through unchecked while
        # its list cannot be had): the forecast asked for is a missing resource.
        code = FailureCode.FORECAST_NOT_FOUND if exc.code is FailureCode.ZONE_NOT_FOUND else exc.code
        raise RequestError(code, exc.message) from None
    return _answer(response_models.ForecastResponse.of(found, query.location, history, query.with_history))


@api.get("/zones")
def zones():
    engine = app_state().engine
    feed = engine.feeds.get(signal_parameter())
    try:
        served = feed.source.zones()
    except CarbonDataError as exc:
        raise RequestError(exc.code, "the carbon-data provider's zone list cannot be had just now: "
                           + exc.message) from None
    return _answer(response_models.ZonesResponse.of(feed, served, list(engine.regions), list(engine.feeds)))


@api.get("/openapi.json")
def openapi_document():
    # Read per request: keys can appear on a secret refresh, and the document follows enforcement.
    state = app_state()
    keyed = bool(state.secrets.current().api_keys)
    return jsonify(openapi.served(state.openapi, keyed))


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
            retry_after=round(load.grace))  # the grace, not the code's delay: this worker's own
    state = app_state()
    checks = state.engine.health()
    checks["secrets"] = state.secrets.status()
    checks["rate_limit"] = limits.health_check(redis_reachable=checks["redis"]["status"] == "ok")
    degraded = (checks["redis"]["status"] == "down" or checks["provider"]["status"] != "ok"
                or checks["secrets"]["status"] == "failing" or checks["rate_limit"]["status"] == "fallback")
    return jsonify({"status": "degraded" if degraded else "ok", "checks": checks})
