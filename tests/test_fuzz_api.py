"""schemathesis against the served OpenAPI document (/api/v1/openapi.json): generated requests,
valid and invalid, on every endpoint; no 5xx, and every answer matches the documented status codes,
content type, headers and schema.

Two apps: one on the built-in demo provider (every zone has data: the scheduling paths), one on an
Electricity Maps stand-in where DE has data and other zones fail
(HTTP 500, or unknown)
(the 400/404/503 paths). Both serve the document they are tested against."""

from __future__ import annotations

import collections
import copy
from datetime import datetime, timezone

import pytest
import schemathesis
from hypothesis import HealthCheck, settings, strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from carbon_optimizer.web.app import create_app
from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.settings import load_settings
from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast

NOW = datetime(2026, 11, 23, 10, 17, 30, tzinfo=timezone.utc)
CASES: collections.Counter = collections.Counter()


def _app(env: dict):
    env = {"RATE_LIMIT_ENABLED": "false", **env}  # hundreds of cases from one client: not a limits test
    return create_app(settings=load_settings(env), secret_store=SecretStore(env), clock=lambda: NOW)


# Rate limits off: thousands of requests from one client on purpose (429 stays documented).
demo_app = _app({"CARBON_PROVIDER": "demo", "RATE_LIMIT_ENABLED": "false"})



class _Answers(dict):
    """DE has data; other zones fail: unknown (404) when the key has an even length, else HTTP 500."""

    def get(self, zone, default=None):
        if zone in self:
            return self[zone]
        return default if len(zone) % 2 == 0 else (500, {"status": "error", "message": "boom"})


_stand_in = ElectricityMapsStandIn().__enter__()  # loopback, daemon thread, lives with the process
_stand_in.responses = _Answers()
_stand_in.responses["DE"] = (200, hourly_forecast("DE", NOW.replace(minute=0, second=0),
                                                  [300.0 - 3 * i for i in range(72)]))
upstream_app = _app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "fuzz-key",
                     "ELECTRICITY_MAPS_BASE_URL": _stand_in.url, "UPSTREAM_RETRIES": "0",
                     "UPSTREAM_FAILURE_BACKOFF_SECONDS": "0", "RATE_LIMIT_ENABLED": "false"})

demo_schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", demo_app)

# The calendar's ends once in UTC (issue 23.8): generated date-times stay inside the years 1 to
# 9999 in their own offset and rarely come near these, so one body in four gets one of them.
CALENDAR_EDGES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T13:59:59+14:00",
                  "9999-12-31T10:00:01-14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
TIMESTAMP_FIELDS = ["earliest_start", "deadline", "latest_start", "as_of"]


WINDOW_ENDS = {"deadline", "latest_start", "max_delay"}  # at most one per workload


def _with_edge(body, field: str, value: str):
    body = copy.deepcopy(body)
    workloads = body.get("workloads")
    inside = workloads[0] if isinstance(workloads, list) and workloads and isinstance(workloads[0], dict) else None
    target = inside if inside is not None and field != "as_of" else body
    if field in WINDOW_ENDS:  # the edge, not a second window end, must be what the answer is about
        for other in WINDOW_ENDS - {field}:
            target.pop(other, None)
    target[field] = value
    return body


# Generated bodies often fail elsewhere first (negative cases); these do not, so the edge is met.
VALID_BODIES = [{"duration": 47, "zones": ["DE"]},
                {"workloads": [{"duration": "PT1H", "zones": ["FR"]}, {"duration": 47}]}]


def flatmap_body(ctx, body):
    if not isinstance(body, dict):
        return st.just(body)
    edged = st.builds(_with_edge, st.sampled_from([body] + VALID_BODIES), st.sampled_from(TIMESTAMP_FIELDS),
                      st.sampled_from(CALENDAR_EDGES))
    return st.sampled_from([False, False, False, True]).flatmap(lambda edge: edged if edge else st.just(body))


upstream_schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", upstream_app)

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


# Documented 501s: requestedAt on a deployment that does not replay recorded data (casdk_routes.py).
NOT_IMPLEMENTED_HERE = {"/emissions/forecasts/batch"}


def _check(case, label: str, upstream_down_allowed: bool = False) -> None:
    # Every other built-in check runs (documented status, content type, headers and schema;
    # schema-violating requests rejected). Not "schema-valid requests accepted": a request can fit
    # the schema and still be refused with a 400 for rules across fields that a schema cannot say
    # (latest_start before now, a window longer than 31 days).
    excluded = [positive_data_acceptance]
    if upstream_down_allowed or case.operation.path in NOT_IMPLEMENTED_HERE:
        excluded.append(not_a_server_error)  # checked below: 503 + Retry-After (or that 501), nothing else
    response = case.call_and_validate(excluded_checks=excluded)
    if response.status_code == 501 and case.operation.path in NOT_IMPLEMENTED_HERE:
        pass  # the Carbon Aware SDK's own answer where the provider keeps no historical forecasts
    elif upstream_down_allowed and response.status_code >= 500:
        headers = {name.lower(): value for name, value in response.headers.items()}
        retry_after = headers.get("retry-after")
        retry_after = retry_after[0] if isinstance(retry_after, list) else retry_after
        assert response.status_code == 503 and int(retry_after) >= 1, (response.status_code, headers)
    else:
        assert response.status_code < 500
    CASES[label] += 1


# The Carbon Aware SDK's routes: query strings and small bodies of a few typed fields each, fuzzed
# with fewer examples apiece (they are many operations; CI's time is shared).
SDK_PATHS = r"^/(emissions|locations)"


@demo_schema.hooks.apply(flatmap_body)
@demo_schema.exclude(path_regex=SDK_PATHS).parametrize()
@FUZZ
def test_demo_provider_api(case):
    _check(case, f"demo {case.operation.label}")


@demo_schema.include(path_regex=SDK_PATHS).parametrize()
@settings(FUZZ, max_examples=60)
def test_demo_provider_carbon_aware_sdk_api(case):
    _check(case, f"demo {case.operation.label}")


@upstream_schema.exclude(path_regex=SDK_PATHS).parametrize()
@settings(FUZZ, max_examples=150)
def test_upstream_api(case):
    _check(case, f"upstream {case.operation.label}", upstream_down_allowed=True)


@upstream_schema.include(path_regex=SDK_PATHS).parametrize()
@settings(FUZZ, max_examples=30)
def test_upstream_carbon_aware_sdk_api(case):
    _check(case, f"upstream {case.operation.label}", upstream_down_allowed=True)


@pytest.mark.last_in_module
def test_at_least_1000_generated_cases_ran():
    operations = {label.split(" ", 1)[1] for label in CASES}
    if len(operations) < 3 or len({label.split(" ", 1)[0] for label in CASES}) < 2:
        pytest.skip("run the whole file to count the cases")
    total = sum(CASES.values())
    print(f"schemathesis cases: {total} {dict(CASES)}")
    assert total >= 1000, dict(CASES)
