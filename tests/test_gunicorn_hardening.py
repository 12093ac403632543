"""Gunicorn in front of the world (issue 11): slow clients cannot hold worker threads, and
Gunicorn's own error answers are JSON in the service's envelope. The real service, on loopback
(carbon_optimizer/ops/gunicorn_worker.py, selected by gunicorn.conf.py)."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time

import pytest
import requests

from tests.support import GunicornProcess

READ_TIMEOUT = 2  # seconds (GUNICORN_READ_TIMEOUT)
MARGIN = 2.0      # the worker's loop checks deadlines once a second; loopback scheduling on 2 cores

pytestmark = pytest.mark.slow


def _service(tmp_path, workers: int = 1, threads: int = 4, read_timeout: int = READ_TIMEOUT):
    # One worker: every connection lands on the same worker, as when one gthread worker's loop
    # accepts a burst, the case the outside tester met.
    env = {"CARBON_PROVIDER": "demo", "GUNICORN_READ_TIMEOUT": str(read_timeout),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    return GunicornProcess(env, workers=workers, threads=threads, log_path=tmp_path / "gunicorn.log")


class Slowloris:
    """`count` connections that each send a request line, then one header line every `interval`
    seconds, never finishing the head; a connection the server closes is replaced, until stop().
    Records each connection's lifetime (connect to close by the server) and what it was answered."""

    def __init__(self, port: int, count: int = 8, interval: float = 2.0):
        self.port, self.count, self.interval = port, count, interval
        self.lifetimes: list[float] = []
        self.answers: list[bytes] = []
        self.still_open: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _run(self):
        while not self._stop.is_set():
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            opened = time.monotonic()
            answer = b""
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                n = 0
                while not self._stop.is_set():
                    readable, _, _ = select.select([sock], [], [], self.interval)
                    if readable:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break  # closed by the server
                        answer += chunk
                        continue
                    n += 1
                    sock.sendall(b"X-Slow-%d: %s\r\n" % (n, b"a" * 10))
                else:
                    with self._lock:
                        self.still_open.append(time.monotonic() - opened)
                    continue
            except OSError:
                pass  # reset or broken pipe: closed by the server
            finally:
                sock.close()
            with self._lock:
                self.lifetimes.append(time.monotonic() - opened)
                self.answers.append(answer)

    def __enter__(self) -> "Slowloris":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.interval + 6)


def _raw(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


def test_slowloris_does_not_hold_threads_and_is_disconnected(tmp_path):
    with _service(tmp_path) as service:
        failures, latencies = [], []
        with Slowloris(service.port) as slow:
            time.sleep(0.5)  # the slow connections are in
            for _ in range(12):
                started = time.monotonic()
                try:
                    response = requests.get(f"{service.url}/health", timeout=1)
                    if response.status_code != 200:
                        failures.append(response.status_code)
                except requests.RequestException as exc:
                    failures.append(type(exc).__name__)
                latencies.append(time.monotonic() - started)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        assert not failures, f"/health probes failed during slowloris: {failures}"
        assert max(latencies) < 1.0
        # Every slow connection was closed by the server in time; none was left open at the end
        # for longer than the timeout either.
        assert len(slow.lifetimes) >= 8, slow.lifetimes
        assert max(slow.lifetimes) < READ_TIMEOUT + MARGIN, slow.lifetimes
        assert all(t < READ_TIMEOUT + MARGIN for t in slow.still_open), slow.still_open
        # A client part-way through its head is told why (408, JSON) before the close.
        answered = [a for a in slow.answers if a]
        assert answered and all(a.startswith(b"HTTP/1.1 408 ") for a in answered), answered[:2]
        body = json.loads(answered[0].partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] == "request_timeout"


def test_gunicorn_error_answers_are_json(tmp_path):
    with _service(tmp_path) as service:
        cases = [
            (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
            (b"NOT A REQUEST LINE AT ALL\r\n\r\n", 400, "invalid_request"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
             431, "headers_too_large"),
        ]
        for request, status, code in cases:
            got_status, headers, body = _raw(service.port, request)
            assert got_status == status, (request[:40], got_status, body[:200])
            assert headers["content-type"] == "application/json", headers
            assert int(headers["content-length"]) == len(body)
            envelope = json.loads(body)
            assert set(envelope) == {"error"}
            assert envelope["error"]["code"] == code
            assert isinstance(envelope["error"]["message"], str) and envelope["error"]["message"]
        # The service is still answering afterwards.
        assert requests.get(f"{service.url}/health", timeout=2).status_code == 200


def test_keep_alive_client_works_alongside_slow_clients(tmp_path):
    with _service(tmp_path) as service:
        with Slowloris(service.port):
            time.sleep(0.5)
            client = http.client.HTTPConnection("127.0.0.1", service.port, timeout=1)
            ports = set()
            try:
                for i in range(4):
                    started = time.monotonic()
                    client.request("GET", "/health")
                    response = client.getresponse()
                    assert response.status == 200
                    response.read()
                    assert time.monotonic() - started < 1.0
                    assert response.getheader("Connection", "").lower() != "close"
                    ports.add(client.sock.getsockname()[1])
                    # Idle between requests for longer than the read timeout (which must not apply
                    # to an idle kept-alive connection), shorter than keepalive.
                    if i < 3:
                        time.sleep(READ_TIMEOUT + 0.5)
            finally:
                client.close()
            assert len(ports) == 1, "the kept-alive connection was not reused"
