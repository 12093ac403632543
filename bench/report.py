"""Markdown tables for BENCHMARKS.md from the --json outputs of optimizer_bench.py and http_bench.py.

    .venv/bin/python bench/report.py opt.json http.json
"""

import json
import sys


def optimizer(data: dict) -> None:
    def pct(x: float) -> str:
        return f"{x + 0.0:+.2f} %".replace("+-0.00", "+0.00").replace("-0.00", "+0.00")

    print("| step | horizon | job | zones | points | ours (ms) | NumPy grid, loop (ms) | NumPy grid, stacked (ms) "
          "| **ours / NumPy grid** | CATS (ms) | CATS / ours | same window as CATS | ours: start (min) "
          "| CATS: start (min) | CATS's pick, held model | ours, linear model | NumPy grid's pick, held model |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in data["rows"]:
        stacked = r.get("grid_stacked_ms")
        flag = " (over 2x)" if r["ours_vs_grid"] > 2 else ""
        print(f"| {r['step_min']} min | {r['horizon_h']} h | {r['job_h']} h | {r['zones']} | {r['points']} "
              f"| {r['ours_ms']:.4f} | {r.get('grid_loop_ms', r['grid_ms']):.4f} "
              f"| {'—' if stacked is None else f'{stacked:.4f}'} | **{r['ours_vs_grid']:.2f}x**{flag} "
              f"| {r['cats_ms']:.2f} | {r['ratio']:.0f}x | {'yes' if r['same_window'] else 'no'} "
              f"| +{r['ours_start_offset_min']} (zone {r['ours_zone']}) "
              f"| +{r['cats_start_offset_min']} (zone {r['cats_zone']}) | {pct(r['cats_regret_%'])} "
              f"| {pct(r['ours_regret_linear_%'])} | {pct(r['grid_regret_%'])} |")


def http(data: dict) -> None:
    reference = {r["connections"]: r for r in data["trivial endpoint"]}
    print("| endpoint | connections | req/s (median) | req/s, each run | p50 (ms) | p99 (ms) "
          "| CPU per request (ms) | share of the trivial endpoint | non-2xx | socket errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("gunicorn alone", "trivial endpoint", "GET /health", "POST optimize x1",
                 "POST optimize x50"):
        for r in data[name]:
            share = ("—" if name in ("gunicorn alone", "trivial endpoint")
                     else f"{100 * r['rps'] / reference[r['connections']]['rps']:.0f} %")
            label = {"gunicorn alone": "Gunicorn alone (bare WSGI app)",
                     "trivial endpoint": "trivial endpoint (product stack)"}.get(name, name)
            runs = " / ".join(f"{v:,}" for v in r["rps_runs"])
            print(f"| {label} | {r['connections']} | {r['rps']:,.0f} | {runs} | {r['p50_ms']:.2f} "
                  f"| {r['p99_ms']:.1f} | {r['cpu_ms_per_request']:.2f} | {share} | {r['non_2xx']} "
                  f"| {r['socket_errors']} |")
    print()
    print("Peak resident memory per worker (VmHWM):",
          ", ".join(f"{v / 1024:.1f} MiB" for v in data["peak_rss_kib"].values()))
    for r in data.get("sustained", []):
        before = [round(v / 1024, 1) for v in r["rss_before_kib"].values()]
        after = [round(v / 1024, 1) for v in r["rss_after_kib"].values()]
        print(f"\nSustained {r['seconds']} s at 64 connections, {r['label']}: {r['rps']:.0f} req/s, "
              f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, non-2xx {r['non_2xx']}, socket errors "
              f"{r['socket_errors']}; resident MiB before {before}, after {after}; workers replaced "
              f"{r['workers_replaced']}; largest growth of a surviving worker "
              f"{(r['max_growth_kib'] or 0) / 1024:.1f} MiB.")
    e = data["economy"]
    print(f"\nUpstream economy: {e['requests']} concurrent cold requests, {e['workers']} workers: "
          f"{e['ok']} answered 200, **{e['upstream_calls']} upstream call** ({e['seconds']} s in all).")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        data = json.load(open(path))
        print(f"\n<!-- {path}: {json.dumps(data['machine'])} -->\n")
        (optimizer if "rows" in data else http)(data)
