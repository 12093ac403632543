"""The routes: the `api` blueprint (optimize, forecast, the OpenAPI document) and the `ops`
blueprint (health); the pages (/, /docs) are in pages.py. Each parses its request into typed
values, calls the engine, and hands the engine's typed answer to a response model, which writes
the body."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Optional

from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError

from carbon_optimizer.errors import CarbonDataError, FailureCode, RequestError
from carbon_optimizer.ledger.records import PlanRecord, RunStarted
from carbon_optimizer.ops.thread_load import ENVIRON_KEY as THREAD_LOAD_KEY, ThreadLoad
from carbon_optimizer.scheduling.model import Unschedulable
from carbon_optimizer.timeseries import rfc3339, to_epoch
from carbon_optimizer.web import auth, limits, openapi, response_models
from carbon_optimizer.web.app_state import AppState, app_state
from carbon_optimizer.web.error_details import validation_error
from carbon_optimizer.web.plan_records import plan_ids, plan_records
from carbon_optimizer.web.query_params import forecast_query, signal_parameter
from carbon_optimizer.web.request_body import client_gone, json_body, stop_if_gone
from carbon_optimizer.web.request_jobs import jobs_asked
from carbon_optimizer.web.request_models import RunStartedReport, plan_id_problem

api = Blueprint("api", __name__, url_prefix="/api/v1")
ops = Blueprint("ops", __name__)
log = logging.getLogger(__name__)

# A reported start more than this after the service's clock is refused: a start not yet made, or a
# client clock that far off. One long past is the ledger's to weigh against the plan's window.
STARTED_AHEAD = timedelta(minutes=5)


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
    state = app_state()
    outcomes = state.engine.optimize(asked.jobs, asked.now, asked.capacity, cancelled=gone,
                                     signal=asked.signal)
    stop_if_gone(gone, len(outcomes), sum(not (isinstance(o, Unschedulable)
                                                and o.code is FailureCode.DEADLINE_EXCEEDED)
                                           for o in outcomes))
    ids = plan_ids(outcomes)
    if asked.batch:
        answer = _answer(response_models.BatchResponse.of(outcomes, asked.now, asked.locations, ids))
    else:
        outcome = outcomes[0]
        if isinstance(outcome, Unschedulable):
            raise _failure(outcome)
        answer = _answer(response_models.ScheduledWorkload.of(outcome, asked.now, asked.locations[0],
                                                              ids[0]))
    # Once the answer is made: a plan is recorded only as it was answered.
    _submit(state, plan_records(outcomes, ids, asked, auth.client_name()))
    return answer


def _submit(state: AppState, records: list[PlanRecord]) -> None:
    """Hand the request's plans to the ledger, in one call. A ledger never raises (its Protocol);
    should one, the answer is served all the same: a plan not kept costs a report, not the job."""
    if not records:
        return
    try:
        state.ledger.submit(records)
    except Exception:  # noqa: BLE001
        log.exception("the plan ledger refused a request's plans; the answer is served",
                      extra={"plans": len(records)})


@api.post("/plans/<plan_id>/started")
@limits.limit(limits.optimize_limit, methods=["POST"])
def plan_started(plan_id: str):
    """A client reports that a plan's run started (the CLI's `wait` does, just before the command).
    Accepted for the ledger, which links it to the plan; its own budget, as large as optimize's:
    one report per plan a client may ask for."""
    problem = plan_id_problem(plan_id)
    if problem is not None:
        raise RequestError(FailureCode.INVALID_REQUEST, "not a plan id", details=[
            {"field": "plan_id", "message": problem}])
    state = app_state()
    now = state.clock()
    started = _started_at(now)
    report = RunStarted(plan_id=plan_id, client=auth.client_name(), started_at=to_epoch(started),
                        reported_at=to_epoch(now))
    try:
        state.ledger.started(report)
    except Exception:  # noqa: BLE001 - as _submit: the client's job goes on either way
        log.exception("the plan ledger refused a reported start")
    return Response(response_models.RunStartedResponse(
        status="accepted", plan_id=plan_id, started_at=started).to_json(),
        status=202, mimetype="application/json")


def _started_at(now: datetime) -> datetime:
    """The body's started_at (an empty body, or none, is "now"), within bounds of the clock."""
    if not request.content_length and "wsgi.input_terminated" not in request.environ:
        return now
    body = json_body()
    try:
        started = RunStartedReport.model_validate(body).started_at
    except ValidationError as exc:
        raise validation_error(exc) from None
    if started is None:
        return now
    if started > now + STARTED_AHEAD:
        raise RequestError(FailureCode.INVALID_REQUEST, "started_at is in the future", details=[
            {"field": "started_at", "message": f"must not be after {rfc3339(now + STARTED_AHEAD)} "
                                               f"(5 minutes past the service's clock; got "
                                               f"{rfc3339(started)})"}])
    return started


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
    # Shown, never counted in `degraded`: answers do not need the ledger (its records wait in a
    # spool), and a degraded status here would take every worker out of the load balancer over a
    # database outage that loses no answer.
    checks["ledger"] = _ledger_health(state)
    return jsonify({"status": "degraded" if degraded else "ok", "checks": checks})


def _ledger_health(state: AppState) -> dict:
    try:
        return state.ledger.health()
    except Exception as exc:  # noqa: BLE001 - /health answers whatever one check does
        return {"status": "unknown", "detail": f"the ledger's health failed ({type(exc).__name__})"}
