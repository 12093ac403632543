"""Every failure code's status and Retry-After come from the code itself (issue 25): a transient
code answers 503 with its own delay, a final one its one status and no Retry-After. Real failures
are driven through the Flask test client (and the Gunicorn worker's own answers through its
writer) wherever that is practical; the few codes no request reaches on cue go through the
writer. The expected statuses and delays are written out here, not read from errors.py.

Also: only errors.py writes an error body or a Retry-After, and every name of errors.py is
imported from errors.py only."""

from __future__ import annotations

import ast
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from carbon_optimizer import errors
from carbon_optimizer.web.app_state import app_state
from carbon_optimizer.errors import (
    Busy, ErrorWriter, FailureCode, ReadTimeout, RequestError, UnknownLocation,
)
from carbon_optimizer.ops.gunicorn_worker import json_error_response
from carbon_optimizer.ops.thread_load import ENVIRON_KEY, ThreadLoad
from carbon_optimizer.scheduling.budget import Budget
from carbon_optimizer.web.pages import STATIC_DIR
from tests.conftest import FIXED_NOW
from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast

REPO = Path(__file__).resolve().parent.parent
BUSY = 5       # seconds: the machine is busy (solving time or memory taken), ask again shortly
BACKOFF = 30   # seconds: the upstream back-off's default, when none is configured

# code -> (status, Retry-After): None for a final code, BUSY, or "backoff" (the configured
# UPSTREAM_FAILURE_BACKOFF_SECONDS, BACKOFF when it is 0).
EXPECTED = {
    "invalid_request": (400, None), "unauthorized": (401, None), "forbidden": (403, None),
    "not_found": (404, None), "method_not_allowed": (405, None), "request_timeout": (408, None),
    "payload_too_large": (413, None), "uri_too_long": (414, None),
    "unsupported_media_type": (415, None), "range_not_satisfiable": (416, None),
    "expectation_failed": (417, None), "unprocessable": (422, None), "rate_limited": (429, None),
    "headers_too_large": (431, None), "window_not_covered": (422, None),
    "capacity_exceeded": (422, None), "too_large": (422, None), "deadline_exceeded": (503, BUSY),
    "zone_not_found": (400, None), "zone_not_entitled": (422, None),
    "forecast_not_found": (404, None), "upstream_unavailable": (503, "backoff"),
    "upstream_auth_failed": (503, "backoff"), "upstream_error": (503, "backoff"),
    "service_unavailable": (503, BUSY), "internal_error": (500, None), "not_implemented": (501, None),
}
# Codes answered by a request driven below (Flask or the Gunicorn worker); the rest go through
# the writer alone: capacity_exceeded and upstream_error only appear inside a batch's results or
# for a provider failure no provider raises on cue, unprocessable is no answer of ours yet.
DRIVEN = set(EXPECTED) - {"capacity_exceeded", "upstream_error", "unprocessable"}
driven: dict[str, tuple[int, str | None]] = {}  # code -> (status, Retry-After) seen


def delay(code: str, backoff: int) -> str | None:
    kind = EXPECTED[code][1]
    if kind is None:
        return None
    return str((backoff or BACKOFF) if kind == "backoff" else kind)


def check(answer, code: str, backoff: int = 0) -> None:
    """The answer is `code`'s: its status, its Retry-After or none, and the envelope."""
    body = answer.get_json()
    assert body["error"]["code"] == code, body
    assert answer.status_code == EXPECTED[code][0], (code, answer.status_code)
    assert answer.headers.get("Retry-After") == delay(code, backoff), (code, answer.headers)
    assert answer.get_data().endswith(b"}\n")
    driven[code] = (answer.status_code, answer.headers.get("Retry-After"))


def test_the_table_here_names_every_code():
    assert {code.value for code in FailureCode} == set(EXPECTED)


# -- real failures through the Flask test client --------------------------------------------------

def test_request_failures(client):
    check(client.post("/api/v1/optimize", data="{", content_type="application/json"), "invalid_request")
    check(client.get("/api/v1/nope"), "not_found")
    check(client.delete("/api/v1/optimize"), "method_not_allowed")
    check(client.post("/api/v1/optimize", data=b"x" * 1_048_577, content_type="application/json"),
          "payload_too_large")
    check(client.post("/api/v1/optimize", data="{}", content_type="text/plain"), "unsupported_media_type")
    script = next(STATIC_DIR.glob("*.js")).name
    check(client.get(f"/static/{script}", headers={"Range": "bytes=99999999-"}), "range_not_satisfiable")


def test_a_body_not_received_in_time_is_408(client):
    class Stalled(io.RawIOBase):  # the Gunicorn worker's reader raises ReadTimeout at the deadline
        def readable(self):
            return True

        def readinto(self, buffer):
            raise ReadTimeout(5)

    answer = client.post("/api/v1/optimize", content_type="application/json",
                         environ_overrides={"wsgi.input": Stalled(), "CONTENT_LENGTH": "17"})
    check(answer, "request_timeout")
    assert answer.get_json()["error"]["message"] == "request not received within 5 s"


def test_who_may_call(make_app):
    keyed = make_app({"API_KEYS": "key-one", "METRICS_ALLOW_CIDRS": "10.0.0.0/8"}).test_client()
    check(keyed.get("/api/v1/zones"), "unauthorized")
    check(keyed.get("/metrics"), "forbidden")


def test_scheduling_failures(client, make_app):
    # 50 zones, three chunks over 17 days: refused before any solving (tests/test_budget.py).
    zones = client.get("/api/v1/zones").get_json()["zones"][:50]
    check(client.post("/api/v1/optimize", json={
        "duration": 271, "zones": zones, "interruptible": True, "min_chunk": 2, "max_chunks": 3,
        "max_delay": "P17D"}), "too_large")
    check(client.post("/api/v1/optimize", json={
        "duration": 61, "zones": ["ES"], "earliest_start": "2027-06-01T00:00:17Z"}), "window_not_covered")
    check(client.post("/api/v1/optimize", json={"duration": 61, "zones": ["eu-west-1"]}), "zone_not_found")
    app = make_app()
    ticks = iter(range(10 ** 6))  # every clock reading a second later: the 0.5 s run out at once
    app_state(app).engine.new_budget = lambda: Budget(seconds=0.5, clock=lambda: float(next(ticks)))
    check(app.test_client().post("/api/v1/optimize", json={"duration": 61, "zones": ["DE"]}),
          "deadline_exceeded")


def test_a_busy_worker_and_an_unexpected_error(make_app, monkeypatch):
    app = make_app()
    engine = app_state(app).engine

    def busy(*args, **kwargs):
        raise Busy("this worker's memory for solving is lent to other requests")
    monkeypatch.setattr(engine, "optimize", busy)
    check(app.test_client().post("/api/v1/optimize", json={"duration": 61, "zones": ["DE"]}),
          "service_unavailable")

    def broken(*args, **kwargs):
        raise KeyError("a bug")
    monkeypatch.setattr(engine, "optimize", broken)
    answer = app.test_client().post("/api/v1/optimize", json={"duration": 61, "zones": ["DE"]})
    check(answer, "internal_error")
    assert "a bug" not in answer.get_data(as_text=True)


@pytest.mark.parametrize("status, code", [(409, "invalid_request"), (410, "invalid_request"),
                                          (502, "internal_error")])
def test_a_status_without_a_code_of_its_own_keeps_its_status(make_app, status, code):
    """No view raises these today; one that did must not have its conflict answered as a 400."""
    from flask import abort
    app = make_app()
    app.add_url_rule("/probe", "probe", lambda: abort(status))
    answer = app.test_client().get("/probe")
    assert answer.status_code == status
    assert answer.get_json()["error"]["code"] == code
    assert "Retry-After" not in answer.headers


@pytest.mark.parametrize("backoff", [0, 17])
def test_the_providers_failures(make_app, backoff):
    """Through the Electricity Maps provider against a local stand-in: each zone fails its own
    way. The upstream codes wait the configured back-off (17 s), or 30 s when none is set."""
    with ElectricityMapsStandIn() as stand_in:
        stand_in.responses.update({
            "DE": (500, {"message": "oops"}),
            "FR": (401, {"message": "Invalid authentication credentials"}),
            "ES": (401, {"status": "error", "message": "Zone 'ES' is not available with this token"}),
            "GB": (404, {"status": "error", "message": "No data"}),
            "PL": (200, hourly_forecast("PL", FIXED_NOW - timedelta(minutes=17), [300.0] * 24)),
        })
        app = make_app({"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "test-key",
                        "ELECTRICITY_MAPS_BASE_URL": stand_in.url, "UPSTREAM_RETRIES": "0",
                        "UPSTREAM_READ_TIMEOUT": "2", "UPSTREAM_FAILURE_BACKOFF_SECONDS": str(backoff)})
        client = app.test_client()
        one = {"duration": 61, "max_delay": "PT7H"}
        check(client.post("/api/v1/optimize", json={**one, "zones": ["DE"]}), "upstream_unavailable", backoff)
        check(client.get("/api/v1/forecast?zone=DE"), "upstream_unavailable", backoff)
        check(client.post("/api/v1/optimize", json={**one, "zones": ["FR"]}), "upstream_auth_failed", backoff)
        check(client.get("/api/v1/forecast?zone=ES"), "zone_not_entitled")
        check(client.post("/api/v1/optimize", json={**one, "zones": ["ES"]}), "zone_not_entitled")
        # A zone the provider lists but has no data for: a missing forecast on GET /forecast ...
        check(client.get("/api/v1/forecast?zone=GB"), "forecast_not_found")
        # ... and a zone a workload cannot use on optimize.
        check(client.post("/api/v1/optimize", json={**one, "zones": ["GB"]}), "zone_not_found")
        assert client.get("/api/v1/forecast?zone=PL").status_code == 200


def test_rate_limited_waits_for_its_window(make_app):
    """A 429's Retry-After is computed per answer (the seconds left in a one-minute window)."""
    client = make_app({"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_OPTIMIZE": "1 per minute"}).test_client()
    client.post("/api/v1/optimize", json={"duration": 61, "zones": ["DE"]})
    refused = client.post("/api/v1/optimize", json={"duration": 61, "zones": ["DE"]})
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    driven["rate_limited"] = (429, refused.headers["Retry-After"])


@pytest.mark.parametrize("grace,expected", [(0.2, "1"), (2.6, "3"), (7.4, "7")])
def test_health_waits_its_grace(client, grace, expected):
    """/health's 503 is service_unavailable with the worker's grace (rounded, at least 1 s) as
    its delay, computed per answer: not the code's own."""
    load = ThreadLoad(threads=2, busy=2, saturated_since=0.0, clock=lambda: 100.0, grace=grace)
    answer = client.get("/health", environ_overrides={ENVIRON_KEY: load})
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "service_unavailable"
    assert answer.headers["Retry-After"] == expected


# -- the Gunicorn worker's own answers -------------------------------------------------------------

@pytest.mark.parametrize("status,code", [
    (400, "invalid_request"), (403, "forbidden"), (408, "request_timeout"), (414, "uri_too_long"),
    (417, "expectation_failed"), (431, "headers_too_large"), (500, "internal_error"),
    (501, "not_implemented")])
def test_gunicorn_refusals(status, code):
    head, _, body = json_error_response(status).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {EXPECTED[code][0]} ")
    assert json.loads(body)["error"]["code"] == code
    assert f"Content-Length: {len(body)}" in lines and not any(line.startswith("Retry-After") for line in lines)
    driven[code] = (EXPECTED[code][0], None)


# -- every code through the writer -----------------------------------------------------------------

@pytest.mark.parametrize("backoff", [0, 1, 17, 30])
@pytest.mark.parametrize("code", list(FailureCode))
def test_the_writer_gives_each_code_its_status_and_delay(code, backoff):
    answer = ErrorWriter(upstream_backoff_seconds=backoff).answer(
        code, "what went wrong", [{"field": "zones[1]", "message": "why"}], headers=[("Allow", "GET")])
    assert answer.status == EXPECTED[code.value][0]
    assert dict(answer.headers).get("Retry-After") == delay(code.value, backoff)
    assert dict(answer.headers)["Allow"] == "GET"
    assert answer.body == ('{"error":{"code":"%s","message":"what went wrong",'
                           '"details":[{"field":"zones[1]","message":"why"}]}}' % code.value).encode()


@pytest.mark.parametrize("override,expected", [(0, "1"), (1, "1"), (43, "43")])
def test_an_override_is_the_delay_whatever_the_code(override, expected):
    for code in FailureCode:
        answer = ErrorWriter(upstream_backoff_seconds=17).answer(code, "m", retry_after=override)
        assert answer.status == EXPECTED[code.value][0]
        assert dict(answer.headers)["Retry-After"] == expected


def test_retry_after_is_the_writers_alone():
    with pytest.raises(ValueError):
        ErrorWriter().answer(FailureCode.RATE_LIMITED, "m", headers=[("retry-after", "3")])


def test_raised_errors_carry_their_code():
    assert RequestError(FailureCode.DEADLINE_EXCEEDED, "m").code.status == 503
    assert UnknownLocation("eu-west-1", "m").code is FailureCode.ZONE_NOT_FOUND


@pytest.mark.last_in_module
def test_every_code_a_request_can_reach_was_driven_with_its_own_status_and_delay():
    """Run after the tests above (one file runs in one process): each of DRIVEN was answered by
    a request, with its own status (the tests above checked each answer's Retry-After)."""
    if not DRIVING_TESTS <= _ran:
        pytest.skip("only part of this module ran")
    assert set(driven) == DRIVEN
    for code, (status, _) in driven.items():
        assert status == EXPECTED[code][0]


_ran: set[str] = set()
DRIVING_TESTS = {"test_request_failures", "test_a_body_not_received_in_time_is_408", "test_who_may_call",
                 "test_scheduling_failures", "test_a_busy_worker_and_an_unexpected_error",
                 "test_the_providers_failures", "test_rate_limited_waits_for_its_window",
                 "test_gunicorn_refusals"}


@pytest.fixture(autouse=True)
def _note(request):
    yield
    _ran.add(request.node.originalname)


# -- only the writer writes ----------------------------------------------------------------------------

def _sources(*roots: str):
    for root in roots:
        path = REPO / root
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


def _string(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def test_no_module_but_the_writer_builds_an_error_body_or_a_retry_after():
    """No dict keyed "error", no '{"error"' text, no Retry-After header set (a dict key, a
    (name, value) pair, an assignment to headers["Retry-After"]) anywhere in the package but
    errors.py. (CORS naming Retry-After among the headers a browser may read is no answer.)"""
    found = []
    for path in _sources("carbon_optimizer", "app.py"):
        if path == REPO / "carbon_optimizer" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Dict) and any(_string(k) in ("error", "Retry-After") for k in node.keys if k):
                found.append(where)
            elif isinstance(node, ast.Tuple) and node.elts and _string(node.elts[0]) == "Retry-After":
                found.append(where)
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) \
                    and _string(node.slice) == "Retry-After":
                found.append(where)
            elif '{"error"' in (_string(node) or "").replace(" ", ""):
                found.append(where)
    assert not found, found


def test_every_error_name_is_imported_from_errors_only():
    names = {name for name, value in vars(errors).items()
             if isinstance(value, type) and value.__module__ == errors.__name__}
    found = []
    for path in _sources("carbon_optimizer", "tests", "bench", "tools", "scripts", "app.py", "engine.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module != "carbon_optimizer.errors":
                found += [f"{path.relative_to(REPO)}: {alias.name} from {node.module}"
                          for alias in node.names if alias.name in names]
    assert not found, found
