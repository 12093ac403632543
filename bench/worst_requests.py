"""The most expensive requests the documented limits allow: time and peak memory of each, one
fresh process per request, in production settings (an API key, the rate limiter on Redis with
limits too high to bite, the demo provider).

    .venv/bin/python bench/worst_requests.py [--tree DIR]   # DIR: another checkout, for "before"

Figures: BENCHMARKS.md, "Worst requests".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# 50 zones (MAX: a workload's zones list holds at most 50), all among the demo provider's zones
# (carbon_optimizer/data/providers/demo_zones.csv): it refuses zones it does not have.
ZONES = ["DE", "FR", "GB", "PL", "SE", "NO", "NL", "IE", "ES", "PT", "AT", "BE", "CH", "CZ", "DK-DK1",
         "DK-DK2", "FI", "IT-NO", "NO-NO1", "SE-SE3", "AE", "BH", "IL", "QA", "SA", "ZA", "HK", "SG",
         "TW", "KR", "JP-TK", "JP-KN", "IN-WE", "IN-SO", "IN-NO", "ID", "MY-WM", "AU-NSW", "AU-VIC",
         "NZ", "BR-CS", "CL-SEN", "CA-QC", "CA-ON", "CA-AB", "US-CAL-CISO", "US-MIDA-PJM",
         "US-MIDW-MISO", "US-TEX-ERCO", "US-NY-NYIS"]
ONE_CHUNK = {"duration": 271, "zones": ZONES, "interruptible": True, "min_chunk": 2, "max_chunks": 1,
             "max_delay": "P17D"}
REQUESTS = {
    "interruptible, 50 zones, 17 days, min_chunk 2, max_chunks 1": ONE_CHUNK,
    "interruptible, 50 zones, 17 days, min_chunk 2, max_chunks 3": {**ONE_CHUNK, "max_chunks": 3},
    "batch of 500 of the first (210 KB)": {"workloads": [ONE_CHUNK] * 500},
    "batch of 300 of the first": {"workloads": [ONE_CHUNK] * 300},
    "batch of 500 plain, 50 zones, 30 days": {
        "workloads": [{"duration": 61, "zones": ZONES, "max_delay": "P30D"}] * 500},
    "capacity batch 40 x 50 zones, PT71H, max_concurrent 1": {
        "workloads": [{"duration": 61, "zones": ZONES, "max_delay": "PT71H"}] * 40,
        "capacity": {"max_concurrent": 1}},
}

CHILD = r"""
import json, logging, resource, sys, time
from datetime import datetime, timezone
sys.path.insert(0, ".")
logging.disable(logging.CRITICAL)
from carbon_optimizer.web.app import create_app
from carbon_optimizer.settings import load_settings
from carbon_optimizer.secret_store import SecretStore
env = {"API_KEYS": "bench-key", "REDIS_URL": "redis://127.0.0.1:6379/14",
       "CACHE_KEY_PREFIX": "bench-worst:", "RATE_LIMIT_DEFAULT": "1000000 per hour",
       "RATE_LIMIT_OPTIMIZE": "1000000 per minute"}
app = create_app(settings=load_settings(env), secret_store=SecretStore(env),
                 clock=lambda: datetime(2026, 11, 23, 10, 17, 30, tzinfo=timezone.utc))
client = app.test_client()
body = json.loads(sys.stdin.read())
started, cpu = time.perf_counter(), time.process_time()
answer = client.post("/api/v1/optimize", json=body, headers={"X-API-Key": "bench-key"})
wall, cpu = time.perf_counter() - started, time.process_time() - cpu
data = answer.get_json()
summary = data.get("summary") or (data.get("error") or {}).get("code") or data.get("status")
print(json.dumps({"status": answer.status_code, "seconds": round(wall, 2), "cpu": round(cpu, 2),
                  "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "answer": summary}))
"""


def measure(tree: Path, body: dict, timeout: float) -> dict:
    try:
        done = subprocess.run([sys.executable, "-c", CHILD], cwd=tree, input=json.dumps(body),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": f">{timeout:g}"}
    if done.returncode:
        return {"status": "crashed", "error": done.stderr[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    print(f"| request | status | wall s | CPU s | peak MiB | answer |  (tree: {args.tree})")
    print("|---|---|---|---|---|---|")
    for name, body in REQUESTS.items():
        r = measure(args.tree, body, args.timeout)
        print(f"| {name} | {r.get('status')} | {r.get('seconds')} | {r.get('cpu', '')} | "
              f"{r.get('peak_mib', '')} | {r.get('answer', r.get('error', ''))} |", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
