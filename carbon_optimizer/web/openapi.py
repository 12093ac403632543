"""The OpenAPI 3.1 document, generated from the request and response models (request_models.py,
response_models.py), with a request example per operation; /docs renders it with Swagger UI
(pages.py)."""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from carbon_optimizer.web import casdk_openapi, request_models, response_models

_REF = "#/components/schemas/{model}"


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}}}


def _ok(model: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}}


# Request examples, one set per operation: Swagger UI's "try it" starts from them, and
# tests/test_openapi.py sends each to the service and expects it to be answered.
OPTIMIZE_EXAMPLES = {
    "one_workload": {"summary": "One workload: the cleanest 90 minutes in DE or FR within 12 hours",
                     "value": {"id": "nightly-build", "duration": "PT1H30M", "zones": ["DE", "FR"],
                               "max_delay": "PT12H", "power_kw": 2.5}},
    "interruptible": {"summary": "An interruptible workload: at most 3 chunks of at least an hour",
                      "value": {"id": "reindex", "duration": "PT4H", "zones": ["GB"],
                                "max_delay": "PT36H", "energy_kwh": 12, "interruptible": True,
                                "min_chunk": "PT1H", "max_chunks": 3}},
    "batch": {"summary": "A batch sharing one zone's capacity: two at a time",
              "value": {"workloads": [
                  {"id": "train-a", "duration": 120, "zones": ["SE"], "max_delay": "PT24H", "power_kw": 8},
                  {"id": "train-b", "duration": 120, "zones": ["SE"], "max_delay": "PT24H", "power_kw": 8},
                  {"id": "train-c", "duration": 120, "zones": ["SE"], "max_delay": "PT24H", "power_kw": 8}],
                  "capacity": {"max_concurrent": 2}}},
}
FORECAST_EXAMPLE = {"zone": "DE", "hours": 48, "history": True}
STARTED_EXAMPLES = {"now": {"summary": "The run starts now (the service's clock)", "value": {}},
                    "at": {"summary": "The run started at a given moment",
                           "value": {"started_at": "2026-11-23T08:00:00Z"}}}
PLAN_ID_EXAMPLE = "3f2b6c1e9a7d4e0b8c5a1f6d2e9b7c40"


def build_document(version: str, max_batch_size: int) -> dict:
    documented = [request_models.Workload, request_models.WorkloadBatch,
                  response_models.ScheduledWorkload, response_models.UnschedulableWorkload,
                  response_models.BatchResponse, response_models.ForecastResponse,
                  response_models.ErrorResponse, response_models.HealthResponse,
                  response_models.LiveResponse, response_models.ZonesResponse,
                  request_models.RunStartedReport, response_models.RunStartedResponse,
                  *casdk_openapi.MODELS]
    requests = (request_models.Workload, request_models.WorkloadBatch, request_models.RunStartedReport)
    _, defs = models_json_schema([(m, "validation" if m in requests else "serialization")
                                  for m in documented], ref_template=_REF)
    components = defs.get("$defs", {})
    components["WorkloadBatch"]["properties"]["workloads"]["maxItems"] = max_batch_size
    rate_limited = _error("rate limit exceeded; see Retry-After")
    unauthorized = _error("missing or unknown X-API-Key")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "carbon-optimizer",
            "version": version,
            "description": "Schedules workloads into the cleanest time windows and zones, from "
                           "Electricity Maps carbon-intensity forecasts. Times are RFC 3339 UTC; "
                           "carbon intensity in gCO2eq/kWh; emissions in grams.",
        },
        "paths": {
            "/api/v1/optimize": {"post": {
                "summary": "Choose when (and where) to run one workload or a batch",
                "operationId": "optimize",
                # What the server enforces when API_KEYS is set (web/auth.py); generated clients
                # send the key where an operation lists it. tests/test_openapi.py checks both agree.
                "security": [{"ApiKey": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [{"$ref": _REF.format(model="Workload")},
                              {"$ref": _REF.format(model="WorkloadBatch")}]},
                    "examples": OPTIMIZE_EXAMPLES}}},
                "responses": {
                    "200": {"description": "a schedule for a single workload, or results for a batch",
                            "content": {"application/json": {"schema": {"oneOf": [
                                {"$ref": _REF.format(model="ScheduledWorkload")},
                                {"$ref": _REF.format(model="BatchResponse")}]}}}},
                    "400": _error("invalid request, one detail per field; or zone_not_found: a zone "
                                  "the provider does not serve or a cloud region this service does "
                                  "not know (each detail names the field, e.g. zones[1], and the "
                                  "closest known names in suggestions)"),
                    "401": unauthorized,
                    "413": _error("request body too large"),
                    "415": _error("body is not application/json"),
                    "422": _error("a single workload cannot be scheduled: window_not_covered, "
                                  "too_large, or zone_not_entitled (the service's data plan does "
                                  "not cover the zone); final, do not retry unchanged"),
                    "429": rate_limited,
                    "503": _error("upstream_unavailable or upstream_auth_failed (no carbon data for "
                                  "a zone just now; Retry-After: the upstream back-off), "
                                  "deadline_exceeded (the solving time ran out on a busy machine) "
                                  "or service_unavailable (the worker's solving memory is taken; "
                                  "Retry-After: a few seconds); retry after Retry-After seconds"),
                }}},
            "/api/v1/forecast": {"get": {
                "summary": "The normalised forecast for a zone, as the optimizer uses it",
                "operationId": "forecast",
                "security": [{"ApiKey": []}],
                "parameters": [{"name": "zone", "in": "query", "required": True,
                                "description": "a zone key (DE) or a cloud region (aws:eu-west-1)",
                                "example": FORECAST_EXAMPLE["zone"],
                                "schema": {"type": "string", "pattern": request_models.LOCATION_PATTERN}},
                               {"name": "hours", "in": "query", "required": False,
                                "description": "cover this many hours from now: past the provider's "
                                               "forecast, the estimates a search would use "
                                               "(flagged estimated; at most 14 days past it)",
                                "example": FORECAST_EXAMPLE["hours"],
                                "schema": {"type": "integer", "minimum": 1,
                                           "maximum": request_models.MAX_FORECAST_HOURS}},
                               {"name": "history", "in": "query", "required": False,
                                "description": "also the provider's recent measurements (the "
                                               "last day or so) in `history`",
                                "example": FORECAST_EXAMPLE["history"],
                                "schema": {"type": "boolean", "default": False}}],
                "responses": {
                    "200": _ok("ForecastResponse", "the forecast with its provenance"),
                    "400": _error("missing or malformed zone, hours or history; or zone_not_found: "
                                  "a zone the provider does not serve or an unknown cloud region "
                                  "(with suggestions)"),
                    "401": unauthorized,
                    "404": _error("forecast_not_found: the provider lists this zone but has no "
                                  "data for it"),
                    "422": _error("zone_not_entitled: the service's data plan does not cover the zone"),
                    "429": rate_limited,
                    "503": _error("upstream_unavailable or upstream_auth_failed: no carbon data "
                                  "can be had for this zone now; see Retry-After (the upstream "
                                  "back-off)"),
                }}},
            "/api/v1/zones": {"get": {
                "summary": "The zones the configured provider serves, and the cloud regions a "
                           "request may name instead, with their zones",
                "operationId": "zones",
                "security": [{"ApiKey": []}],
                "responses": {
                    "200": _ok("ZonesResponse", "zone keys and cloud regions"),
                    "401": unauthorized,
                    "429": rate_limited,
                    "503": _error("the provider's zone list cannot be had just now; see Retry-After"),
                }}},
            "/api/v1/plans/{plan_id}/started": {"post": {
                "summary": "Report that a planned run started (for the plan ledger's measured savings)",
                "operationId": "plan_started",
                "security": [{"ApiKey": []}],
                "parameters": [{"name": "plan_id", "in": "path", "required": True,
                                "description": "the plan_id of the answer whose run started",
                                "example": PLAN_ID_EXAMPLE,
                                "schema": {"type": "string", "pattern": request_models.PLAN_ID_PATTERN}}],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"$ref": _REF.format(model="RunStartedReport")},
                    "examples": STARTED_EXAMPLES}}},
                "responses": {
                    "202": _ok("RunStartedResponse", "accepted for the ledger (a report of a plan "
                                                     "it does not hold is kept out of the savings)"),
                    "400": _error("plan_id is not 32 hexadecimal digits, or started_at is not an "
                                  "RFC 3339 timestamp at most 5 minutes past the service's clock"),
                    "401": unauthorized,
                    "415": _error("a body that is not application/json"),
                    "429": rate_limited,
                }}},
            "/health": {"get": {
                "summary": "Readiness and dependency state, for load balancers",
                "operationId": "health",
                "security": [],  # open to load balancers, whatever a document-wide default says
                "responses": {
                    "200": _ok("HealthResponse", "the worker can take requests"),
                    "503": _error("service_unavailable, not ready: every application thread of "
                                  "the worker answering has been busy for longer than a short "
                                  "grace; Retry-After is that grace"),
                }}},
            "/health/live": {"get": {
                "summary": "Liveness: the process answers, whatever its load",
                "operationId": "health_live",
                "security": [],
                "responses": {"200": _ok("LiveResponse", "the process is alive")}}},
            **casdk_openapi.paths(),
        },
        "tags": [{"name": casdk_openapi.TAG,
                  "description": "The Green Software Foundation Carbon Aware SDK's WebAPI (v1.8) at its "
                                 "own paths, names and shapes: its clients need only this base URL"}],
        "components": {
            "schemas": components,
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }


def served(document: dict, api_keys_configured: bool) -> dict:
    """The document as this deployment enforces it. Without client keys (API_KEYS, or an empty
    `api_keys` in the secret) the API is open, so no operation requires a key: a document that said
    otherwise would be wrong, and generated clients would ask for a key nobody has."""
    if api_keys_configured:
        return document
    paths = {path: {method: {**operation, "security": []} if "security" in operation else operation
                    for method, operation in operations.items()}
             for path, operations in document["paths"].items()}
    return {**document, "paths": paths}
