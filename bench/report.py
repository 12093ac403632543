"""Markdown tables for BENCHMARKS.md from the --json outputs of cats_bench.py and http_bench.py.

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
    settings = ", ".join(f"{k}={v}" for k, v in data["settings"].items())
    print(f"Gunicorn: {data['workers']} workers x {data['threads']} threads (gunicorn.conf.py); wrk "
          f"{data['duration_s']} s x {data['repeat']} per point, interleaved; product settings: {settings}.")
    print()
    print("| provider | endpoint | connections | req/s (median) | req/s, each run | p50 (ms) | p99 (ms) "
          "| server CPU per request (ms) | non-2xx | socket errors | req/s vs plain Flask | p99 vs plain Flask |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in data["points"]:
        share = f"{100 * r['rps_vs_plain']:.0f} %" if "rps_vs_plain" in r else "—"
        p99 = f"{r['p99_vs_plain']:.2f}x" if "p99_vs_plain" in r else "—"
        runs = " / ".join(f"{v:,}" for v in r["rps_runs"])
        print(f"| {r['provider']} | {r['endpoint']} | {r['connections']} | {r['rps']:,.0f} | {runs} "
              f"| {r['p50_ms']:.2f} | {r['p99_ms']:.1f} | {r['cpu_ms_per_request']:.2f} | {r['non_2xx']} "
              f"| {r['socket_errors']} | {share} | {p99} |")
    print()
    print("| provider (optimize x1, 32 connections) | req/s vs plain Flask (target >= 50 %) | met "
          "| p99 vs plain Flask (target <= 2x) | met |")
    print("|---|---|---|---|---|")
    for t in data["targets"]:
        print(f"| {t['provider']} | {100 * t['rps_vs_plain']:.0f} % | {'**met**' if t['rps_met'] else '**not met**'} "
              f"| {t['p99_vs_plain']:.2f}x | {'**met**' if t['p99_met'] else '**not met**'} |")
    print()
    for name, peaks in data["peak_rss_kib"].items():
        print(f"Peak resident memory per worker (VmHWM), {name}:",
              ", ".join(f"{v / 1024:.1f} MiB" for v in peaks.values()))
    for r in data.get("sustained", []):
        before = [round(v / 1024, 1) for v in r["rss_before_kib"].values()]
        after = [round(v / 1024, 1) for v in r["rss_after_kib"].values()]
        print(f"\nSustained {r['seconds']} s at 64 connections, {r['provider']}, {r['label']}: {r['rps']:.0f} req/s, "
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
