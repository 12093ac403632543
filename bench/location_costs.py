"""What a request's locations cost before any solving budget (issue 23, point 2): CPU time, peak
Python memory (tracemalloc) and answer size of the location shapes an attacker would send, in-process
on the demo provider. Run from a checkout: `.venv/bin/python bench/location_costs.py`."""

from __future__ import annotations

import json
import random
import string
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carbon_optimizer.secret_store import SecretStore  # noqa: E402
from carbon_optimizer.settings import load_settings  # noqa: E402
from carbon_optimizer.web.app import create_app  # noqa: E402


def names(rng: random.Random, count: int) -> list[str]:
    return ["".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(3, 12)))
            for _ in range(count)]


def shapes(rng: random.Random) -> dict[str, dict]:
    distinct = names(rng, 25_000)
    pool = names(rng, 100)
    return {
        "500 x 50 unknown, all distinct": {"workloads": [
            {"duration": 61, "zones": distinct[50 * i:50 * i + 50]} for i in range(500)]},
        "500 x 50 of 100 unknown names": {"workloads": [
            {"duration": 61, "zones": rng.sample(pool, 50)} for _ in range(500)]},
        "1 x 5 typos": {"duration": 61, "zones": ["de", "eu-west-1", "gcp:eu-west-1", "US-CAL-CIS0", "frr"]},
    }


def main() -> None:
    env = {"RATE_LIMIT_ENABLED": "false", "CARBON_PROVIDER": "demo", "LOG_LEVEL": "ERROR"}
    client = create_app(settings=load_settings(env), secret_store=SecretStore(env),
                        clock=lambda: datetime(2026, 11, 23, 10, 17, 30, tzinfo=timezone.utc)).test_client()
    print("| request | body | status | CPU s | peak (tracemalloc) | answer |")
    print("|---|---|---|---|---|---|")
    for label, body in shapes(random.Random(1)).items():
        raw = json.dumps(body)
        cpu = time.process_time()
        answer = client.post("/api/v1/optimize", data=raw, content_type="application/json")
        cpu = time.process_time() - cpu
        tracemalloc.start()
        client.post("/api/v1/optimize", data=raw, content_type="application/json")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"| {label} | {len(raw) / 1024:.0f} KiB | {answer.status_code} | {cpu:.2f} | "
              f"{peak / 2 ** 20:.1f} MiB | {len(answer.data) / 1024:.1f} KiB |")


if __name__ == "__main__":
    main()
