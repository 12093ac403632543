"""The most expensive requests the documented limits allow: time and peak memory of each, one
fresh process per request, in production settings (an API key, the rate limiter on Redis with
limits too high to bite, the demo provider). With --at-once N: each of the costliest shapes sent
N times at once to Gunicorn with the shipped configuration (k8s/configmap.yaml: 3 workers x 4
threads), each worker's resident memory sampled every 20 ms, and read again once idle.

    .venv/bin/python bench/worst_requests.py [--tree DIR]   # DIR: another checkout, for "before"
    .venv/bin/python bench/worst_requests.py --at-once 20 [--workers 3 --threads 4] [--tree DIR]

A workload answered deadline_exceeded (or a 503) counts as a failure, not a success.
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
    # Issue 23, point 1: 157 bytes, 18-40 s and ~4 GB in one worker before.
    "capacity 1 x 10 zones, 4,001 min, PT5H, max_concurrent 1": {
        "workloads": [{"duration": 4001, "zones": ZONES[:10], "max_delay": "PT5H", "power_kw": 1}],
        "capacity": {"max_concurrent": 1}},
    "capacity 10 x 1 zone, 4,001 min, PT5H, max_concurrent 1": {
        "workloads": [{"duration": 4001, "zones": ["DE"], "max_delay": "PT5H", "power_kw": 1}] * 10,
        "capacity": {"max_concurrent": 1}},
    # Issue 23, point 7: the chunk DP's ring, outside the cap before.
    "interruptible 3,899 min, min_chunk 1,949, 4 zones, PT1H": {
        "duration": 3899, "zones": ZONES[:4], "interruptible": True, "min_chunk": 1949,
        "max_delay": "PT1H"},
    # About the largest exact chunk search the caps allow (31 MiB: tables, ring, temporaries).
    "interruptible 1,441 min, min_chunk 60, 4 chunks, 4 zones, PT9H": {
        "duration": 1441, "zones": ZONES[:4], "interruptible": True, "min_chunk": 60,
        "max_chunks": 4, "max_delay": "PT9H"},
}
AT_ONCE = ["capacity 1 x 10 zones, 4,001 min, PT5H, max_concurrent 1",
           "interruptible 3,899 min, min_chunk 1,949, 4 zones, PT1H",
           "interruptible 1,441 min, min_chunk 60, 4 chunks, 4 zones, PT9H",
           "batch of 500 plain, 50 zones, 30 days"]

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
late = sum(r.get("code") == "deadline_exceeded" for r in data.get("results", []))
if late:
    summary = {**summary, "deadline_exceeded (failures)": late}
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


def _outcome(answer) -> str:
    """ok: every workload scheduled or refused for a reason the client owns (capacity, window);
    failed: a 503, or any workload answered deadline_exceeded."""
    if answer is None or isinstance(answer, str):
        return "error"
    if answer.status_code == 503:
        return "busy" if answer.json()["error"]["code"] == "service_unavailable" else "failed"
    if answer.status_code != 200:
        return str(answer.status_code)
    results = answer.json().get("results", [])
    return "failed" if any(r.get("code") == "deadline_exceeded" for r in results) else "ok"


def at_once(tree: Path, count: int, workers: int, threads: int, shapes: list[str]) -> None:
    import tempfile
    import threading
    import time
    import requests
    sys.path.insert(0, str(ROOT))
    from bench.soak import rss_kib
    from devkit.service_process import GunicornProcess
    print(f"| request, {count} at once | answers | slowest s | worker idle MiB | worker peak MiB "
          f"| worker idle after MiB | workers replaced |  ({workers} workers x {threads} threads, "
          f"tree {tree})")
    print("|---|---|---|---|---|---|---|")
    for name in shapes:
        body = REQUESTS[name]
        env = {"API_KEYS": "bench-key", "REDIS_URL": "redis://127.0.0.1:6379/14",
               "CACHE_KEY_PREFIX": "bench-worst:", "RATE_LIMIT_ENABLED": "true",
               "RATE_LIMIT_DEFAULT": "1000000 per hour", "RATE_LIMIT_OPTIMIZE": "1000000 per minute",
               "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="bench-worst-")}
        service = GunicornProcess(env, workers=workers, threads=threads, root=tree)
        with service:
            warm = {"workloads": [{"duration": 61, "zones": ["DE", "FR"], "max_delay": "PT3H"}] * 3,
                    "capacity": {"max_concurrent": 1}}
            for _ in range(3 * workers):  # every worker imports what a capacity batch needs
                requests.post(f"{service.url}/api/v1/optimize", json=warm,
                              headers={"X-API-Key": "bench-key"}, timeout=60)
            time.sleep(1)
            pids = service.worker_pids()
            idle = {pid: rss_kib(pid) for pid in pids}
            peak = dict(idle)
            answers: list = []
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    for pid in service.worker_pids():
                        peak[pid] = max(peak.get(pid, 0), rss_kib(pid))
                    stop.wait(0.02)

            def post():
                started = time.monotonic()
                try:
                    answer = requests.post(f"{service.url}/api/v1/optimize", json=body,
                                           headers={"X-API-Key": "bench-key"}, timeout=120)
                except requests.RequestException as exc:
                    answer = type(exc).__name__
                answers.append((answer, time.monotonic() - started))
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            posts = [threading.Thread(target=post) for _ in range(count)]
            for thread in posts:
                thread.start()
            for thread in posts:
                thread.join()
            time.sleep(2)
            stop.set()
            sampler.join()
            after = {pid: rss_kib(pid) for pid in service.worker_pids()}
        tally: dict[str, int] = {}
        for answer, _ in answers:
            kind = _outcome(answer)
            tally[kind] = tally.get(kind, 0) + 1
        replaced = len(set(pids) - set(after))

        def mib(values) -> str:
            return ", ".join(f"{v / 1024:.0f}" for v in values)
        print(f"| {name} | {', '.join(f'{v} {k}' for k, v in sorted(tally.items()))} | "
              f"{max(s for _, s in answers):.1f} | {mib(idle.values())} | {mib(peak.values())} | "
              f"{mib(after.values())} | {replaced} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--at-once", type=int, default=0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--shapes", default=",".join(str(i) for i in range(len(AT_ONCE))),
                        help="which of AT_ONCE, by index (an old tree with shape 0 takes 4 GB each)")
    args = parser.parse_args()
    if args.at_once:
        at_once(args.tree, args.at_once, args.workers, args.threads,
                [AT_ONCE[int(i)] for i in args.shapes.split(",")])
        return
    print(f"| request | status | wall s | CPU s | peak MiB | answer |  (tree: {args.tree})")
    print("|---|---|---|---|---|---|")
    for name, body in REQUESTS.items():
        r = measure(args.tree, body, args.timeout)
        print(f"| {name} | {r.get('status')} | {r.get('seconds')} | {r.get('cpu', '')} | "
              f"{r.get('peak_mib', '')} | {r.get('answer', r.get('error', ''))} |", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
