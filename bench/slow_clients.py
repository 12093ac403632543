"""Slow clients and load against Gunicorn with the shipped configuration (5 workers x 4 threads on
this machine, default timeouts, API keys; the limiter on Redis for `twenty`): how long legitimate
requests and the probes take while an attack runs.

    .venv/bin/python bench/slow_clients.py [readers|bodies|idle|twenty ...]

- readers: 200 connections that each pipeline 3 requests for the Swagger bundle (1.7 MB) and read
  nothing;
- bodies: 200 connections without a key that announce a 100 kB body and send a byte every 0.3 s;
- idle: 6,000 kept-alive connections left idle after one request each;
- twenty: the costliest accepted request (bench/worst_requests.py) 20 times at once.

For each: legitimate requests (GET /api/v1/zones with a key, one every 0.5 s) answered and their
p50 / max time; /health (readiness) and /health/live every 0.1 s: statuses and p50 / p99 / max.
Figures: BENCHMARKS.md, "Slow clients"; DEPLOYMENT.md, "Slow clients".
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.worst_requests import REQUESTS  # noqa: E402
from devkit.redis_server import delete_keys  # noqa: E402
from devkit.service_process import GunicornProcess  # noqa: E402

KEY = "bench-key"
SWAGGER = "/static/vendor/swagger-ui-dist-5.35.0/swagger-ui-bundle.js"
ATTACKERS = 200


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Observer:
    """Legitimate requests and probes, until stopped."""

    def __init__(self, url: str):
        self.url = url
        self.legit: list[tuple[float, object]] = []
        self.ready: list[tuple[float, object]] = []
        self.live: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._legit, daemon=True),
                         threading.Thread(target=self._probe, daemon=True)]

    def _timed(self, path: str, headers=None) -> tuple[float, object]:
        started = time.monotonic()
        try:
            status: object = requests.get(self.url + path, headers=headers, timeout=75).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        return time.monotonic() - started, status

    def _legit(self):
        while not self._stop.is_set():
            self.legit.append(self._timed("/api/v1/zones", {"X-API-Key": KEY}))
            self._stop.wait(0.5)

    def _probe(self):
        while not self._stop.is_set():
            self.ready.append(self._timed("/health"))
            self.live.append(self._timed("/health/live"))
            self._stop.wait(0.1)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=80)

    def report(self, name: str):
        print(f"\n## {name}")
        for label, rows in (("legitimate GET /api/v1/zones", self.legit), ("/health (readiness)", self.ready),
                            ("/health/live", self.live)):
            times = [t for t, _ in rows]
            statuses = Counter(s for _, s in rows)
            print(f"{label}: {len(rows)} requests {dict(statuses)}; p50 {_p(times, 0.5):.3f} s, "
                  f"p99 {_p(times, 0.99):.3f} s, max {max(times, default=float('nan')):.3f} s")


def readers(service: GunicornProcess, seconds: float):
    request = f"GET {SWAGGER} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 3
    socks = []
    for _ in range(ATTACKERS):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", service.port))
        sock.sendall(request)
        socks.append(sock)
    time.sleep(seconds)
    for sock in socks:
        sock.close()


def bodies(service: GunicornProcess, seconds: float):
    head = (b"POST /api/v1/optimize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{")
    stop = time.monotonic() + seconds

    def one():
        while time.monotonic() < stop:
            try:
                with socket.create_connection(("127.0.0.1", service.port), timeout=5) as sock:
                    sock.sendall(head)
                    while time.monotonic() < stop:
                        sock.sendall(b"x")
                        time.sleep(0.3)
            except OSError:
                pass  # closed by the server: open another
    threads = [threading.Thread(target=one, daemon=True) for _ in range(ATTACKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def idle(service: GunicornProcess, seconds: float, count: int = 6000):
    socks = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(4096)
            socks.append(sock)
        except OSError:
            pass
    print(f"idle connections opened and answered: {len(socks)}")
    time.sleep(seconds)
    for sock in socks:
        sock.close()


def twenty(service: GunicornProcess, seconds: float):
    body = REQUESTS["batch of 500 plain, 50 zones, 30 days"]
    answers: list[object] = []

    def post():
        try:
            answers.append(requests.post(f"{service.url}/api/v1/optimize", json=body,
                                         headers={"X-API-Key": KEY}, timeout=75).status_code)
        except requests.RequestException as exc:
            answers.append(type(exc).__name__)
    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"answers: {dict(Counter(answers))}")


SCENARIOS = {"readers": readers, "bodies": bodies, "idle": idle, "twenty": twenty}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each attack lasts")
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    args.scenarios = args.scenarios or list(SCENARIOS)
    tmp = Path(f"/tmp/bench-slow-clients-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    for name in args.scenarios:
        env = {"API_KEYS": KEY, "PROMETHEUS_MULTIPROC_DIR": str(tmp / name), "CARBON_PROVIDER": "demo"}
        if name == "twenty":
            env |= {"REDIS_URL": "redis://127.0.0.1:6379/15", "RATE_LIMIT_ENABLED": "true",
                    "CACHE_KEY_PREFIX": f"bench-slow-{uuid.uuid4().hex[:8]}:"}
        with GunicornProcess(env, workers=5, threads=4, log_path=tmp / f"{name}.log") as service:
            with Observer(service.url) as observer:
                time.sleep(1)
                SCENARIOS[name](service, args.seconds)
                time.sleep(1)
            observer.report(name)
        if name == "twenty":  # only the keys this run wrote
            import redis
            delete_keys(redis.Redis.from_url(env["REDIS_URL"]), env["CACHE_KEY_PREFIX"])


if __name__ == "__main__":
    main()
