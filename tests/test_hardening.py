"""Issue 11, the request-level defects: X-Forwarded-For believed only from the proxies named in
TRUSTED_PROXY_CIDRS, a chunked body over MAX_BODY_BYTES refused with 413, refused (429) requests not
charged to the client's budgets, and the limiter failing open (counted, logged) when Redis stops
answering in the middle of requests."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from werkzeug.test import EnvironBuilder, run_wsgi_app

from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.errors import ConfigError
from carbon_optimizer.settings import load_settings
from carbon_optimizer.web.app import create_app
from devkit.ports import free_port
from devkit.redis_server import start_redis
from devkit.service_process import GunicornProcess
from devkit.waiting import HANG
from tests.support import LIMIT_REDIS

BODY = {"duration": "PT1H", "zones": ["DE"], "max_delay": "PT6H"}


def build(env: dict | None = None):
    env = {"CARBON_PROVIDER": "demo", **(env or {})}
    return create_app(settings=load_settings(env), secret_store=SecretStore(env))


# -- 1. X-Forwarded-For only from the named proxies ------------------------------------------------

def forecast(client, peer: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return client.get("/api/v1/forecast?zone=DE", headers=headers,
                      environ_base={"REMOTE_ADDR": peer}).status_code


def test_a_peer_outside_the_trusted_proxies_cannot_choose_its_address_with_x_forwarded_for():
    client = build({"TRUSTED_PROXY_COUNT": "1", "TRUSTED_PROXY_CIDRS": "10.0.0.0/24",
                    "RATE_LIMIT_DEFAULT": "2 per hour"}).test_client()
    # Straight to the port: a new forged address each time is still one client, the peer.
    assert [forecast(client, "203.0.113.50", f"198.51.100.{i}") for i in range(3)] == [200, 200, 429]
    # Through the ALB (inside the network): the address the ALB appended is the client.
    assert [forecast(client, "10.0.0.2", f"1.2.3.{i}, 198.51.100.9") for i in range(3)] == [200, 200, 429]
    assert forecast(client, "10.0.0.2", "198.51.100.10") == 200     # another client, its own budget
    assert forecast(client, "10.0.0.2") == 200                      # no header: the peer itself
    assert forecast(client, "10.0.0.2", "not-an-address") == 200    # garbage: the peer, not a crash


def test_metrics_allowlist_believes_x_forwarded_for_only_from_a_trusted_proxy():
    client = build({"TRUSTED_PROXY_COUNT": "1", "TRUSTED_PROXY_CIDRS": "10.0.0.0/24",
                    "METRICS_ALLOW_CIDRS": "10.9.0.0/16"}).test_client()

    def metrics(peer: str, forwarded: str) -> int:
        return client.get("/metrics", headers={"X-Forwarded-For": forwarded},
                          environ_base={"REMOTE_ADDR": peer}).status_code
    assert metrics("203.0.113.50", "10.9.0.7") == 403      # forged by an outsider
    assert metrics("10.0.0.2", "10.9.0.7") == 200          # written by the proxy
    assert metrics("10.0.0.2", "10.9.0.7, 203.0.113.50") == 403


def test_two_proxies_each_hop_must_be_trusted():
    # CDN -> ALB -> app: two hops, both networks named. A client reaching the ALB directly (not
    # through the CDN) cannot pass its forged entry off as the CDN's.
    client = build({"TRUSTED_PROXY_COUNT": "2", "TRUSTED_PROXY_CIDRS": "10.0.0.0/24, 192.0.2.0/24",
                    "RATE_LIMIT_DEFAULT": "1 per hour"}).test_client()
    assert forecast(client, "10.0.0.2", "198.51.100.1, 192.0.2.9") == 200       # client via CDN
    assert forecast(client, "10.0.0.2", "198.51.100.1, 192.0.2.9") == 429
    assert forecast(client, "10.0.0.2", "198.51.100.1, 203.0.113.66") == 200    # direct to ALB
    assert forecast(client, "10.0.0.2", "198.51.100.2, 203.0.113.66") == 429    # same client


@pytest.mark.parametrize("env", [{"TRUSTED_PROXY_COUNT": "1"}, {"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"}])
def test_the_proxy_count_and_networks_are_refused_one_without_the_other(env):
    with pytest.raises(ConfigError) as caught:
        load_settings({"CARBON_PROVIDER": "demo", **env})
    assert "TRUSTED_PROXY_COUNT" in str(caught.value) and "TRUSTED_PROXY_CIDRS" in str(caught.value)


def test_trusted_proxy_networks_are_validated():
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_CIDRS"):
        load_settings({"TRUSTED_PROXY_COUNT": "1", "TRUSTED_PROXY_CIDRS": "10.0.0.0/8, alb"})
    assert load_settings({"TRUSTED_PROXY_COUNT": "1", "TRUSTED_PROXY_CIDRS": " 10.0.0.0/8 ,fd00::/8"}) \
        .trusted_proxy_cidrs == ["10.0.0.0/8", "fd00::/8"]


# -- 2. a chunked body over MAX_BODY_BYTES is 413 --------------------------------------------------

def padded(size: int) -> bytes:
    """A valid optimize body of exactly `size` bytes: cut anywhere in the padding, still valid."""
    body = json.dumps(BODY).encode()
    return body + b" " * (size - len(body))


def test_a_chunked_body_over_the_limit_is_413_in_process():
    app = build({"MAX_BODY_BYTES": "2048"})

    def post(body: bytes) -> tuple[int, dict]:
        # No Content-Length, a stream the server has de-chunked (what Gunicorn hands over). The
        # test client would add a Content-Length, so the app is called as a WSGI app.
        environ = EnvironBuilder("/api/v1/optimize", method="POST", input_stream=io.BytesIO(body),
                                 content_type="application/json").get_environ()
        del environ["CONTENT_LENGTH"]
        environ["wsgi.input_terminated"] = True
        app_iter, status, _ = run_wsgi_app(app, environ, buffered=True)
        return int(status.split()[0]), json.loads(b"".join(app_iter))
    assert post(padded(2049)) == (413, {"error": {"code": "payload_too_large",
                                                  "message": "request body larger than 2048 bytes"}})
    assert post(padded(8192))[0] == 413
    assert post(padded(2048))[0] == 200   # exactly the limit is fine
    assert post(padded(100))[0] == 200


def test_a_chunked_body_that_cannot_be_read_is_a_400_not_a_500():
    class Broken(io.RawIOBase):
        def read(self, size=-1):
            raise OSError("malformed chunk")
    environ = EnvironBuilder("/api/v1/optimize", method="POST", content_type="application/json").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": Broken(), "wsgi.input_terminated": True})
    app_iter, status, _ = run_wsgi_app(build(), environ, buffered=True)
    assert status.startswith("400") and json.loads(b"".join(app_iter))["error"]["code"]


def raw_chunked_post(url: str, body: bytes, chunk: int = 1000) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    head = "\r\n".join(["POST /api/v1/optimize HTTP/1.1", f"Host: {host}", "Connection: close",
                        "Content-Type: application/json", "Transfer-Encoding: chunked", "", ""]).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + chunk]), body[i:i + chunk])
                      for i in range(0, len(body), chunk))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + chunks + b"0\r\n\r\n")
        data = b""
        try:
            while part := sock.recv(65536):
                data += part
        except ConnectionResetError:  # the server may close before reading what is left
            pass
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.mark.slow
def test_a_chunked_body_over_the_limit_is_413_through_gunicorn(tmp_path):
    env = {"CARBON_PROVIDER": "demo", "MAX_BODY_BYTES": "2048",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with GunicornProcess(env, workers=1, threads=2, log_path=tmp_path / "gunicorn.log") as service:
        status, body = raw_chunked_post(service.url, padded(8192))
        assert status == 413, body
        assert json.loads(body)["error"] == {"code": "payload_too_large",
                                             "message": "request body larger than 2048 bytes"}
        assert raw_chunked_post(service.url, padded(2049), chunk=2049)[0] == 413
        status, body = raw_chunked_post(service.url, padded(2048))
        assert status == 200, body


# -- 3. a refused request spends no other budget ------------------------------------------------

@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_requests_refused_on_one_route_leave_the_other_budget_whole(storage, limit_prefix):
    env = {"RATE_LIMIT_DEFAULT": "5 per hour", "RATE_LIMIT_OPTIMIZE": "2 per minute"}
    if storage == "redis":
        env |= {"REDIS_URL": LIMIT_REDIS, "CACHE_KEY_PREFIX": limit_prefix}
    client = build(env).test_client()
    # Optimize: 2 admitted, then 4 refused by its own limit. Optimize has a budget of its own, so
    # none of the 6 counts against the default budget of 5 (once, all 6 did, and the client was
    # locked out of every route for the hour).
    assert [client.post("/api/v1/optimize", json=BODY).status_code for _ in range(6)] == [200] * 2 + [429] * 4
    answers = [client.get("/api/v1/forecast?zone=DE") for _ in range(7)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0", "0"]
    assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"5"}
    refused = client.post("/api/v1/optimize", json=BODY)
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"
    assert refused.headers["X-RateLimit-Limit"] == "2"


def test_a_refused_request_counts_only_in_the_budget_that_refused_it(limit_prefix):
    client = build({"REDIS_URL": LIMIT_REDIS, "CACHE_KEY_PREFIX": limit_prefix,
                    "RATE_LIMIT_DEFAULT": "3 per hour", "RATE_LIMIT_OPTIMIZE": "1 per minute"}).test_client()
    store = redis.Redis.from_url(LIMIT_REDIS)

    def counters() -> dict[str, int]:
        return {k.decode(): int(store.get(k)) for k in store.scan_iter(match=f"*{limit_prefix}*")}
    assert client.post("/api/v1/optimize", json=BODY).status_code == 200
    [key] = counters()
    first_ttl = store.pttl(key)
    for _ in range(5):
        assert client.post("/api/v1/optimize", json=BODY).status_code == 429
    # One counter, optimize's: the refusals stay in it (it is spent until its window ends anyway)
    # and neither touch the default budget nor push the end of the window back.
    assert counters() == {key: 6}
    assert 0 < store.pttl(key) <= first_ttl <= 60_000


# -- 4. the limiter fails open when Redis stops answering -----------------------------------------

def storage_errors(client) -> float | None:
    text = client.get("/metrics").get_data(as_text=True)
    found = re.search(r"^carbon_rate_limit_storage_errors_total ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_frozen_redis_never_gives_a_500_from_the_limiter(tmp_path, caplog):
    port = free_port()
    server = start_redis(port, tmp_path)
    try:
        app = build({"REDIS_URL": f"redis://127.0.0.1:{port}/0", "API_KEYS": "FAKE-hardening-key",
                     "RATE_LIMIT_DEFAULT": "1000 per hour", "RATE_LIMIT_OPTIMIZE": "1000 per minute"})
        key = {"X-API-Key": "FAKE-hardening-key"}
        assert app.test_client().post("/api/v1/optimize", json=BODY, headers=key).status_code == 200
        before = storage_errors(app.test_client())

        def post(_):
            return app.test_client().post("/api/v1/optimize", json=BODY, headers=key).status_code
        os.kill(server.pid, signal.SIGSTOP)
        # Many requests in flight when Redis stops: each waits for its Redis call to time out, and
        # all but the first find the fallback already switched on (which gave a 500 before). Not a
        # speed target: without socket timeouts each would wait until Redis thaws, which here is
        # never, so the pool's wait (HANG) fails the test instead of hanging the suite.
        pool = ThreadPoolExecutor(max_workers=8)
        try:
            with caplog.at_level(logging.WARNING):
                statuses = list(pool.map(post, range(16), timeout=HANG))
        finally:
            os.kill(server.pid, signal.SIGCONT)  # frees any request a missing timeout still holds
            pool.shutdown()
        assert statuses == [200] * 16
        assert before is not None, "carbon_rate_limit_storage_errors_total is not exported"
        assert storage_errors(app.test_client()) > before
        logged = [r.getMessage() for r in caplog.records if "rate-limit storage" in r.getMessage()]
        assert logged and not any("FAKE-hardening-key" in m or "key:" in m for m in logged), logged
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(timeout=10)
