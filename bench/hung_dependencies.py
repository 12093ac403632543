"""What a hung dependency costs a request: the figures the deadline tests once asserted as time
limits (issue 24 moved them here; the tests assert behaviour, with margins only a hang reaches).

    .venv/bin/python bench/hung_dependencies.py [call|zone|stale|redis ...] [--requests 20]

- call: one Electricity Maps call with a 0.6 s budget (in-process) against a provider that never
  answers, one that sends its body or its head a byte every 0.05 s, and one that answers 503 to
  each of five retries: seconds per call.
- zone: POST /api/v1/optimize for DE and FR with DE's provider hung, UPSTREAM_DEADLINE_SECONDS 0.5.
- stale: POST /api/v1/optimize for DE once its copy has expired and the provider hangs (served
  stale while one refresh waits).
- redis: GET /health every 0.25 s while 4 clients post requests, Redis answering, then frozen
  (SIGSTOP), with the limiter on it.

The last three against `gunicorn -c gunicorn.conf.py app:app` (2 workers x 4 threads), an
Electricity Maps stand-in and Redis (database 12, keys under a unique prefix, deleted afterwards;
a private redis-server for `redis`). Prints p50 / p99 / max seconds and the statuses.
Figures: BENCHMARKS.md, "Hung dependencies".
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.soak import Posters  # noqa: E402
from carbon_optimizer.errors import UpstreamUnavailable  # noqa: E402
from carbon_optimizer.data.providers.electricitymaps import ElectricityMapsProvider  # noqa: E402
from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast  # noqa: E402
from devkit.ports import free_port  # noqa: E402
from devkit.redis_server import delete_keys, start_redis  # noqa: E402
from devkit.service_process import GunicornProcess  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/12"
HOUR = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
HUNG = 3600.0  # the stand-in never answers within a run (released when it ends)


def forecast(zone: str, level: float = 200.0) -> tuple[int, dict]:
    return 200, hourly_forecast(zone, HOUR, [level + (i % 24) * 5 for i in range(72)])


def summary(label: str, timed: list[tuple[float, object]]) -> None:
    seconds = sorted(t for t, _ in timed)
    p = lambda q: seconds[min(len(seconds) - 1, int(q * len(seconds)))]  # noqa: E731
    print(f"{label}: n={len(seconds)} p50 {p(0.5):.3f} s, p99 {p(0.99):.3f} s, max {seconds[-1]:.3f} s; "
          f"{dict(Counter(outcome for _, outcome in timed))}", flush=True)


def timed(call) -> tuple[float, object]:
    started = time.monotonic()
    outcome = call()
    return time.monotonic() - started, outcome


def call(_args) -> None:
    for fault in ("never answers", "trickled body", "trickled head", "503 five times"):
        stand_in = ElectricityMapsStandIn(delay=HUNG if fault == "never answers" else 0.0,
                                          trickle=0.05 if "trickled" in fault else 0.0)
        stand_in.trickle_head = fault == "trickled head"
        with stand_in:
            stand_in.responses["DE"] = (503, {"status": "error"}) if fault.startswith("503") else forecast("DE")
            provider = ElectricityMapsProvider(stand_in.url, lambda: "bench-key", read_timeout=10.0,
                                               retries=5, call_seconds=0.6)

            def one():
                try:
                    provider.forecast("DE", HOUR)
                    return "answered"
                except UpstreamUnavailable:
                    return "unavailable"
            summary(f"call, {fault}", [timed(one) for _ in range(3)])


def em_env(url: str, prefix: str, tmp: Path, **extra: str) -> dict:
    return {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "bench-key",
            "ELECTRICITY_MAPS_BASE_URL": url, "REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": prefix,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / prefix.strip(":")), **extra}


def post(url: str, zones: list[str]) -> tuple[float, object]:
    return timed(lambda: requests.post(f"{url}/api/v1/optimize", json={"duration": 60, "zones": zones},
                                       timeout=60).status_code)


def zone(args, tmp: Path, prefix: str) -> None:
    with ElectricityMapsStandIn() as stand_in:
        stand_in.responses.update(DE=forecast("DE", 50.0), FR=forecast("FR"))
        stand_in.zone_delay["DE"] = HUNG
        env = em_env(stand_in.url, prefix, tmp, UPSTREAM_DEADLINE_SECONDS="0.5")
        with GunicornProcess(env, workers=2, threads=4) as service:
            summary("zone, DE hung, 0.5 s deadline", [post(service.url, ["DE", "FR"]) for _ in range(args.requests)])


def stale(args, tmp: Path, prefix: str) -> None:
    with ElectricityMapsStandIn() as stand_in:
        stand_in.responses["DE"] = forecast("DE")
        with GunicornProcess(em_env(stand_in.url, prefix, tmp, CACHE_TTL_SECONDS="1"), workers=2,
                             threads=4) as service:
            post(service.url, ["DE"])  # the copy
            stand_in.delay = HUNG
            time.sleep(1.5)  # expired
            summary("stale, provider hung", [post(service.url, ["DE"]) for _ in range(args.requests)])


def redis_frozen(args, tmp: Path, prefix: str) -> None:
    port = free_port()
    server = start_redis(port, tmp)
    try:
        with ElectricityMapsStandIn() as stand_in:
            stand_in.responses["DE"] = forecast("DE")
            env = em_env(stand_in.url, prefix, tmp, REDIS_URL=f"redis://127.0.0.1:{port}/0",
                         CACHE_TTL_SECONDS="2", RATE_LIMIT_ENABLED="true",
                         RATE_LIMIT_DEFAULT="1000000 per hour", RATE_LIMIT_OPTIMIZE="1000000 per minute")
            with GunicornProcess(env, workers=2, threads=4) as service, \
                    Posters(service.url, threads=4, body={"duration": 60, "zones": ["DE"]}):
                def probes() -> list[tuple[float, object]]:
                    found = []
                    for _ in range(args.requests):
                        found.append(timed(lambda: requests.get(f"{service.url}/health", timeout=60).json()["status"]))
                        time.sleep(0.25)
                    return found
                time.sleep(2)
                summary("/health, Redis answering", probes())
                server.send_signal(signal.SIGSTOP)
                summary("/health, Redis frozen", probes())
                server.send_signal(signal.SIGCONT)
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()


SCENARIOS = {"call": call, "zone": zone, "stale": stale, "redis": redis_frozen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--requests", type=int, default=20, help="requests (or probes) per figure")
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
          f"{open('/proc/loadavg').read().split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-hung-") as tmp:
        for name in args.scenarios or list(SCENARIOS):
            if name == "call":
                call(args)
                continue
            prefix = f"bench-hung-{uuid.uuid4().hex[:8]}:"
            try:
                SCENARIOS[name](args, Path(tmp), prefix)
            finally:
                delete_keys(redis.Redis.from_url(REDIS_URL), prefix)


if __name__ == "__main__":
    main()
