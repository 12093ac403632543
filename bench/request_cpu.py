"""Server CPU per request, in-process: POST /api/v1/optimize through the Flask test client with
production settings (API keys, rate limits on Redis, limits too high to bite), for the demo
provider and for Electricity Maps (a local stand-in, cache warm), one workload and a 50-workload
batch. CPU is time.process_time over many requests (so it is not wall time, and a shared machine
moves it less than wall time).

    .venv/bin/python bench/request_cpu.py [--requests 300] [--profile batch50-demo]

`--profile NAME` prints cProfile's profile (top functions by own time, or `--sort cumulative`) of that case instead of timing it. Needs Redis on
127.0.0.1:6379 (database 12, keys under a unique prefix, deleted afterwards).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import BATCH, REDIS_URL, SINGLE, ZONES  # noqa: E402
from bench.machine import machine  # noqa: E402
from carbon_optimizer.secret_store import SecretStore  # noqa: E402
from carbon_optimizer.settings import load_settings  # noqa: E402
from carbon_optimizer.web.app import create_app  # noqa: E402
from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast  # noqa: E402
from devkit.redis_server import delete_keys  # noqa: E402

KEY = "bench-api-key-0123456789abcdef"
BODIES = {"optimize": SINGLE, "batch50": BATCH}


def build(provider: str, prefix: str, stand_in_url: str, rate_limit: bool = True):
    env = {"API_KEYS": KEY, "REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": prefix, "LOG_LEVEL": "WARNING",
           "RATE_LIMIT_ENABLED": "true" if rate_limit else "false", "RATE_LIMIT_DEFAULT": "100000000 per hour",
           "RATE_LIMIT_OPTIMIZE": "100000000 per minute", "CACHE_TTL_SECONDS": "3600", "UPSTREAM_RETRIES": "0"}
    if provider == "demo":
        env["CARBON_PROVIDER"] = "demo"
    else:
        env |= {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "bench-key",
                "ELECTRICITY_MAPS_BASE_URL": stand_in_url}
    return create_app(settings=load_settings(env), secret_store=SecretStore(env)).test_client()


def cpu_ms(client, body: dict, count: int) -> float:
    headers = {"X-API-Key": KEY}
    for _ in range(20):  # warm: caches, the limiter's script
        assert client.post("/api/v1/optimize", json=body, headers=headers).status_code == 200
    started = time.process_time()
    for _ in range(count):
        client.post("/api/v1/optimize", json=body, headers=headers)
    return (time.process_time() - started) / count * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--profile", help="e.g. batch50-demo, optimize-electricitymaps")
    parser.add_argument("--no-rate-limit", action="store_true",
                        help="RATE_LIMIT_ENABLED=false, to see the cost of everything but the limiter")
    parser.add_argument("--filter", help="with --profile: only functions whose file:line(name) matches this regex")
    parser.add_argument("--sort", default="tottime", help="pstats order for --profile: tottime, cumulative")
    args = parser.parse_args()
    store = redis.Redis.from_url(REDIS_URL)
    store.ping()
    prefix = f"bench-cpu-{uuid.uuid4().hex[:8]}:"
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    results: dict = {"machine": machine(), "requests": args.requests, "rate_limit": not args.no_rate_limit, "ms_cpu_per_request": {}}
    try:
        with ElectricityMapsStandIn() as stand_in:
            for index, zone in enumerate(ZONES):
                values = [200 + 100 * ((h + 3 * index) % 24 < 12) - h % 7 for h in range(72)]
                stand_in.responses[zone] = (200, hourly_forecast(zone, start, values))
            for provider in ("demo", "electricitymaps"):
                client = build(provider, prefix, stand_in.url, rate_limit=not args.no_rate_limit)
                for name, body in BODIES.items():
                    case = f"{name}-{provider}"
                    if args.profile == case:
                        cpu_ms(client, body, 5)
                        with cProfile.Profile(time.process_time) as profiler:
                            cpu_ms(client, body, args.requests)
                        if os.environ.get("PROFILE_DUMP"):
                            profiler.dump_stats(os.environ["PROFILE_DUMP"])
                        pstats.Stats(profiler).sort_stats(args.sort).print_stats(*([args.filter] if args.filter else []), 45)
                        return 0
                    if not args.profile:
                        results["ms_cpu_per_request"][case] = round(cpu_ms(client, body, args.requests), 3)
                        print(case, results["ms_cpu_per_request"][case], "ms CPU/request", flush=True)
    finally:
        delete_keys(store, prefix)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
