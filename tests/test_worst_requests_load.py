"""The most expensive requests the documented limits allow, many at once, against Gunicorn with the
shipped configuration: /health keeps answering fast and workers stay small (issue 11).

Production settings: API keys, the rate limiter on Redis (its per-minute optimize quota, 20, is
what one client can send at once), the demo provider (the embedded default).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests

from bench.soak import rss_kib
from bench.worst_requests import REQUESTS
from tests.support import GunicornProcess, delete_keys

pytestmark = pytest.mark.slow

WORST = REQUESTS["batch of 500 plain, 50 zones, 30 days"]  # the costliest one accepted (BENCHMARKS.md)
KEY = "load-test-key"


def _service(tmp_path, prefix: str, workers: int, threads: int) -> GunicornProcess:
    env = {"API_KEYS": KEY, "REDIS_URL": "redis://127.0.0.1:6379/15", "CACHE_KEY_PREFIX": prefix,
           "RATE_LIMIT_ENABLED": "true", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    return GunicornProcess(env, workers=workers, threads=threads, log_path=tmp_path / "gunicorn.log")


class Prober:
    """GET /health every `interval` s until stopped: each probe's time and status; and each
    worker's resident memory, sampled as often."""

    def __init__(self, service: GunicornProcess, interval: float = 0.1):
        self.service, self.interval = service, interval
        self.probes: list[tuple[float, object]] = []
        self.peak_rss_kib: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status: object = requests.get(f"{self.service.url}/health", timeout=5).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            self.probes.append((time.monotonic() - started, status))
            for pid in self.service.worker_pids():
                try:
                    self.peak_rss_kib[pid] = max(self.peak_rss_kib.get(pid, 0), rss_kib(pid))
                except OSError:
                    pass  # a worker that just exited
            self._stop.wait(self.interval)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def _post_all(url: str, body: dict, count: int) -> list[requests.Response]:
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def post():
        answer = requests.post(f"{url}/api/v1/optimize", json=body, headers={"X-API-Key": KEY},
                               timeout=60)
        with lock:
            answers.append(answer)
    threads = [threading.Thread(target=post) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.fixture
def prefix(redis_client):
    prefix = f"test-load-{uuid.uuid4().hex[:8]}:"
    yield prefix
    delete_keys(redis_client, prefix)


def test_twenty_worst_requests_at_once_leave_health_fast_and_workers_small(tmp_path, prefix):
    # The shipped configuration on this machine: 2 x cores + 1 workers, 4 threads each.
    with _service(tmp_path, prefix, workers=5, threads=4) as service, Prober(service) as prober:
        time.sleep(0.3)  # a few probes of the idle service first
        answers = _post_all(service.url, WORST, 20)
        time.sleep(0.3)
    for answer in answers:  # a schedule, or a clear refusal: never a 500
        assert answer.status_code in (200, 422, 429, 503), answer.text[:300]
        assert answer.headers["Content-Type"].startswith("application/json")
    assert sum(a.status_code == 200 for a in answers) >= 10
    slowest = max(seconds for seconds, _ in prober.probes)
    assert len(prober.probes) >= 10
    assert all(status == 200 for _, status in prober.probes), prober.probes
    assert slowest < 0.5, f"/health took {slowest:.2f} s under 20 worst requests: {prober.probes}"
    biggest = max(prober.peak_rss_kib.values()) / 1024
    assert biggest < 300, f"a worker reached {biggest:.0f} MiB: {prober.peak_rss_kib}"


def test_probes_do_not_wait_for_application_threads(tmp_path, prefix):
    """One worker with one application thread, busy with a costly request: /health still answers
    at once (its own lane), where it used to queue behind the request."""
    with _service(tmp_path, prefix, workers=1, threads=1) as service, Prober(service, 0.05) as prober:
        time.sleep(0.2)
        answers = _post_all(service.url, WORST, 2)
    busy = [a.elapsed.total_seconds() for a in answers]
    assert max(busy) > 1.0, f"the requests were not costly enough to show anything: {busy}"
    slowest = max(seconds for seconds, _ in prober.probes)
    assert slowest < 0.5, f"/health waited {slowest:.2f} s behind the application's thread"
