"""The public-API protections: client API keys (no bypass), /metrics access, docs access, rate limits
(shared across Gunicorn workers through real Redis, keyed by key or by the client IP behind trusted
proxies, in-memory fallback when Redis is down), CORS, headers and debug mode. Every test's own logs,
answers and Gunicorn logs are scanned for the fake secret values when it ends; the last tests run
every way a secret meets the service and scan that."""

from __future__ import annotations

import json
import logging
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from carbon_optimizer.web import routes as web_routes
from carbon_optimizer.web.app import create_app
from carbon_optimizer.secret_store import RefreshingSecretStore, Secrets, SecretStore
from carbon_optimizer.web.auth import matches_any
from carbon_optimizer.settings import load_settings
from tests import leak_guard
from tests.leak_guard import secret
from devkit.ports import free_port
from devkit.service_process import GunicornProcess
from tests.support import LIMIT_REDIS

KEY_1 = secret("FAKE-api-key-one-4f9c21")
KEY_2 = secret("FAKE-api-key-two-b83e07")
METRICS_TOKEN = secret("FAKE-metrics-token-77d1")
BODY = {"duration": "PT1H", "zones": ["DE"], "max_delay": "PT6H"}


def build(env: dict | None = None, store=None, **kwargs):
    env = {"CARBON_PROVIDER": "demo", **(env or {})}
    return create_app(settings=load_settings(env), secret_store=store or SecretStore(env), **kwargs)


def keyed(**extra):
    return build({"API_KEYS": f"{KEY_1},{KEY_2}", **extra}).test_client()


@pytest.fixture(autouse=True)
def leak_scan():
    """What this test logs and records (answers, Gunicorn logs) holds no secret value."""
    with leak_guard.Scan() as scan:
        yield scan
    scan.assert_clean()


def get(client, path: str, **kwargs):
    answer = client.get(path, **kwargs)
    leak_guard.record(answer)
    return answer


# -- inbound authentication -----------------------------------------------------------------------

def test_no_keys_configured_means_an_open_api_as_in_demo_mode():
    client = build().test_client()
    assert get(client, "/api/v1/forecast?zone=DE").status_code == 200
    assert client.post("/api/v1/optimize", json=BODY).status_code == 200


@pytest.mark.parametrize("headers", [
    {}, {"X-API-Key": ""}, {"X-API-Key": "   "}, {"X-API-Key": "wrong"},
    {"X-API-Key": KEY_1.lower()}, {"X-API-Key": KEY_1[:-1]}, {"X-API-Key": KEY_1 + "x"},
    {"X-API-Key": f"{KEY_1},{KEY_2}"}, {"X-API-Key": f"{KEY_1} {KEY_2}"}, {"X-API-Key": f"{KEY_1}\x00"},
    {"X-API-Key": "FAKE-api-key-"}, {"Authorization": f"Bearer {KEY_1}"}, {"X-API-Keys": KEY_1},
    {"API-Key": KEY_1}, {"X-API-Key-": KEY_1},
])
def test_missing_or_wrong_key_is_401_with_one_answer_for_all(headers):
    client = keyed()
    for method, path in (("get", "/api/v1/forecast?zone=DE"), ("post", "/api/v1/optimize"),
                         ("get", "/api/v1/no-such-endpoint"), ("delete", "/api/v1/optimize")):
        answer = getattr(client, method)(path, headers=headers, json=BODY if method == "post" else None)
        leak_guard.record(answer)
        assert answer.status_code == 401, (headers, path)
        assert answer.json == {"error": {"code": "unauthorized", "message":
                                         "missing or invalid API key; send it in the X-API-Key header"}}
        assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("name", ["X-API-Key", "x-api-key", "X-API-KEY", "x-Api-kEY"])
def test_header_name_is_case_insensitive_and_every_configured_key_works(name):
    client = keyed()
    for key in (KEY_1, KEY_2, f"  {KEY_1}\t"):  # blanks around a field value are not part of it
        assert get(client, "/api/v1/forecast?zone=DE", headers={name: key}).status_code == 200
    assert client.post("/api/v1/optimize", json=BODY, headers={name: KEY_2}).status_code == 200


@pytest.mark.parametrize("path", ["//api/v1/forecast?zone=DE", "/api//v1/forecast?zone=DE",
                                  "/api/v1/forecast/?zone=DE", "/./api/v1/forecast?zone=DE",
                                  "/api/v1/../v1/forecast?zone=DE", "/API/v1/forecast?zone=DE",
                                  "/api/v1/%66orecast?zone=DE", "/api/v1/forecast;x?zone=DE"])
def test_path_spellings_do_not_reach_an_api_route_without_a_key(path):
    assert get(keyed(), path).status_code in (401, 404)


def test_health_is_open_and_docs_and_metrics_follow_their_settings():
    client = keyed()
    assert get(client, "/health").status_code == 200
    assert get(client, "/docs").status_code == 200
    assert get(client, "/api/v1/openapi.json").status_code == 200
    assert get(client, "/metrics").status_code == 200
    private = keyed(DOCS_ACCESS="api_key")
    assert get(private, "/docs").status_code == 401
    assert get(private, "/api/v1/openapi.json").status_code == 401
    assert get(private, "/api/v1/openapi.json", headers={"X-API-Key": KEY_1}).status_code == 200
    hidden = keyed(DOCS_ACCESS="disabled")
    assert get(hidden, "/docs").status_code == 404
    assert get(hidden, "/api/v1/openapi.json", headers={"X-API-Key": KEY_1}).status_code == 404


def test_a_key_removed_by_rotation_stops_working_at_once():
    slots = {"keys": (KEY_1, KEY_2)}
    store = RefreshingSecretStore(lambda: Secrets(None, slots["keys"]), "test", 0, start_thread=False)
    client = build(store=store).test_client()
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": KEY_1}).status_code == 200
    slots["keys"] = (KEY_2,)
    assert store.refresh()
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": KEY_1}).status_code == 401
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": KEY_2}).status_code == 200


def test_a_key_added_by_rotation_works_at_once_and_many_keys_each_match():
    """The keys' digests are kept per key list: a refresh that brings a new list is honoured on
    the next request, and every key of a long list is told apart (not only the first)."""
    others = tuple(f"other-client-key-{i:03d}-0123456789abcdef" for i in range(40))
    slots = {"keys": others}
    store = RefreshingSecretStore(lambda: Secrets(None, slots["keys"]), "test", 0, start_thread=False)
    client = build(store=store).test_client()
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": KEY_1}).status_code == 401
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": others[-1]}).status_code == 200
    slots["keys"] = others[:20] + (KEY_1,) + others[20:]
    assert store.refresh()
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": KEY_1}).status_code == 200
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": KEY_1 + "x"}).status_code == 401
    slots["keys"] = others[:5]
    assert store.refresh()
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": others[4]}).status_code == 200
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": others[5]}).status_code == 401
    assert get(client, "/api/v1/forecast?zone=DE", headers={"X-API-Key": KEY_1}).status_code == 401


def test_constant_time_comparison_checks_every_key():
    assert matches_any(KEY_2, [KEY_1, KEY_2]) and matches_any(KEY_1, [KEY_1, KEY_2])
    assert not matches_any("", [KEY_1]) and not matches_any(None, [KEY_1]) and not matches_any(KEY_1, [])


def test_metrics_bearer_token_and_network_allowlist():
    client = build({"METRICS_TOKEN": METRICS_TOKEN, "METRICS_ALLOW_CIDRS": "10.0.0.0/8, ::1/128"}).test_client()
    inside = {"REMOTE_ADDR": "10.1.2.3"}
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert get(client, "/metrics", headers=bearer, environ_base=inside).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN},
                    {"Authorization": f"Basic {METRICS_TOKEN}"}):
        answer = get(client, "/metrics", headers=headers, environ_base=inside)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    outside = get(client, "/metrics", headers=bearer, environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert outside.status_code == 403 and outside.json["error"]["code"] == "forbidden"
    assert get(client, "/health", environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 200


# -- rate limits ----------------------------------------------------------------------------------

def test_429_is_the_json_envelope_with_retry_after_and_ratelimit_headers():
    client = build({"RATE_LIMIT_OPTIMIZE": "2 per minute"}).test_client()
    answers = [client.post("/api/v1/optimize", json=BODY) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[-1]
    leak_guard.record(refused)
    assert refused.json["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Limit"] == "2" and refused.headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Reset" in refused.headers
    assert answers[0].headers["X-RateLimit-Remaining"] == "1"
    # Only POST /optimize has that limit; health and metrics have none at all.
    assert client.get("/api/v1/forecast?zone=DE").status_code == 200
    for _ in range(5):
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
    assert "X-RateLimit-Limit" not in client.get("/health").headers


def test_each_app_keeps_its_own_limits_when_several_are_built_in_one_process():
    # flask-limiter keeps storage and the enabled switch on its Limiter: one shared by apps would
    # let the last app built (here, one with limits off) decide for all of them.
    two = build({"RATE_LIMIT_OPTIMIZE": "2 per minute"}).test_client()
    off = build({"RATE_LIMIT_ENABLED": "false", "RATE_LIMIT_OPTIMIZE": "1 per minute"}).test_client()
    one = build({"RATE_LIMIT_OPTIMIZE": "1 per minute"}).test_client()
    assert [two.post("/api/v1/optimize", json=BODY).status_code for _ in range(3)] == [200, 200, 429]
    assert [off.post("/api/v1/optimize", json=BODY).status_code for _ in range(3)] == [200, 200, 200]
    assert [one.post("/api/v1/optimize", json=BODY).status_code for _ in range(2)] == [200, 429]
    assert get(off, "/health").json["checks"]["rate_limit"] == {"status": "disabled"}


def test_the_optimize_limit_is_declared_on_the_view_so_a_renamed_route_keeps_it():
    app = build({"RATE_LIMIT_OPTIMIZE": "2 per minute"})
    # The view function as its module defines it, under another endpoint name and path: as after
    # renaming the route, nothing refers to "api.optimize".
    app.add_url_rule("/api/v1/plan", endpoint="api.plan", view_func=web_routes.optimize, methods=["POST"])
    client = app.test_client()
    answers = [client.post("/api/v1/plan", json=BODY) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "2"


def test_default_limit_is_one_budget_per_client_across_routes_and_keyed_by_api_key():
    client = build({"API_KEYS": f"{KEY_1},{KEY_2}", "RATE_LIMIT_DEFAULT": "3 per hour",
                    "RATE_LIMIT_OPTIMIZE": "2 per minute"}).test_client()
    one, two = {"X-API-Key": KEY_1}, {"X-API-Key": KEY_2}
    assert client.get("/api/v1/forecast?zone=DE", headers=one).status_code == 200
    # POST /optimize has a budget of its own and spends only that one, not the default.
    assert client.post("/api/v1/optimize", json=BODY, headers=one).status_code == 200
    # The OpenAPI document is a fixed document, not an API call: it spends nothing.
    assert client.get("/api/v1/openapi.json", headers=one).status_code == 200
    assert [client.get("/api/v1/forecast?zone=DE", headers=one).status_code for _ in range(3)] == [200, 200, 429]
    # The default budget spent does not refuse optimize, whose own budget has 1 of 2 left.
    assert [client.post("/api/v1/optimize", json=BODY, headers=one).status_code for _ in range(2)] == [200, 429]
    assert client.get("/api/v1/forecast?zone=DE", headers=two).status_code == 200  # its own budget
    # Key guessing from one address is limited too (wrong keys count against the address).
    statuses = [client.get("/api/v1/forecast?zone=DE", headers={"X-API-Key": f"guess-{i}"}).status_code
                for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    # ... also at POST /optimize, against its own budget: the limit is checked before the key.
    guesses = [client.post("/api/v1/optimize", json=BODY, headers={"X-API-Key": f"guess-{i}"}).status_code
               for i in range(4)]
    assert guesses == [401, 401, 429, 429]


@pytest.mark.parametrize("method, path", [("GET", "/api/v1/nope"), ("DELETE", "/api/v1/optimize"),
                                          ("POST", "/api/v1/forecast")])
def test_key_guessing_at_paths_flask_cannot_route_is_limited_too(method, path):
    # A 404 or 405 has no endpoint; the key check still answers it (401 for a wrong key, 404/405
    # for a right one), so without a limit such a path would tell a guesser which key is right.
    client = build({"API_KEYS": KEY_1, "RATE_LIMIT_DEFAULT": "2 per hour"}).test_client()
    statuses = [client.open(path, method=method, headers={"X-API-Key": f"guess-{i}"}).status_code
                for i in range(4)]
    assert statuses == [401, 401, 429, 429]
    # The address's shared budget is the one spent: a wrong key at a routed path is refused too,
    # while the right key (a budget of its own) gets the path's real answer.
    assert client.get("/api/v1/forecast?zone=DE", headers={"X-API-Key": "guess-9"}).status_code == 429
    assert client.open(path, method=method, headers={"X-API-Key": KEY_1}).status_code in (404, 405)


def test_client_ip_comes_from_the_trusted_proxy_hop_so_x_forwarded_for_cannot_be_spoofed():
    client = build({"TRUSTED_PROXY_COUNT": "1", "TRUSTED_PROXY_CIDRS": "10.0.0.0/24",
                    "RATE_LIMIT_DEFAULT": "2 per hour"}).test_client()
    alb = {"REMOTE_ADDR": "10.0.0.2"}

    def ask(forwarded: str) -> int:
        return client.get("/api/v1/forecast?zone=DE", headers={"X-Forwarded-For": forwarded},
                          environ_base=alb).status_code
    # The client wrote a different left part each time; the ALB appended its real address.
    assert [ask(f"198.51.100.{i}, 203.0.113.7") for i in range(3)] == [200, 200, 429]
    assert ask("203.0.113.8") == 200  # another real client has its own budget
    # Without a trusted proxy the header is ignored: all of it is one client, the peer address.
    direct = build({"RATE_LIMIT_DEFAULT": "1 per hour"}).test_client()
    assert direct.get("/api/v1/forecast?zone=DE", headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 200
    assert direct.get("/api/v1/forecast?zone=DE", headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 429


def test_redis_down_falls_back_to_in_process_limits_and_health_says_so(limit_prefix):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = build({"REDIS_URL": dead, "CACHE_KEY_PREFIX": limit_prefix,
                    "RATE_LIMIT_OPTIMIZE": "2 per minute"}).test_client()
    assert [client.post("/api/v1/optimize", json=BODY).status_code for _ in range(3)] == [200, 200, 429]
    health = get(client, "/health").json
    assert health["status"] == "degraded"
    assert health["checks"]["rate_limit"]["status"] == "fallback"


def test_rate_limit_state_lives_in_redis_under_the_cache_prefix_without_key_material(limit_prefix):
    client = build({"REDIS_URL": LIMIT_REDIS, "CACHE_KEY_PREFIX": limit_prefix,
                    "API_KEYS": KEY_1}).test_client()
    assert client.post("/api/v1/optimize", json=BODY, headers={"X-API-Key": KEY_1}).status_code == 200
    assert get(client, "/health").json["checks"]["rate_limit"] == {"status": "ok", "storage": "redis"}
    keys = [k.decode() for k in redis.Redis.from_url(LIMIT_REDIS).scan_iter(match=f"*{limit_prefix}*")]
    assert keys and not any(KEY_1 in k for k in keys), keys
    leak_guard.record_text(" ".join(keys))


@pytest.mark.slow
def test_limit_of_n_per_minute_admits_exactly_n_across_gunicorn_workers(limit_prefix, tmp_path):
    n, attempts = 7, 24
    env = {"CARBON_PROVIDER": "demo", "REDIS_URL": LIMIT_REDIS, "CACHE_KEY_PREFIX": limit_prefix,
           "RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_OPTIMIZE": f"{n} per minute",
           "RATE_LIMIT_DEFAULT": "1000 per hour", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    log = tmp_path / "gunicorn.log"
    leak_guard.record_file(log)
    with GunicornProcess(env, workers=3, threads=4, log_path=log) as service:
        assert len(service.worker_pids()) == 3

        def post(_):
            # A new connection each time, so that the requests spread over the workers.
            with requests.Session() as session:
                return session.post(f"{service.url}/api/v1/optimize", json=BODY, timeout=30)
        # The window opens with the first hit of this test's own prefix (web/limits.py), so the
        # burst is in one window whenever it starts (it takes a few seconds of the minute).
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(post, range(attempts)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * n + [429] * (attempts - n)
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["X-RateLimit-Limit"] == str(n)
        metrics_text = requests.get(f"{service.url}/metrics", timeout=10).text
        assert f"carbon_rate_limited_total {float(attempts - n)}" in metrics_text
        for _ in range(10):
            assert requests.get(f"{service.url}/health", timeout=10).status_code == 200


# -- auth over real HTTP: header spellings a WSGI test client cannot send -------------------------

def raw_request(url: str, header_lines: list[str]) -> int:
    host, port = url.removeprefix("http://").split(":")
    request = "\r\n".join(["GET /api/v1/forecast?zone=DE HTTP/1.1", f"Host: {host}", "Connection: close",
                           *header_lines, "", ""]).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    leak_guard.record_text(data.decode("utf-8", "replace"))
    return int(data.split(b" ", 2)[1])


@pytest.mark.slow
def test_auth_cannot_be_bypassed_over_http(tmp_path):
    log = tmp_path / "gunicorn.log"
    leak_guard.record_file(log)
    env = {"CARBON_PROVIDER": "demo", "API_KEYS": f"{KEY_1},{KEY_2}",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    leak_guard.record_file(tmp_path / "metrics")
    with GunicornProcess(env, workers=2, log_path=log) as service:
        for lines in ([f"x-api-key: {KEY_1}"], [f"X-API-KEY: {KEY_2}"], [f"X-Api-Key:   {KEY_1}  "]):
            assert raw_request(service.url, lines) == 200, lines
        for lines in ([], ["X-API-Key: "], ["X-API-Key: nope"], [f"X_API_KEY: {KEY_1}"],
                      [f"X-Api-Key : {KEY_1}"], [f"X-API-Key\t: {KEY_1}"], [f" X-API-Key: {KEY_1}"],
                      [f"X-API-Key: {KEY_1}", "X-API-Key: nope"], [f"X-API-Key: nope", f"X-API-Key: {KEY_1}"],
                      [f"X-API-Key: {KEY_1[:10]}", f"X-API-Key: {KEY_1[10:]}"], [f"X-API-Key: {KEY_1}x"]):
            status = raw_request(service.url, lines)
            assert status in (400, 401), (lines, status)
        assert raw_request(service.url, []) == 401
        assert requests.get(f"{service.url}/health", timeout=10).status_code == 200
        health = requests.get(f"{service.url}/health", timeout=10)
        leak_guard.record(health)
        assert health.json()["checks"]["secrets"] == {"backend": "env", "status": "ok"}
        leak_guard.record(requests.get(f"{service.url}/metrics", timeout=10))


# -- CORS, headers, debug -------------------------------------------------------------------------

def test_cors_is_off_by_default_and_limited_to_configured_origins():
    assert "Access-Control-Allow-Origin" not in build().test_client().get(
        "/api/v1/forecast?zone=DE", headers={"Origin": "https://evil.example"}).headers
    client = keyed(CORS_ORIGINS="https://ci.example.com")
    allowed = client.get("/api/v1/forecast?zone=DE", headers={"Origin": "https://ci.example.com",
                                                              "X-API-Key": KEY_1})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ci.example.com"
    other = client.get("/api/v1/forecast?zone=DE", headers={"Origin": "https://evil.example", "X-API-Key": KEY_1})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options("/api/v1/optimize", headers={
        "Origin": "https://ci.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key"})
    assert preflight.status_code == 200  # a preflight carries no key and must not be refused
    assert "x-api-key" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Origin" not in client.get(
        "/health", headers={"Origin": "https://ci.example.com"}).headers


def test_security_headers_body_limit_and_no_debug_outside_development(monkeypatch):
    client = build().test_client()
    answer = client.get("/api/v1/forecast?zone=DE")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    too_big = build({"MAX_BODY_BYTES": "2048"}).test_client().post(
        "/api/v1/optimize", data=json.dumps({"id": "x" * 4096}), content_type="application/json")
    assert too_big.status_code == 413
    monkeypatch.setenv("FLASK_DEBUG", "1")  # how debug mode is asked for (`flask --debug` sets it)
    assert build().debug is False
    assert build({"ENVIRONMENT": "development"}).debug is True


# -- last: nothing leaked -------------------------------------------------------------------------

def test_no_secret_value_appears_in_any_log_answer_health_or_metric(limit_prefix):
    """Every way this file's secrets meet the service in-process, run here and scanned here: keys
    right, wrong, partial and misplaced; docs, health and metrics with and without the token; a
    rate limit keyed by API key in Redis and its fallback; a rotation; a refresh that fails with a
    secret in its exception. (Each Gunicorn test scans its own log and answers.)"""
    with leak_guard.Scan() as scan:
        env = {"API_KEYS": f"{KEY_1},{KEY_2}", "METRICS_TOKEN": METRICS_TOKEN, "DOCS_ACCESS": "api_key",
               "REDIS_URL": LIMIT_REDIS, "CACHE_KEY_PREFIX": limit_prefix, "RATE_LIMIT_DEFAULT": "7 per hour",
               "RATE_LIMIT_OPTIMIZE": "2 per minute", "CORS_ORIGINS": "https://ci.example.com"}
        client = build(env).test_client()
        right = [{"X-API-Key": KEY_1}, {"x-api-key": f" {KEY_2}\t"}]
        wrong = [{}, {"X-API-Key": KEY_1[:-1]}, {"X-API-Key": KEY_1 + "x"}, {"X-API-Key": f"{KEY_1},{KEY_2}"},
                 {"Authorization": f"Bearer {KEY_1}"}, {"X-API-Key": METRICS_TOKEN}]
        for headers in right + wrong:  # each key's budget runs out on the way: 429s too
            for body in (BODY, {"workloads": [BODY, BODY]}, {"duration": 0}):
                leak_guard.record(client.post("/api/v1/optimize", json=body, headers=headers))
            for path in ("/api/v1/forecast?zone=DE", "/api/v1/openapi.json", "/docs", "/api/v1/nothing",
                         "/api/v1/forecast?zone=de"):
                get(client, path, headers={**headers, "Origin": "https://ci.example.com"})
        for headers in ({"Authorization": f"Bearer {METRICS_TOKEN}"}, {"Authorization": METRICS_TOKEN},
                        {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"}, {"X-API-Key": KEY_1}):
            get(client, "/metrics", headers=headers)
            get(client, "/metrics", headers=headers, environ_base={"REMOTE_ADDR": "192.0.2.9"})
        get(client, "/health")
        store = redis.Redis.from_url(LIMIT_REDIS)
        leak_guard.record_text(" ".join(k.decode() for k in store.scan_iter(match=f"*{limit_prefix}*")))
        # Redis down: the in-process limiter, keyed the same way.
        fallback = build({**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}).test_client()
        for key in (KEY_1, KEY_2, "guess"):
            for _ in range(3):
                leak_guard.record(fallback.post("/api/v1/optimize", json=BODY, headers={"X-API-Key": key}))
        get(fallback, "/health")
        # Rotation, then a refresh whose exception carries a secret: logged, kept out of every output.
        slots = {"keys": (KEY_1, KEY_2)}

        def fetch():
            if slots["keys"] is None:
                raise RuntimeError(f"backend said: {KEY_2}")
            return Secrets(None, slots["keys"])
        rotating = RefreshingSecretStore(fetch, "test", 0, start_thread=False)
        rotated = build(store=rotating).test_client()
        slots["keys"] = (KEY_2,)
        assert rotating.refresh()
        slots["keys"] = None
        assert not rotating.refresh()
        for key in (KEY_1, KEY_2):
            get(rotated, "/api/v1/forecast?zone=DE", headers={"X-API-Key": key})
        get(rotated, "/health")
        leak_guard.record_text(repr(load_settings(env)) + repr(SecretStore(env).current()) + json.dumps(rotating.status()))
    assert scan.assert_clean() > 100
    # The scan did see the logs: the failed refresh was logged, the rotation too.
    assert any("secret refresh failed" in text for text in scan.texts)
    assert any("secrets changed on refresh" in text for text in scan.texts)


def test_the_scan_finds_a_secret_in_a_log_record_an_answer_or_a_file(tmp_path, leak_scan):
    leaked_log = tmp_path / "gunicorn.log"
    leaked_log.write_text(f"worker booted with {KEY_2}\n")
    clean = build().test_client().get("/health")
    for leak in (lambda: logging.getLogger("carbon_optimizer.web").info("key %s", KEY_1),
                 lambda: logging.getLogger("botocore").warning(METRICS_TOKEN),
                 lambda: leak_guard.record_text(f"200 {{'X-Echo': '{KEY_1}'}} "),
                 lambda: leak_guard.record_file(leaked_log)):
        with leak_guard.Scan() as scan:
            leak_guard.record(clean)
            leak()
        with pytest.raises(AssertionError, match="a secret value appears"):
            scan.assert_clean()
    # Planted on purpose: not a leak for this test's own scan.
    leak_scan.texts.clear()
    leak_scan.files.clear()
