"""The Carbon Aware SDK routes (casdk_routes.py) in our OpenAPI document, under their own tag. The
operation ids are the SDK's own (its controller's method names), so a client generated from this
document names its methods as one generated from the SDK's."""

from __future__ import annotations

from carbon_optimizer.web import casdk_models as models
from carbon_optimizer.web.casdk_params import MAX_BATCH_ITEMS, MAX_LOCATIONS

TAG = "Carbon Aware SDK"
_REF = "#/components/schemas/{model}"
MODELS = [models.EmissionsData, models.EmissionsDataDTO, models.EmissionsForecastDTO,
          models.CarbonIntensityDTO, models.Location, models.ValidationProblemDetails]

_LOCATION_TEXT = ("an Azure region as the SDK names it (eastus, westeurope), a zone key (DE) or a "
                  "cloud region (aws:eu-west-1, gcp:europe-west4); GET /locations lists the regions")
_TIME_TEXT = "ISO 8601 with an offset (2022-03-01T15:30:00Z); without one, UTC"


def _array(model: str) -> dict:
    return {"type": "array", "items": {"$ref": _REF.format(model=model)}}


def _ok(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict:
    return {"description": description, "content": {"application/problem+json": {
        "schema": {"$ref": _REF.format(model="ValidationProblemDetails")}}}}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}}}


def _common(**more: dict) -> dict:
    return {"400": _problem("a parameter is missing, malformed or out of range, or a location is not "
                            "served; `errors` names the parameter (.NET ValidationProblemDetails)"),
            "401": _error("missing or unknown X-API-Key (only when the service has keys)"),
            "429": _error("rate limit exceeded; see Retry-After"),
            "503": _problem("no carbon data can be had just now; see Retry-After"),
            **more}


def _query(name: str, description: str, schema: dict, example=None, required: bool = False) -> dict:
    parameter = {"name": name, "in": "query", "required": required, "description": description,
                 "schema": schema}
    if example is not None:
        parameter["example"] = example
    return parameter


def _locations(example: list[str]) -> dict:
    return _query("location", f"repeat for several; at most {MAX_LOCATIONS} distinct: {_LOCATION_TEXT}",
                  {"type": "array", "items": {"type": "string"}}, example, required=True)


_TIMES = [
    _query("time", f"start of the range ({_TIME_TEXT}); default now", {"type": "string"},
           "2022-03-01T15:30:00Z"),
    _query("toTime", "end of the range; needs `time`; default `time`", {"type": "string"},
           "2022-03-01T18:30:00Z"),
    _query("durationMinutes", "best: the length of the window to find (0: the single best points)",
           {"type": "integer", "format": "int32", "minimum": 0}, 0),
]
_OPTIONAL_TIME = {"type": ["string", "null"]}
_WINDOW = {"type": ["integer", "null"], "format": "int32", "minimum": 0}

FORECAST_BATCH_EXAMPLES = {"replay": {
    "summary": "The forecast known at a past moment (a replaying deployment only; others answer 501)",
    "value": [{"requestedAt": "2022-03-01T15:30:00Z", "location": "eastus", "windowSize": 30}]}}
AVERAGE_BATCH_EXAMPLES = {"two_ranges": {
    "summary": "The measured average over two ranges",
    "value": [{"location": "eastus", "startTime": "2022-03-01T15:30:00Z", "endTime": "2022-03-01T18:30:00Z"},
              {"location": "westeurope", "startTime": "2022-03-01T12:00:00Z", "endTime": "2022-03-01T14:00:00Z"}]}}


def _body(item: dict, examples: dict) -> dict:
    return {"required": True, "content": {"application/json": {
        "schema": {"type": "array", "maxItems": MAX_BATCH_ITEMS, "items": item}, "examples": examples}}}


def paths() -> dict:
    security = [{"ApiKey": []}]
    measured = {"200": _ok(_array("EmissionsData"), "measured points (duration a .NET TimeSpan)"),
                "204": {"description": "no measured point in the range"}}
    return {
        "/emissions/bylocation": {"get": {
            "tags": [TAG], "operationId": "GetEmissionsDataForLocationByTime", "security": security,
            "summary": "Measured carbon intensity of one location over a range",
            "parameters": [_query("location", _LOCATION_TEXT, {"type": "string"}, "eastus", required=True),
                           *_TIMES],
            "responses": {**measured, **_common()}}},
        "/emissions/bylocations": {"get": {
            "tags": [TAG], "operationId": "GetEmissionsDataForLocationsByTime", "security": security,
            "summary": "Measured carbon intensity of several locations over a range",
            "parameters": [_locations(["eastus", "westeurope"]), *_TIMES],
            "responses": {**measured, **_common()}}},
        "/emissions/bylocations/best": {"get": {
            "tags": [TAG], "operationId": "GetBestEmissionsDataForLocationsByTime", "security": security,
            "summary": "The cleanest measured point, or with durationMinutes the cleanest window of that "
                       "length inside [time, toTime] (from time without toTime; exact search over "
                       "whole-minute starts), across locations",
            "parameters": [_locations(["eastus", "westeurope"]), *_TIMES],
            "responses": {**measured, "204": {"description": "no measured data in the range"}, **_common()}}},
        "/emissions/forecasts/current": {"get": {
            "tags": [TAG], "operationId": "GetCurrentForecastData", "security": security,
            "summary": "The current forecast per location, its rolling means over windowSize and the "
                       "optimal window (exact search over every whole-minute start)",
            "parameters": [_locations(["eastus"]),
                           _query("dataStartAt", f"scope start ({_TIME_TEXT}); default the forecast's start; "
                                                 "within the forecast", {"type": "string"}),
                           _query("dataEndAt", "scope end; default the forecast's end; within the forecast",
                                  {"type": "string"}),
                           _query("windowSize", "workload minutes; default one forecast step",
                                  {"type": "integer", "format": "int32", "minimum": 0}, 30)],
            "responses": {"200": _ok(_array("EmissionsForecastDTO"), "one forecast per location"),
                          **_common()}}},
        "/emissions/forecasts/batch": {"post": {
            "tags": [TAG], "operationId": "BatchForecastDataAsync", "security": security,
            "summary": "Forecasts as known at past moments (requestedAt): from recorded data on a "
                       "replaying deployment (CARBON_PROVIDER=file, FILE_REPLAY=true), else 501",
            "requestBody": _body({"type": "object", "required": ["requestedAt", "location"], "properties": {
                "requestedAt": {"type": "string", "description": _TIME_TEXT},
                "location": {"type": "string", "description": _LOCATION_TEXT},
                "dataStartAt": _OPTIONAL_TIME, "dataEndAt": _OPTIONAL_TIME, "windowSize": _WINDOW}},
                FORECAST_BATCH_EXAMPLES),
            "responses": {"200": _ok(_array("EmissionsForecastDTO"), "one forecast per request, in order"),
                          **_common(**{
                              "413": _error("request body too large"),
                              "415": _problem("body is not application/json"),
                              "501": _problem("this deployment keeps no historical forecasts")})}}},
        "/emissions/average-carbon-intensity": {"get": {
            "tags": [TAG], "operationId": "GetAverageCarbonIntensity", "security": security,
            "summary": "The time-weighted mean of the measured carbon intensity over a range",
            "parameters": [_query("location", _LOCATION_TEXT, {"type": "string"}, "eastus", required=True),
                           _query("startTime", _TIME_TEXT, {"type": "string"}, "2022-03-01T15:30:00Z", True),
                           _query("endTime", _TIME_TEXT, {"type": "string"}, "2022-03-01T18:30:00Z", True)],
            "responses": {"200": _ok({"$ref": _REF.format(model="CarbonIntensityDTO")}, "the mean"),
                          **_common()}}},
        "/emissions/average-carbon-intensity/batch": {"post": {
            "tags": [TAG], "operationId": "GetAverageCarbonIntensityBatch", "security": security,
            "summary": "The measured mean for each location and range",
            "requestBody": _body({"type": "object", "required": ["location", "startTime", "endTime"],
                                  "properties": {"location": {"type": "string"},
                                                 "startTime": {"type": "string"},
                                                 "endTime": {"type": "string"}}}, AVERAGE_BATCH_EXAMPLES),
            "responses": {"200": _ok(_array("CarbonIntensityDTO"), "one mean per request, in order"),
                          **_common(**{"413": _error("request body too large"),
                                       "415": _problem("body is not application/json")})}}},
        "/locations": {"get": {
            "tags": [TAG], "operationId": "GetAllLocations", "security": security,
            "summary": "The cloud regions a request may name, with their coordinates",
            "responses": {"200": _ok({"type": "object", "additionalProperties": {
                "$ref": _REF.format(model="Location")}}, "region name -> location"),
                "204": {"description": "no regions"},
                "401": _error("missing or unknown X-API-Key (only when the service has keys)"),
                "429": _error("rate limit exceeded; see Retry-After")}}},
    }
