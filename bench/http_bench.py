"""HTTP benchmark: wrk against Gunicorn (gunicorn.conf.py), real Redis, an Electricity Maps stand-in.

    .venv/bin/python bench/http_bench.py [--duration 4] [--repeat 3] [--sustain 60] [--json out.json]

In one run:
  1. Gunicorn alone: bench/ceiling_app.py's smallest WSGI app under the same gunicorn.conf.py,
     workers and threads as the product;
  2. the product (bench/ceiling_app.py's product(): the real service plus GET /bench/constant, a
     trivial endpoint through the whole stack) in one Gunicorn, warm cache: the trivial endpoint,
     GET /health, POST /api/v1/optimize with one workload and with a 50-workload batch;
     each at 1, 8, 32 and 64 connections, each point `--repeat` times: requests/s, p50 and p99
     latency, server CPU per request, non-2xx and socket errors (the median run is reported);
  3. peak resident memory (VmHWM) of every worker;
  4. a sustained run (default 60 s at 64 connections) with worker recycling off, resident memory of
     the workers before and after (growth), and one with the shipped recycling (max_requests);
  5. upstream economy: 200 concurrent cold requests for one zone, stand-in answering after 0.5 s,
     several workers: how many upstream calls (target 1).

Why repeat: wrk opens its connections at once, and a Gunicorn gthread worker accepts as many as it
can, so now and then one worker takes them all and the others idle; such a run halves throughput.
The median of three runs is the typical case; the range shows the rest.

wrk runs on the same machine as Gunicorn and takes CPU from it; on 2 cores the figures are a floor.
Needs `wrk` (Debian package) and Redis on 127.0.0.1:6379 (database 12, keys under a unique prefix,
deleted afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.optimizer_bench import machine  # noqa: E402
from bench.ceiling_app import CONSTANT_PATH  # noqa: E402
from tests.support import (  # noqa: E402
    ElectricityMapsStandIn, GunicornProcess, delete_keys, hourly_forecast,
)

REDIS_URL = "redis://127.0.0.1:6379/12"
CONNECTIONS = (1, 8, 32, 64)
ZONES = ("DE", "FR", "ES", "PL", "NL")
SINGLE = {"duration": "PT3H", "zones": ["DE"], "max_delay": "PT40H", "energy_kwh": 10}
BATCH = {"workloads": [{"id": f"job-{i}", "duration": 30 + 15 * (i % 12),
                        "zones": [ZONES[i % 5], ZONES[(i + 2) % 5]], "max_delay": f"PT{6 + i % 30}H",
                        "power_kw": 1.5} for i in range(50)]}


class AppProcess(GunicornProcess):
    """GunicornProcess for any WSGI app under the same gunicorn.conf.py."""

    def __init__(self, app_spec: str, env: dict, **kwargs):
        super().__init__(env, **kwargs)
        self.app_spec = app_spec

    def __enter__(self):
        if self.app_spec == "app:app":
            return super().__enter__()
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app_spec],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"{self.app_spec} did not start")


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wrk_lua(tmp: Path, name: str, body: dict) -> Path:
    script = tmp / f"{name}.lua"
    payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    script.write_text('wrk.method = "POST"\n'
                      'wrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = '{payload}'\n")
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, connections: int, seconds: int, script: Path | None = None) -> dict:
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency",
               "--timeout", "10s"]
    if script:
        command += ["-s", str(script)]
    out = subprocess.run(command + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    result = {"connections": connections,
              "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              "requests": int(re.search(r"(\d+) requests in", out).group(1)),
              "p50_ms": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
              "p99_ms": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
              "non_2xx": 0, "socket_errors": 0}
    if found := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        result["non_2xx"] = int(found.group(1))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result["socket_errors"] = sum(int(n) for n in found.groups())
    return result


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(master: int) -> float:
    """CPU seconds used so far by a Gunicorn master and its workers, including workers since reaped."""
    def fields(pid: int) -> list[str]:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return []
    own = fields(master)
    ticks = sum(int(v) for v in own[11:15])  # utime, stime, and reaped children's cutime, cstime
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    for pid in children:
        ticks += sum(int(v) for v in fields(int(pid))[11:13])
    return ticks / _CLOCK_TICKS


def measure(url: str, connections: int, seconds: int, script: Path | None, master: int,
            repeat: int) -> dict:
    """wrk `repeat` times; the median run by requests/s, with every run's rate and CPU per request."""
    runs = []
    for _ in range(repeat):
        before = tree_cpu_seconds(master)
        row = wrk(url, connections, seconds, script)
        row["cpu_ms_per_request"] = 1000 * (tree_cpu_seconds(master) - before) / max(1, row["requests"])
        runs.append(row)
    ordered = sorted(runs, key=lambda r: r["rps"])
    median = dict(ordered[len(ordered) // 2])
    median["rps_runs"] = [round(r["rps"]) for r in runs]
    median["non_2xx"] = sum(r["non_2xx"] for r in runs)
    median["socket_errors"] = sum(r["socket_errors"] for r in runs)
    return median


def show(label: str, row: dict, reference: dict | None = None) -> None:
    share = f"{100 * row['rps'] / reference['rps']:5.1f} % of the trivial endpoint" if reference else ""
    runs = "/".join(str(v) for v in row.get("rps_runs", []))
    cpu = f"CPU {row['cpu_ms_per_request']:.2f} ms/req  " if "cpu_ms_per_request" in row else ""
    print(f"{label:<24} c={row['connections']:<3} {row['rps']:>7.0f} req/s ({runs:<17}) p50 "
          f"{row['p50_ms']:>6.2f} ms  p99 {row['p99_ms']:>7.2f} ms  {cpu}non-2xx {row['non_2xx']}  "
          f"socket errors {row['socket_errors']}  {share}", flush=True)


def service_env(stand_in: ElectricityMapsStandIn, prefix: str, tmp: Path, **extra: str) -> dict:
    return {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "bench-key",
            "ELECTRICITY_MAPS_BASE_URL": stand_in.url, "REDIS_URL": REDIS_URL,
            "CACHE_KEY_PREFIX": prefix, "UPSTREAM_RETRIES": "0", "CACHE_TTL_SECONDS": "3600",
            "LOG_LEVEL": "WARNING", "PROMETHEUS_MULTIPROC_DIR": str(tmp / f"metrics-{uuid.uuid4().hex[:6]}"),
            # The stack's speed, not the limiter's: rate limits (on by default) would answer 429.
            "RATE_LIMIT_ENABLED": "false",
            **extra}


def economy(tmp: Path, workers: int, count: int = 200) -> dict:
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"bench-economy-{uuid.uuid4().hex[:8]}:"
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    with ElectricityMapsStandIn(delay=0.5) as stand_in:
        stand_in.responses["DE"] = (200, hourly_forecast("DE", start, [300.0 - i for i in range(72)]))
        try:
            with AppProcess("app:app", service_env(stand_in, prefix, tmp), workers=workers,
                            threads=8) as service:
                url = f"{service.url}/api/v1/optimize"
                with ThreadPoolExecutor(max_workers=count) as pool:
                    started = time.monotonic()
                    statuses = list(pool.map(
                        lambda _: requests.post(url, json=SINGLE, timeout=60).status_code, range(count)))
                    elapsed = time.monotonic() - started
            return {"requests": count, "workers": workers, "ok": statuses.count(200),
                    "upstream_calls": stand_in.upstream_calls("forecast", "DE"),
                    "seconds": round(elapsed, 2)}
        finally:
            delete_keys(client, prefix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs per point (the median is kept)")
    parser.add_argument("--sustain", type=int, default=60, help="seconds of the sustained run (0: skip)")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) * 2 + 1,
                        help="Gunicorn workers (default: gunicorn.conf.py's, cpu * 2 + 1)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    info = machine()
    print("# HTTP benchmark —", json.dumps({**info, "workers": args.workers, "threads": 4,
                                             "repeat": args.repeat, "duration_s": args.duration}))
    results: dict = {"machine": info, "workers": args.workers, "repeat": args.repeat,
                     "duration_s": args.duration}
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    tmp = Path(tempfile.mkdtemp(prefix="http-bench-"))
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    scripts = {"optimize": wrk_lua(tmp, "single", SINGLE), "batch50": wrk_lua(tmp, "batch", BATCH)}

    # 1. Gunicorn alone
    with AppProcess("bench.ceiling_app:app", {"PROMETHEUS_MULTIPROC_DIR": str(tmp / "ceiling-metrics")},
                    workers=args.workers) as process:
        results["gunicorn alone"] = []
        for c in CONNECTIONS:
            results["gunicorn alone"].append(
                measure(f"{process.url}/", c, args.duration, None, process.process.pid, args.repeat))
            show("Gunicorn alone", results["gunicorn alone"][-1])

    prefix = f"bench-http-{uuid.uuid4().hex[:8]}:"
    with ElectricityMapsStandIn() as stand_in:
        for index, zone in enumerate(ZONES):
            values = [200 + 100 * ((h + 3 * index) % 24 < 12) - h % 7 for h in range(72)]
            stand_in.responses[zone] = (200, hourly_forecast(zone, start, values))
        try:
            # 2-3. the product and its trivial endpoint in one Gunicorn, warm cache
            with AppProcess("bench.ceiling_app:product()", service_env(stand_in, prefix, tmp),
                            workers=args.workers) as service:
                for body in (SINGLE, BATCH):
                    answer = requests.post(f"{service.url}/api/v1/optimize", json=body, timeout=30)
                    assert answer.status_code == 200, answer.text
                reference: dict[int, dict] = {}
                for name, path, script in (("trivial endpoint", CONSTANT_PATH, None),
                                           ("GET /health", "/health", None),
                                           ("POST optimize x1", "/api/v1/optimize", scripts["optimize"]),
                                           ("POST optimize x50", "/api/v1/optimize", scripts["batch50"])):
                    rows = []
                    for c in CONNECTIONS:
                        rows.append(measure(f"{service.url}{path}", c, args.duration, script,
                                            service.process.pid, args.repeat))
                        if name == "trivial endpoint":
                            reference[c] = rows[-1]
                        show(name, rows[-1], None if name == "trivial endpoint" else reference[c])
                    results[name] = rows
                workers = service.worker_pids()
                results["peak_rss_kib"] = {pid: status_kib(pid, "VmHWM") for pid in workers}
                print("peak resident memory per worker (VmHWM, MiB):",
                      ", ".join(f"{v / 1024:.1f}" for v in results["peak_rss_kib"].values()))
                print("upstream calls during the load:", stand_in.upstream_calls("forecast"))

            # 4. sustained load, recycling off (growth shows) and as shipped
            if args.sustain:
                for label, extra in (("recycling off", {"GUNICORN_MAX_REQUESTS": "0"}),
                                     ("as shipped", {})):
                    with AppProcess("app:app", service_env(stand_in, prefix, tmp, **extra),
                                    workers=args.workers) as service:
                        for _ in range(3):
                            requests.post(f"{service.url}/api/v1/optimize", json=SINGLE, timeout=30)
                        subprocess.run(["wrk", "-t2", "-c64", "-d3s", "-s", str(scripts["optimize"]),
                                        f"{service.url}/api/v1/optimize"], capture_output=True)
                        pids = service.worker_pids()
                        before = {pid: status_kib(pid, "VmRSS") for pid in pids}
                        row = wrk(f"{service.url}/api/v1/optimize", 64, args.sustain, scripts["optimize"])
                        after = {pid: status_kib(pid, "VmRSS") for pid in service.worker_pids()}
                        same = [pid for pid in pids if pid in after]
                        growth = [after[p] - before[p] for p in same]
                        row.update(label=label, seconds=args.sustain,
                                   rss_before_kib=before, rss_after_kib=after,
                                   workers_replaced=len(pids) - len(same),
                                   max_growth_kib=max(growth) if growth else None)
                        results.setdefault("sustained", []).append(row)
                        show(f"sustained {args.sustain}s, {label}", row)
                        print(f"   resident MiB before {[round(v / 1024, 1) for v in before.values()]} "
                              f"after {[round(v / 1024, 1) for v in after.values()]}; workers replaced "
                              f"{row['workers_replaced']}; max growth of a surviving worker "
                              f"{(row['max_growth_kib'] or 0) / 1024:.1f} MiB", flush=True)
        finally:
            delete_keys(client, prefix)

    # 5. upstream economy
    results["economy"] = economy(tmp, workers=max(4, args.workers))
    e = results["economy"]
    print(f"upstream economy: {e['requests']} concurrent cold requests, {e['workers']} workers: "
          f"{e['ok']} answered 200, {e['upstream_calls']} upstream call(s) in {e['seconds']} s "
          f"(target 1)")

    at32 = {name: next(r for r in results[name] if r["connections"] == 32)
            for name in ("gunicorn alone", "trivial endpoint", "POST optimize x1")}
    share = at32["POST optimize x1"]["rps"] / at32["trivial endpoint"]["rps"]
    bare = at32["POST optimize x1"]["rps"] / at32["gunicorn alone"]["rps"]
    p99 = at32["POST optimize x1"]["p99_ms"]
    print(f"\ntargets at 32 connections: optimize {100 * share:.0f} % of the trivial endpoint's throughput "
          f"(target >= 50 %): {'MET' if share >= 0.5 else 'NOT MET'} ({100 * bare:.0f} % of Gunicorn "
          f"alone); p99 {p99:.1f} ms (target < 20 ms): {'MET' if p99 < 20 else 'NOT MET'}; upstream "
          f"calls {e['upstream_calls']} (target 1): {'MET' if e['upstream_calls'] == 1 else 'NOT MET'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
