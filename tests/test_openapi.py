"""The OpenAPI document's security requirements say what the server enforces: with client keys
configured, exactly the operations that answer 401 without a key declare the ApiKey scheme (so a
client generated from the document sends it); without keys the API is open and none declares it."""

from __future__ import annotations

import pytest

from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.settings import load_settings
from carbon_optimizer.web.app import create_app

KEY = "FAKE-openapi-key-3c8e"
BODY = {"duration": "PT1H", "zones": ["DE"], "max_delay": "PT6H"}
SAMPLE_QUERY = {"zone": "DE", "hours": "2", "history": "true"}  # a value for each query parameter the document has
SAMPLE_PATH = {"plan_id": "0123456789abcdef0123456789abcdef"}  # ... and for each path parameter


def build(env: dict):
    env = {"CARBON_PROVIDER": "demo", "RATE_LIMIT_ENABLED": "false", **env}
    return create_app(settings=load_settings(env), secret_store=SecretStore(env))


def operations(document: dict):
    for path, items in document["paths"].items():
        for method, operation in items.items():
            yield path, method, operation


def requires_key(operation: dict, document: dict) -> bool:
    # An operation's own `security` wins over the document's; [] or a {} entry means "no auth".
    requirements = operation.get("security", document.get("security", []))
    return bool(requirements) and all(requirement for requirement in requirements)


# The Carbon Aware SDK's operations (casdk_openapi.py): they answer their own examples.
CASDK_OPERATIONS = {"GetEmissionsDataForLocationByTime", "GetEmissionsDataForLocationsByTime",
                    "GetBestEmissionsDataForLocationsByTime", "GetCurrentForecastData",
                    "BatchForecastDataAsync", "GetAverageCarbonIntensity",
                    "GetAverageCarbonIntensityBatch", "GetAllLocations"}
# Not 200 on the demo provider: it keeps no historical forecasts, and answers as the SDK does then.
EXPECTED_STATUS = {"BatchForecastDataAsync": 501, "plan_started": 202}


def filled(path: str, operation: dict, values: dict) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", str(values[parameter["name"]]))
    return path


def call(client, path: str, method: str, operation: dict, headers: dict):
    query = {p["name"]: SAMPLE_QUERY.get(p["name"], p.get("example")) for p in operation.get("parameters", [])
             if p["in"] == "query" and (p["name"] in SAMPLE_QUERY or "example" in p)}
    body = None
    if "requestBody" in operation:
        examples = operation["requestBody"]["content"]["application/json"].get("examples")
        body = next(iter(examples.values()))["value"] if examples and path.startswith("/emissions/") else BODY
    if operation["operationId"] == "plan_started":
        body = None  # optional: the run starts now
    return client.open(filled(path, operation, SAMPLE_PATH), method=method.upper(), query_string=query,
                       json=body, headers=headers)


def test_exactly_the_keyed_operations_declare_the_api_key_scheme():
    client = build({"API_KEYS": KEY}).test_client()
    document = client.get("/api/v1/openapi.json", headers={"X-API-Key": KEY}).json
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key"}
    keyed = {operation["operationId"]: operation["security"]
             for _, _, operation in operations(document) if requires_key(operation, document)}
    assert keyed == {"optimize": [{"ApiKey": []}], "forecast": [{"ApiKey": []}], "zones": [{"ApiKey": []}],
                     "plan_started": [{"ApiKey": []}], **{name: [{"ApiKey": []}] for name in CASDK_OPERATIONS}}
    health = document["paths"]["/health"]["get"]
    assert not requires_key(health, document)


@pytest.mark.parametrize("docs_access", ["public", "api_key"])
def test_401_without_a_key_if_and_only_if_the_document_requires_one(docs_access):
    client = build({"API_KEYS": KEY, "DOCS_ACCESS": docs_access}).test_client()
    document = client.get("/api/v1/openapi.json", headers={"X-API-Key": KEY}).json
    seen = set()
    for path, method, operation in operations(document):
        without = call(client, path, method, operation, headers={})
        assert (without.status_code == 401) == requires_key(operation, document), \
            (method, path, without.status_code)
        with_key = call(client, path, method, operation, headers={"X-API-Key": KEY})
        assert with_key.status_code == EXPECTED_STATUS.get(operation["operationId"], 200), \
            (method, path, with_key.status_code, with_key.json)
        seen.add(operation["operationId"])
    assert seen == {"optimize", "forecast", "zones", "plan_started", "health", "health_live", *CASDK_OPERATIONS}


def test_without_client_keys_the_api_is_open_and_the_document_says_so():
    client = build({}).test_client()
    document = client.get("/api/v1/openapi.json").json
    for path, method, operation in operations(document):
        assert not requires_key(operation, document), (method, path)
        assert call(client, path, method, operation, headers={}).status_code == \
            EXPECTED_STATUS.get(operation["operationId"], 200), (method, path)


def test_every_operation_with_input_has_examples_and_the_service_answers_each():
    """Swagger UI's "try it" starts from these: each must be a request the service accepts."""
    client = build({}).test_client()
    document = client.get("/api/v1/openapi.json").json
    answered = []
    for path, method, operation in operations(document):
        body = operation.get("requestBody")
        parameters = [p for p in operation.get("parameters", []) if p["in"] == "query"]
        at = filled(path, operation, {p["name"]: p.get("example") for p in operation.get("parameters", [])})
        if body:
            examples = body["content"]["application/json"]["examples"]
            assert examples, operation["operationId"]
            for name, example in examples.items():
                answer = client.open(at, method=method.upper(), json=example["value"])
                assert answer.status_code == EXPECTED_STATUS.get(operation["operationId"], 200), (name, answer.json)
                answered.append(name)
        if parameters:
            # A query string writes a boolean as JSON does (true), not as Python does (True).
            query = {p["name"]: str(p["example"]).lower() if isinstance(p["example"], bool) else p["example"]
                     for p in parameters if "example" in p}
            answer = client.open(path, method=method.upper(), query_string=query)
            assert answer.status_code == 200, answer.json
            answered.append(operation["operationId"])
    one = client.post("/api/v1/optimize", json=document["paths"]["/api/v1/optimize"]["post"][
        "requestBody"]["content"]["application/json"]["examples"]["interruptible"]["value"]).json
    assert one["status"] == "scheduled" and 1 <= len(one["chunks"]) <= 3
    batch = client.post("/api/v1/optimize", json=document["paths"]["/api/v1/optimize"]["post"][
        "requestBody"]["content"]["application/json"]["examples"]["batch"]["value"]).json
    assert batch["summary"]["workloads"] == 3
    assert sorted(answered) == sorted(["at", "batch", "forecast", "interruptible", "now", "one_workload", "replay", "two_ranges",
                                       *(CASDK_OPERATIONS - {"BatchForecastDataAsync", "GetAverageCarbonIntensityBatch",
                                                             "GetAllLocations"})])
