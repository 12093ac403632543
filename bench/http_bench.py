"""HTTP benchmark: the product as users run it against a plain Flask app, both on gunicorn.conf.py.

    .venv/bin/python bench/http_bench.py [--quick] [--decompose] [--duration 4] [--repeat 3] [--sustain 60] [--json out.json]

In one run, three Gunicorn servers up at once, each started by the product's gunicorn.conf.py (same
workers, threads, worker class, access logger and hooks; only the WSGI app differs):
  - plain Flask (bench/plain_flask.py): one POST endpoint that parses the JSON body
    (request.get_json()) and answers a small JSON object: the reference;
  - the product (`app:app`) with the Electricity Maps provider (a stand-in on loopback, cache warm:
    no upstream call during the load);
  - the product with the demo provider (the default when no Electricity Maps key is set).
Both products run with production settings: API_KEYS set (wrk sends X-API-Key), rate limits on
(RATE_LIMIT_ENABLED=true, counters in Redis through REDIS_URL) with limits far too high to bite.

  1. POST with one workload (SINGLE) to each of the three, and POST /api/v1/optimize with a
     50-workload batch (BATCH) to each product, at 1, 8, 32 and 64 connections: wrk `--duration`
     seconds, `--repeat` times, the cases interleaved (plain, product, product, ...) so that the
     ratios compare runs made seconds apart on a shared machine; the median run by requests/s is
     kept: requests/s, p50, p99, server CPU per request (the Gunicorn processes' CPU time; Redis's
     is not counted), non-2xx and socket errors. Any non-2xx answer (a 401: the key; a 429: the
     limiter bit) or socket error makes the run invalid: it stops with an error. One exception:
     a worker recycled by max_requests during a run closes its kept-alive connections, which wrk
     counts as read errors; read errors in a run that saw a worker replaced are reported, not fatal.
  2. Targets, at 32 connections, per provider: one workload at >= 50 % of plain Flask's requests/s
     and a p99 at most 2x plain Flask's p99. (The batch's target is its server CPU, measured
     in-process by bench/request_cpu.py; its HTTP figures here are for information.)
  3. Peak resident memory (VmHWM) of every worker.
  4. A sustained run (default 60 s at 64 connections, Electricity Maps provider, production settings)
     with worker recycling off, resident memory of the workers before and after (growth), and one
     with the shipped recycling (max_requests).
  5. Upstream economy: 200 concurrent cold requests for one zone, stand-in answering after 0.5 s,
     several workers: how many upstream calls (target 1).

`--quick` (~2 min): 32 connections only, no sustained run.
`--decompose`: two more servers and rows, labelled as such and never a reference or a target: plain
Flask behind stock flask-limiter on Redis (what the design card's limiter alone costs), and the
product with its limiter off (what everything else costs): where the gap to plain Flask lies.

Why repeat: wrk opens its connections at once, and a Gunicorn gthread worker accepts as many as it
can, so now and then one worker takes them all and the others idle; such a run halves throughput.
The median of three runs is the typical case; the range shows the rest.

wrk runs on the same machine as Gunicorn and takes CPU from it; on 2 cores the figures are a floor.
Needs `wrk` (Debian package) and Redis on 127.0.0.1:6379 (database 12, keys under unique prefixes,
deleted afterwards).
"""

from __future__ import annotations

import argparse
import contextlib
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from bench.plain_flask import PATH as PLAIN_PATH  # noqa: E402
from carbon_optimizer.ops.cpu_budget import cpu_budget  # noqa: E402
from devkit.electricitymaps_stand_in import ElectricityMapsStandIn, hourly_forecast  # noqa: E402
from devkit.redis_server import delete_keys  # noqa: E402
from devkit.service_process import GunicornProcess  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/12"
CONNECTIONS = (1, 8, 32, 64)
HEADLINE = 32  # the connections at which the targets are checked
ZONES = ("DE", "FR", "ES", "PL", "NL")
SINGLE = {"duration": "PT3H", "zones": ["DE"], "max_delay": "PT40H", "energy_kwh": 10}
BATCH = {"workloads": [{"id": f"job-{i}", "duration": 30 + 15 * (i % 12),
                        "zones": [ZONES[i % 5], ZONES[(i + 2) % 5]], "max_delay": f"PT{6 + i % 30}H",
                        "power_kw": 1.5} for i in range(50)]}
OPTIMIZE = "/api/v1/optimize"
PROVIDERS = ("electricitymaps", "demo")
THREADS = 4  # gunicorn.conf.py's default (GUNICORN_THREADS)

API_KEY = "bench-api-key-0123456789abcdef"
# Production settings: keys required, the limiter on with its counters in Redis, limits that a
# load generator on one key cannot reach (a 429 would end the run).
PRODUCTION = {"API_KEYS": API_KEY, "RATE_LIMIT_ENABLED": "true",
              "RATE_LIMIT_DEFAULT": "100000000 per minute", "RATE_LIMIT_OPTIMIZE": "100000000 per minute"}
TARGET_RPS_SHARE = 0.5
TARGET_P99_RATIO = 2.0


class InvalidRun(Exception):
    pass


@dataclass
class Case:
    provider: str    # "plain Flask" for the reference
    endpoint: str    # as shown
    url: str
    body: dict
    script: Path
    server: GunicornProcess

    @property
    def label(self) -> str:
        return f"{self.provider} | {self.endpoint}"


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
                      f'wrk.headers["X-API-Key"] = "{API_KEY}"\n'
                      f"wrk.body = '{payload}'\n")
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, connections: int, seconds: int, script: Path) -> dict:
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency",
               "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
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
        result["read_errors"] = int(found.group(2))
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


def one_run(case: Case, connections: int, seconds: int) -> dict:
    master = case.server.process.pid
    before = tree_cpu_seconds(master)
    workers = set(case.server.worker_pids())
    row = wrk(case.url, connections, seconds, case.script)
    row["cpu_ms_per_request"] = 1000 * (tree_cpu_seconds(master) - before) / max(1, row["requests"])
    row["workers_replaced"] = len(workers - set(case.server.worker_pids()))
    # A worker recycled by max_requests (as shipped: 20,000 +- 2,000) closes its kept-alive
    # connections after answering, and wrk counts each as a read error: expected then, and only then.
    recycled = row["workers_replaced"] and row["socket_errors"] == row.get("read_errors", 0)
    if row["non_2xx"] or (row["socket_errors"] and not recycled):
        # wrk does not say which status: ask once more, with the same body and key, to name it.
        try:
            now = requests.post(case.url, json=case.body, headers={"X-API-Key": API_KEY}, timeout=10)
            seen = f"a request sent now answers {now.status_code}: {now.text[:200]}"
        except requests.RequestException as exc:
            seen = f"a request sent now fails: {type(exc).__name__}"
        raise InvalidRun(f"INVALID RUN: {case.label} at {connections} connections: {row['non_2xx']} "
                         f"non-2xx answers, {row['socket_errors']} socket errors ({seen}). A 401 means the "
                         f"API key, a 429 the limiter: the figures would not be the product's.")
    return row


def median_of(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["rps"])
    median = dict(ordered[len(ordered) // 2])
    median["rps_runs"] = [round(r["rps"]) for r in runs]
    median["non_2xx"] = sum(r["non_2xx"] for r in runs)
    median["socket_errors"] = sum(r["socket_errors"] for r in runs)
    median["workers_replaced"] = sum(r["workers_replaced"] for r in runs)
    return median


def show(row: dict) -> None:
    runs = "/".join(str(v) for v in row["rps_runs"])
    ratios = ""
    if "rps_vs_plain" in row:
        ratios = f"  vs plain: req/s {100 * row['rps_vs_plain']:5.1f} %, p99 {row['p99_vs_plain']:.2f}x"
    print(f"{row['provider']:<16} {row['endpoint']:<18} c={row['connections']:<3} {row['rps']:>7.0f} req/s "
          f"({runs:<17}) p50 {row['p50_ms']:>7.2f} ms  p99 {row['p99_ms']:>7.2f} ms  CPU "
          f"{row['cpu_ms_per_request']:.2f} ms/req  non-2xx {row['non_2xx']}  socket errors "
          f"{row['socket_errors']} (workers recycled {row['workers_replaced']}){ratios}", flush=True)


def product_env(provider: str, stand_in: ElectricityMapsStandIn, prefix: str, tmp: Path,
                **extra: str) -> dict:
    env = {"REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": prefix, "UPSTREAM_RETRIES": "0",
           "CACHE_TTL_SECONDS": "3600", "LOG_LEVEL": "WARNING",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp / f"metrics-{uuid.uuid4().hex[:6]}"), **PRODUCTION}
    if provider == "demo":
        env["CARBON_PROVIDER"] = "demo"
    else:
        env |= {"CARBON_PROVIDER": "electricitymaps", "ELECTRICITY_MAPS_API_KEY": "bench-key",
                "ELECTRICITY_MAPS_BASE_URL": stand_in.url}
    return env | extra


def check_production(service: GunicornProcess, store: redis.Redis, prefix: str, provider: str) -> None:
    """Fail unless the product really runs as in production: key required, limiter counting in Redis."""
    url = f"{service.url}{OPTIMIZE}"
    refused = requests.post(url, json=SINGLE, timeout=30)
    if refused.status_code != 401:
        raise InvalidRun(f"INVALID RUN: {provider}: a request without X-API-Key answered "
                         f"{refused.status_code}, not 401: API keys are not enforced")
    for body in (SINGLE, BATCH):  # also warms the cache and each path once
        answer = requests.post(url, json=body, headers={"X-API-Key": API_KEY}, timeout=30)
        if answer.status_code != 200:
            raise InvalidRun(f"INVALID RUN: {provider}: warm-up answered {answer.status_code}: "
                             f"{answer.text[:300]}")
        if "X-RateLimit-Limit" not in answer.headers:
            raise InvalidRun(f"INVALID RUN: {provider}: no X-RateLimit-Limit header: the limiter is off")
    if next(store.scan_iter(match=f"{prefix}ratelimit*", count=1000), None) is None:
        raise InvalidRun(f"INVALID RUN: {provider}: no rate-limit counter under {prefix}ratelimit in "
                         f"Redis: the limiter does not count in Redis")


def economy(tmp: Path, workers: int, count: int = 200) -> dict:
    store = redis.Redis.from_url(REDIS_URL)
    prefix = f"bench-economy-{uuid.uuid4().hex[:8]}:"
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    with ElectricityMapsStandIn(delay=0.5) as stand_in:
        stand_in.responses["DE"] = (200, hourly_forecast("DE", start, [300.0 - i for i in range(72)]))
        try:
            with GunicornProcess(product_env("electricitymaps", stand_in, prefix, tmp),
                                 workers=workers, threads=8) as service:
                url = f"{service.url}{OPTIMIZE}"
                with ThreadPoolExecutor(max_workers=count) as pool:
                    started = time.monotonic()
                    statuses = list(pool.map(
                        lambda _: requests.post(url, json=SINGLE, headers={"X-API-Key": API_KEY},
                                                timeout=60).status_code, range(count)))
                    elapsed = time.monotonic() - started
            return {"requests": count, "workers": workers, "ok": statuses.count(200),
                    "upstream_calls": stand_in.upstream_calls("forecast", "DE"),
                    "seconds": round(elapsed, 2)}
        finally:
            delete_keys(store, prefix)


def targets(points: list[dict]) -> list[dict]:
    out = []
    for provider in PROVIDERS:
        row = next((p for p in points if p["provider"] == provider and p["endpoint"] == "optimize x1"
                    and p["connections"] == HEADLINE), None)
        if row:
            out.append({"provider": provider, "connections": HEADLINE,
                        "rps_vs_plain": row["rps_vs_plain"],
                        "rps_met": row["rps_vs_plain"] >= TARGET_RPS_SHARE,
                        "p99_vs_plain": row["p99_vs_plain"],
                        "p99_met": row["p99_vs_plain"] <= TARGET_P99_RATIO})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{HEADLINE} connections only, no sustained run (~2 min)")
    parser.add_argument("--connections", type=lambda s: tuple(int(c) for c in s.split(",")),
                        help="comma-separated (default 1,8,32,64; --quick: 32)")
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs per point (the median is kept)")
    parser.add_argument("--sustain", type=int, help="seconds of the sustained run (0: skip; default 60, "
                                                    "--quick: 0)")
    parser.add_argument("--no-batch", action="store_true", help="skip the 50-workload batch")
    parser.add_argument("--workers", type=int, default=cpu_budget().workers(),
                        help="Gunicorn workers (default: gunicorn.conf.py's, 2 x usable CPUs + 1)")
    parser.add_argument("--decompose", action="store_true",
                        help="two extra, labelled rows at each point (never the reference or a target): "
                             "plain Flask behind stock flask-limiter on Redis, and the product "
                             "(Electricity Maps) with its limiter off: where the gap to plain Flask lies")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    connections = args.connections or ((HEADLINE,) if args.quick else CONNECTIONS)
    sustain = args.sustain if args.sustain is not None else (0 if args.quick else 60)
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    info = machine()
    settings = {k: v for k, v in PRODUCTION.items() if k != "API_KEYS"} | {"API_KEYS": "(one key, sent)"}
    header = {"workers": args.workers, "threads": THREADS, "repeat": args.repeat, "duration_s": args.duration,
              "connections": list(connections), "settings": settings}
    print("# HTTP benchmark —", json.dumps({**info, **header}))
    results: dict = {"machine": info, **header}
    store = redis.Redis.from_url(REDIS_URL)
    store.ping()
    tmp = Path(tempfile.mkdtemp(prefix="http-bench-"))
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    single = wrk_lua(tmp, "single", SINGLE)
    batch = wrk_lua(tmp, "batch", BATCH)
    prefixes = {p: f"bench-http-{p[:4]}-{uuid.uuid4().hex[:8]}:" for p in PROVIDERS}
    try:
        with ElectricityMapsStandIn() as stand_in, \
                GunicornProcess({"PROMETHEUS_MULTIPROC_DIR": str(tmp / "plain-metrics"), "LOG_LEVEL": "WARNING"},
                                workers=args.workers, threads=THREADS, app="bench.plain_flask:app") as plain, \
                GunicornProcess(product_env("electricitymaps", stand_in, prefixes["electricitymaps"], tmp),
                                workers=args.workers, threads=THREADS) as em, \
                GunicornProcess(product_env("demo", stand_in, prefixes["demo"], tmp),
                                workers=args.workers, threads=THREADS) as demo:
            for index, zone in enumerate(ZONES):
                values = [200 + 100 * ((h + 3 * index) % 24 < 12) - h % 7 for h in range(72)]
                stand_in.responses[zone] = (200, hourly_forecast(zone, start, values))
            products = {"electricitymaps": em, "demo": demo}
            extras = contextlib.ExitStack()
            if args.decompose:
                limiter_only = extras.enter_context(GunicornProcess(
                    {"PROMETHEUS_MULTIPROC_DIR": str(tmp / "limited-metrics"), "LOG_LEVEL": "WARNING",
                     "REDIS_URL": REDIS_URL, "LIMIT_KEY_PREFIX": prefixes["electricitymaps"] + "plain"},
                    workers=args.workers, threads=THREADS, app="bench.plain_flask:limited()"))
                no_limiter = extras.enter_context(GunicornProcess(
                    product_env("electricitymaps", stand_in, prefixes["electricitymaps"], tmp,
                                           RATE_LIMIT_ENABLED="false"),
                    workers=args.workers, threads=THREADS))
                requests.post(f"{no_limiter.url}{OPTIMIZE}", json=SINGLE, headers={"X-API-Key": API_KEY},
                              timeout=30).raise_for_status()
            for provider, service in products.items():
                check_production(service, store, prefixes[provider], provider)
            plain_answer = requests.post(f"{plain.url}{PLAIN_PATH}", json=SINGLE, timeout=10)
            assert plain_answer.status_code == 200, plain_answer.text
            upstream_before = stand_in.upstream_calls("forecast")

            # 1. interleaved: each repeat runs every case once, one after the other
            cases = [Case("plain Flask", "POST x1 (reference)", f"{plain.url}{PLAIN_PATH}", SINGLE, single,
                          plain)]
            cases += [Case(p, "optimize x1", f"{s.url}{OPTIMIZE}", SINGLE, single, s) for p, s in products.items()]
            if args.decompose:
                cases += [Case("plain Flask + flask-limiter", "POST x1 (decomposition)",
                               f"{limiter_only.url}{PLAIN_PATH}", SINGLE, single, limiter_only),
                          Case("electricitymaps, limiter off", "optimize x1 (decomposition)",
                               f"{no_limiter.url}{OPTIMIZE}", SINGLE, single, no_limiter)]
            if not args.no_batch:
                cases += [Case(p, "optimize x50", f"{s.url}{OPTIMIZE}", BATCH, batch, s) for p, s in products.items()]
            points = []
            for c in connections:
                runs: dict[str, list[dict]] = {case.label: [] for case in cases}
                for _ in range(args.repeat):
                    for case in cases:
                        runs[case.label].append(one_run(case, c, args.duration))
                reference = None
                for case in cases:
                    row = {"provider": case.provider, "endpoint": case.endpoint, **median_of(runs[case.label])}
                    if case.server is plain:
                        reference = row
                    elif case.endpoint in ("optimize x1", "POST x1 (decomposition)",
                                           "optimize x1 (decomposition)"):
                        row["rps_vs_plain"] = row["rps"] / reference["rps"]
                        row["p99_vs_plain"] = row["p99_ms"] / reference["p99_ms"]
                    points.append(row)
                    show(row)
            extras.close()
            results["points"] = points
            results["targets"] = targets(points)
            results["upstream_calls_during_load"] = stand_in.upstream_calls("forecast") - upstream_before

            # 3. memory
            results["peak_rss_kib"] = {
                name: {pid: status_kib(pid, "VmHWM") for pid in server.worker_pids()}
                for name, server in (("plain Flask", plain), *products.items())}
            for name, peaks in results["peak_rss_kib"].items():
                print(f"peak resident memory per worker (VmHWM, MiB), {name}:",
                      ", ".join(f"{v / 1024:.1f}" for v in peaks.values()))
            print("upstream calls during the load:", results["upstream_calls_during_load"])

        # 4. sustained load, recycling off (growth shows) and as shipped
        if sustain:
            with ElectricityMapsStandIn() as stand_in:
                for index, zone in enumerate(ZONES):
                    values = [200 + 100 * ((h + 3 * index) % 24 < 12) - h % 7 for h in range(72)]
                    stand_in.responses[zone] = (200, hourly_forecast(zone, start, values))
                for label, extra in (("recycling off", {"GUNICORN_MAX_REQUESTS": "0"}), ("as shipped", {})):
                    prefix = prefixes["electricitymaps"]
                    with GunicornProcess(product_env("electricitymaps", stand_in, prefix, tmp, **extra),
                                         workers=args.workers, threads=THREADS) as service:
                        check_production(service, store, prefix, "electricitymaps")
                        case = Case("electricitymaps", f"sustained, {label}", f"{service.url}{OPTIMIZE}",
                                    SINGLE, single, service)
                        subprocess.run(["wrk", "-t2", "-c64", "-d3s", "-s", str(single), case.url],
                                       capture_output=True)
                        pids = service.worker_pids()
                        before = {pid: status_kib(pid, "VmRSS") for pid in pids}
                        row = one_run(case, 64, sustain)
                        after = {pid: status_kib(pid, "VmRSS") for pid in service.worker_pids()}
                        same = [pid for pid in pids if pid in after]
                        growth = [after[p] - before[p] for p in same]
                        row.update(provider=case.provider, endpoint=case.endpoint, label=label,
                                   seconds=sustain, rps_runs=[round(row["rps"])],
                                   rss_before_kib=before, rss_after_kib=after,
                                   workers_replaced=len(pids) - len(same),
                                   max_growth_kib=max(growth) if growth else None)
                        results.setdefault("sustained", []).append(row)
                        show(row)
                        print(f"   resident MiB before {[round(v / 1024, 1) for v in before.values()]} "
                              f"after {[round(v / 1024, 1) for v in after.values()]}; workers replaced "
                              f"{row['workers_replaced']}; max growth of a surviving worker "
                              f"{(row['max_growth_kib'] or 0) / 1024:.1f} MiB", flush=True)
    except InvalidRun as exc:
        print(f"\n{exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for prefix in prefixes.values():
            delete_keys(store, prefix)

    # 5. upstream economy
    results["economy"] = economy(tmp, workers=max(4, args.workers))
    e = results["economy"]
    print(f"upstream economy: {e['requests']} concurrent cold requests, {e['workers']} workers: "
          f"{e['ok']} answered 200, {e['upstream_calls']} upstream call(s) in {e['seconds']} s "
          f"(target 1)")

    print(f"\ntargets at {HEADLINE} connections, POST {OPTIMIZE} with one workload, production settings, "
          f"against plain Flask in the same run:")
    for t in results["targets"]:
        print(f"  {t['provider']:<16} req/s {100 * t['rps_vs_plain']:.0f} % of plain Flask (target >= "
              f"{100 * TARGET_RPS_SHARE:.0f} %): {'MET' if t['rps_met'] else 'NOT MET'}; p99 "
              f"{t['p99_vs_plain']:.2f}x plain Flask's (target <= {TARGET_P99_RATIO:g}x): "
              f"{'MET' if t['p99_met'] else 'NOT MET'}")
    if not results["targets"]:
        print(f"  not checked: {HEADLINE} connections were not measured")
    print(f"  upstream calls {e['upstream_calls']} (target 1): {'MET' if e['upstream_calls'] == 1 else 'NOT MET'}")
    print("  the 50-workload batch's server CPU target is checked in-process: bench/request_cpu.py")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
