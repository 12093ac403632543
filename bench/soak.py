"""Soak: sustained load on Gunicorn, then every answer must be 2xx and no worker may keep growing.

    .venv/bin/python bench/soak.py [--seconds 60] [--json out.json]

64 connections for `--seconds` (48 posting one workload, 16 posting a batch of 5) after a 2 s
warm-up, against `gunicorn -c gunicorn.conf.py app:app` with 2 workers x 4 threads, worker recycling
off (so growth shows), real Redis (database 12, keys under a unique prefix, deleted afterwards) and
an Electricity Maps stand-in. Prints the answers, the rate and each worker's resident-memory growth;
exits 1 when a check fails. CI runs the same soak for 10 s
(tests/test_reliability.py::test_sustained_load_all_2xx_and_memory_stable).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast  # noqa: E402
from devkit.redis_server import delete_keys  # noqa: E402
from devkit.service_process import GunicornProcess  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/12"
SINGLE = {"duration": 60, "zones": ["DE"]}
BATCH = {"workloads": [{"duration": 30 + 10 * i, "zones": ["DE"]} for i in range(5)]}
MAX_GROWTH_KIB = 32 * 1024   # more than this in one soak is a leak, not allocator noise
MIN_RATE = 20                # answers per second; far below what 2 workers do, so only a stall fails


class Posters:
    """Threads posting `body` until stopped; every outcome (status, or exception name) is kept."""

    def __init__(self, url: str, threads: int, body: dict):
        self.url, self.body = f"{url}/api/v1/optimize", body
        self.outcomes: list[object] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                outcome: object = session.post(self.url, json=self.body, timeout=10).status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
                session = requests.Session()
            with self._lock:
                self.outcomes.append(outcome)

    def __enter__(self) -> "Posters":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def failures(self) -> list[object]:
        """Every outcome that was not a 200, so far."""
        with self._lock:
            return [o for o in self.outcomes if o != 200]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def soak(service: GunicornProcess, seconds: float) -> dict:
    """Warm up, then load `service` for `seconds`; outcomes and worker memory before and after."""
    with Posters(service.url, 4, BATCH):  # allocators settle before "before" is read
        time.sleep(2)
    before = {pid: rss_kib(pid) for pid in service.worker_pids()}
    with Posters(service.url, 48, SINGLE) as single, Posters(service.url, 16, BATCH) as batched:
        time.sleep(seconds)
    after = {pid: rss_kib(pid) for pid in service.worker_pids()}
    outcomes = single.outcomes + batched.outcomes
    return {"seconds": seconds, "answers": len(outcomes),
            "not_2xx": [o for o in outcomes if not (isinstance(o, int) and 200 <= o < 300)],
            "rss_before_kib": before, "rss_after_kib": after,
            "max_growth_kib": max((after[p] - before[p] for p in before if p in after), default=None)}


def problems(result: dict) -> list[str]:
    """The soak's checks; empty when it passed."""
    found = []
    if result["not_2xx"]:
        found.append(f"{len(result['not_2xx'])} answers were not 2xx: {sorted(set(map(str, result['not_2xx'])))}")
    if result["answers"] <= MIN_RATE * result["seconds"]:
        found.append(f"only {result['answers']} answers in {result['seconds']:.0f} s")
    if result["rss_before_kib"].keys() != result["rss_after_kib"].keys():
        found.append("a worker died or was replaced during the soak")
    elif result["max_growth_kib"] >= MAX_GROWTH_KIB:
        found.append(f"a worker grew {result['max_growth_kib']} KiB in {result['seconds']:.0f} s")
    return found


def service_env(stand_in_url: str, prefix: str, metrics_dir: Path) -> dict:
    return {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "test-key",
            "ELECTRICITY_MAPS_BASE_URL": stand_in_url, "REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": prefix,
            "UPSTREAM_RETRIES": "0", "UPSTREAM_READ_TIMEOUT": "0.5", "UPSTREAM_CONNECT_TIMEOUT": "0.5",
            "RATE_LIMIT_ENABLED": "false",  # the load is on purpose
            "GUNICORN_MAX_REQUESTS": "0",   # no recycling: a leak must show as growth
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    prefix = f"bench-soak-{uuid.uuid4().hex[:8]}:"
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, ElectricityMapsStandIn() as stand_in:
        stand_in.responses["DE"] = (200, hourly_forecast("DE", hour, [300.0 - 2 * i for i in range(48)]))
        try:
            env = service_env(stand_in.url, prefix, Path(tmp) / "metrics")
            with GunicornProcess(env, workers=2, threads=4, log_path=Path(tmp) / "gunicorn.log") as service:
                result = soak(service, args.seconds)
        finally:
            delete_keys(client, prefix)
    failed = problems(result)
    growth = result["max_growth_kib"]
    print(f"soak {args.seconds:.0f} s at 64 connections: {result['answers']} answers "
          f"({result['answers'] / args.seconds:.0f}/s), {len(result['not_2xx'])} not 2xx; largest worker "
          f"growth {(growth or 0) / 1024:.1f} MiB; {'FAILED: ' + '; '.join(failed) if failed else 'passed'}")
    if args.json:
        args.json.write_text(json.dumps({**result, "not_2xx": len(result["not_2xx"]), "problems": failed},
                                        indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
