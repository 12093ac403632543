"""The OpenAPI 3.1 document, generated from the response and request models in models.py, and a small docs page."""

from __future__ import annotations

import html
import json

from pydantic.json_schema import models_json_schema

from carbon_optimizer.web import models

_REF = "#/components/schemas/{model}"


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}}}


def _ok(model: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}}


def build_document(version: str, max_batch_size: int) -> dict:
    documented = [models.Workload, models.WorkloadBatch, models.ScheduledWorkload,
                  models.UnschedulableWorkload, models.BatchResponse, models.ForecastResponse,
                  models.ErrorResponse, models.HealthResponse, models.ZonesResponse]
    requests = (models.Workload, models.WorkloadBatch)
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
                              {"$ref": _REF.format(model="WorkloadBatch")}]}}}},
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
                    "503": _error("no carbon data for a zone just now (a passing upstream fault), "
                                  "or deadline_exceeded (the solving time ran out on a busy "
                                  "machine); retry after Retry-After seconds"),
                }}},
            "/api/v1/forecast": {"get": {
                "summary": "The normalised forecast for a zone, as the optimizer uses it",
                "operationId": "forecast",
                "security": [{"ApiKey": []}],
                "parameters": [{"name": "zone", "in": "query", "required": True,
                                "description": "a zone key (DE) or a cloud region (aws:eu-west-1)",
                                "schema": {"type": "string", "pattern": models.LOCATION_PATTERN}},
                               {"name": "hours", "in": "query", "required": False,
                                "description": "cover this many hours from now: past the provider's "
                                               "forecast, the estimates a search would use "
                                               "(flagged estimated; at most 14 days past it)",
                                "schema": {"type": "integer", "minimum": 1,
                                           "maximum": models.MAX_FORECAST_HOURS}}],
                "responses": {
                    "200": _ok("ForecastResponse", "the forecast with its provenance"),
                    "400": _error("missing or malformed zone or hours; or zone_not_found: a zone the "
                                  "provider does not serve or an unknown cloud region (with "
                                  "suggestions)"),
                    "401": unauthorized,
                    "404": _error("the provider has no data for this zone"),
                    "422": _error("zone_not_entitled: the service's data plan does not cover the zone"),
                    "429": rate_limited,
                    "503": _error("no carbon data can be had for this zone now; see Retry-After"),
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
            "/health": {"get": {
                "summary": "Liveness and dependency state, for load balancers",
                "operationId": "health",
                "security": [],  # open to load balancers, whatever a document-wide default says
                "responses": {"200": _ok("HealthResponse", "the process can serve")}}},
        },
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


def render_docs(document: dict) -> str:
    """A self-contained page (no scripts, no CDN): endpoints, then every schema as JSON."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(document['info']['title'])}"
             " API</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "pre{background:#f4f4f4;padding:1em;overflow:auto}code{background:#f4f4f4}</style></head><body>",
             f"<h1>{html.escape(document['info']['title'])} {html.escape(document['info']['version'])}</h1>",
             f"<p>{html.escape(document['info']['description'])}</p>",
             "<p>Machine-readable: <a href='/api/v1/openapi.json'>/api/v1/openapi.json</a> (OpenAPI 3.1).</p>",
             "<h2>Endpoints</h2>"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            parts.append(f"<h3><code>{method.upper()} {html.escape(path)}</code></h3>"
                         f"<p>{html.escape(operation['summary'])}</p><ul>")
            for status, response in operation["responses"].items():
                parts.append(f"<li><b>{status}</b>: {html.escape(response['description'])}</li>")
            parts.append("</ul>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        parts.append(f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3>"
                     f"<pre>{html.escape(json.dumps(schema, indent=2))}</pre>")
    parts.append("</body></html>")
    return "".join(parts)
