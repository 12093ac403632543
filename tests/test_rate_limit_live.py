"""Issues 23.8, 23.9 and 24.1 against Gunicorn as a process, with the limiter counting in Redis:
- forwarding headers Gunicorn would honour from a trusted peer (loopback) cannot move the app's
  mount point (SCRIPT_NAME: /health was a 500);
- no Retry-After on a success; while refusing, a whole number of seconds >= 1 that reaches the
  window's end, also in the window's last second (driven by setting the counter's expiry in Redis);
- after Redis stalls (SIGSTOP) and answers again (SIGCONT), requests are counted by Redis again:
  exactly the budget Redis has left is admitted, which Redis's own counter confirms."""

from __future__ import annotations

import math
import signal
import socket
import time

import pytest
import redis
import requests

from carbon_optimizer.web.limits import STORAGE_RECHECK_SECONDS
from devkit.ports import free_port
from devkit.redis_server import start_redis
from devkit.service_process import GunicornProcess
from tests.support import LIMIT_REDIS

WINDOW = 97  # seconds: off the minute grid


def raw_get(port: int, path: str, extra: str = "") -> tuple[int, bytes]:
    """One HTTP/1.1 GET with header lines as written (requests would not send SCRIPT_NAME)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    import uuid
    prefix = f"limit-{uuid.uuid4().hex[:10]}:"
    tmp = tmp_path_factory.mktemp("live")
    env = {"CARBON_PROVIDER": "demo", "REDIS_URL": LIMIT_REDIS, "CACHE_KEY_PREFIX": prefix,
           "RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_DEFAULT": f"3 per {WINDOW} seconds",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics")}
    store = redis.Redis.from_url(LIMIT_REDIS)
    try:
        with GunicornProcess(env, workers=2, threads=2, log_path=tmp / "gunicorn.log") as running:
            yield running, store, prefix
    finally:
        for key in store.scan_iter(match=f"*{prefix}*", count=500):
            store.delete(key)


@pytest.mark.slow
@pytest.mark.parametrize("header", ["SCRIPT_NAME: /health", "SCRIPT_NAME: /static", "PATH_INFO: /health",
                                    "SCRIPT_NAME: /static/page.css", "SCRIPT_NAME: /x\r\nSCRIPT_NAME: /y"])
def test_forwarded_mount_headers_from_a_trusted_peer_are_ignored(service, header):
    running, _, _ = service
    for path in ("/static/page.css", "/"):  # unlimited paths: the budget is not what is tested
        plain = raw_get(running.port, path)
        assert plain[0] == 200
        assert raw_get(running.port, path, header + "\r\n") == plain, (path, header)


@pytest.mark.slow
def test_retry_after_only_when_refusing_and_at_least_one_second_in_the_window_s_last_second(service):
    running, store, prefix = service
    url = f"{running.url}/api/v1/zones"
    answers = [requests.get(url, timeout=30) for _ in range(3)]
    sent = time.time()
    answers.append(requests.get(url, timeout=30))
    answered = time.time()
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert not any("Retry-After" in a.headers for a in answers[:3])
    [key] = [k for k in store.scan_iter(match=f"*{prefix}ratelimit*")]
    refused = answers[3]
    reset = int(refused.headers["X-RateLimit-Reset"])
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW
    # Whole seconds from the answer, made between `sent` and `answered`, to the window's end (in
    # the second before `reset`), rounded up: bracketed by the two instants, not by a time limit.
    assert reset - 1 <= answered + retry_after and sent + retry_after <= reset + 1, \
        (sent, answered, retry_after, reset)

    # The window's last second: the counter is made to end at .95 past the next whole second, and
    # the request sent at that whole second; Retry-After must still be 1 (flask-limiter said 0).
    # A request answered only after the end opens a new window (200): set up again.
    seen = []
    for _ in range(5):
        whole = math.floor(time.time()) + 1
        end = whole + 0.95
        store.set(key, 3, pxat=int(end * 1000))
        time.sleep(max(0.0, whole - time.time()))
        sent = time.time()
        answer = requests.get(url, timeout=30)
        answered = time.time()
        seen.append((answer.status_code, answer.headers.get("Retry-After")))
        if answer.status_code == 429 and answered < end:
            assert answer.headers["Retry-After"] == "1", seen
            assert answer.headers["X-RateLimit-Reset"] == str(whole + 1)
            assert sent + 1 >= end  # sleeping it reaches past the window
            break
        if answered >= end:  # answered after the window's end (a slow machine): try again
            continue
        assert answer.status_code == 200 and "Retry-After" not in answer.headers, seen
    else:
        pytest.fail(f"no request landed in the window's last second: {seen}")


@pytest.mark.slow
def test_after_a_redis_stall_the_limiter_is_back_on_redis_s_counts(tmp_path):
    n, before = 8, 3
    port = free_port()
    server = start_redis(port, tmp_path)
    env = {"CARBON_PROVIDER": "demo", "REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_DEFAULT": f"{n} per 10 minutes",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    private = redis.Redis(port=port, socket_timeout=2)
    try:
        with GunicornProcess(env, workers=2, threads=2, log_path=tmp_path / "gunicorn.log") as running:
            url = f"{running.url}/api/v1/zones"
            ask = lambda: requests.get(url, timeout=30)  # noqa: E731
            assert [ask().status_code for _ in range(before)] == [200] * before
            [key] = list(private.scan_iter(match="*ratelimit*"))
            assert int(private.get(key)) == before
            server.send_signal(signal.SIGSTOP)
            # While Redis hangs: answered (each worker counts on its own), never an error.
            during = [ask() for _ in range(6)]
            assert {a.status_code for a in during} <= {200, 429}
            server.send_signal(signal.SIGCONT)
            # Every check that ran during the stall is older than this: each worker asks Redis
            # again on its next request (a fixed interval, STORAGE_RECHECK_SECONDS, not luck).
            time.sleep(2 * STORAGE_RECHECK_SECONDS)
            # A hit a worker sent as Redis froze timed out (the request was then checked in
            # process) but sat in Redis's socket buffer and ran on SIGCONT: Redis's own count,
            # read here, is the reference (at most one such hit per worker).
            resumed = int(private.get(key))
            after = [ask() for _ in range(n)]
            counted = int(private.get(key))
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait(timeout=5)
    # Independent count: Redis had `resumed`; it admits what is left of n and refuses the rest
    # (flask-limiter kept each worker on its own fresh counts for up to 32 s and let more through).
    assert before <= resumed <= before + 2
    statuses = [a.status_code for a in after]
    assert statuses == [200] * (n - resumed) + [429] * resumed, (resumed, statuses)
    assert counted == resumed + n  # Redis saw every request after the stall, allowed or refused
    assert [a.headers["X-RateLimit-Remaining"] for a in after] == \
        [str(max(0, n - resumed - k)) for k in range(1, n + 1)]
    assert all("Retry-After" not in a.headers for a in after if a.status_code == 200)
    assert all(int(a.headers["Retry-After"]) >= 1 for a in after if a.status_code == 429)
