"""The backtest measures the engine's answers: exactly, against brute force written here, and only
through CarbonEngine.optimize (no private search to drift from what the service answers)."""

from dataclasses import replace
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from carbon_optimizer.data.providers.replay import ReplayProvider
from carbon_optimizer.engine import CarbonEngine
from carbon_optimizer.scheduling.model import Job
from carbon_optimizer.timeseries import ForecastSeries, to_epoch
from tools import backtest, backtest_report
from tools.backtest import Case, Dataset, ForecastKind, simulate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "carbon-intensity"
HOUR = 3600
START = datetime(2022, 3, 7, tzinfo=timezone.utc)   # a Monday
T0 = to_epoch(START)
PERFECT = ForecastKind("perfect", None)
SMALL_CASES = [
    Case("1 h, 24 h slack", HOUR, 24 * HOUR),
    Case("3 h, 10 h slack", 3 * HOUR, 10 * HOUR),
    Case("30 min, 5 h slack, reference 2 h late", 1800, 5 * HOUR, reference_delay=2 * HOUR),
    Case("3 h interruptible, 8 h slack", 3 * HOUR, 8 * HOUR, interruptible=True),
    Case("daily at 22:00, 2 h, 6 h slack", 2 * HOUR, 6 * HOUR, daily_at=22),
]


def synthetic(days=12, seed=7, zone="XX"):
    """Hourly values with a daily valley, noise, and a cleaner weekend: nothing like a constant."""
    hours = np.arange(days * 24)
    daily = 300 - 120 * np.clip(np.cos((hours % 24 - 13) / 24 * 2 * np.pi), 0, None)
    weekend = np.where((hours // 24) % 7 >= 5, 0.6, 1.0)
    values = np.round(daily * weekend + np.random.default_rng(seed).normal(0, 25, len(hours)), 1)
    return ForecastSeries(zone=zone, start=START, step_seconds=HOUR, values=values, provider="test")


def dataset(series, days=5):
    begin = series.start_epoch
    return Dataset("synthetic", series.zone, begin, begin + days * 86400, series.end_epoch)


def brute_force(values, case, now):
    """The least emissions (gCO2eq/kWh x s) for one arrival, by enumeration on a minute grid."""
    per_minute = np.repeat(values, 60)                 # the hourly series, minute by minute
    first = (now - T0) // 60
    minutes, slack = case.duration // 60, case.slack // 60
    if case.interruptible:                              # every set of whole hours in the window
        hours = values[first // 60:(first + slack + minutes) // 60]
        return min(sum(c) for c in combinations(hours, minutes // 60)) * HOUR
    return min(per_minute[m:m + minutes].sum() * 60 for m in range(first, first + slack + 1))


@pytest.mark.parametrize("case", SMALL_CASES, ids=lambda c: c.name)
def test_with_a_perfect_forecast_realized_emissions_are_the_brute_force_optimum(case):
    series = synthetic()
    recorded = ReplayProvider({"XX": series})
    result = simulate(recorded, dataset(series), case, PERFECT, every=5)
    times = backtest.arrivals(dataset(series), case, 5)
    assert result.jobs == len(times) >= 4
    expected = np.array([brute_force(series.values, case, now) for now in times.tolist()])
    assert result.realized == pytest.approx(expected, rel=1e-12)
    assert result.oracle == pytest.approx(expected, rel=1e-12)       # the measuring stick too
    at_once = [(now + case.reference_delay - T0) // 60 for now in times.tolist()]
    by_hand = [np.repeat(series.values, 60)[m:m + case.duration // 60].sum() * 60 for m in at_once]
    assert result.reference == pytest.approx(by_hand, rel=1e-12)
    assert result.unscheduled == 0
    summary = result.summary()
    assert summary["captured"] == pytest.approx(100.0) and summary["worse"] == 0.0
    assert summary["oracle"] > 0


@pytest.mark.parametrize("kind", [ForecastKind("noisy 20%", None, noise=0.2),
                                  ForecastKind("6 h + extension", 6),
                                  ForecastKind("6 h only", 6, extend_horizon=False)],
                         ids=lambda k: k.name)
def test_imperfect_forecasts_never_beat_the_oracle_and_sometimes_lose(kind):
    series = synthetic()
    result = simulate(ReplayProvider({"XX": series}), dataset(series), SMALL_CASES[0], kind, every=5)
    assert np.all(result.realized >= result.oracle * (1 - 1e-12))
    assert np.any(result.realized > result.oracle * (1 + 1e-6))   # the forecast kind matters


def test_the_backtest_asks_the_engine_once_per_arrival_and_measures_its_answer(monkeypatch):
    calls = []
    real_optimize = CarbonEngine.optimize

    def spy(self, jobs, now, capacity=None):
        calls.append((jobs, now, self.provider))
        return real_optimize(self, jobs, now, capacity)
    monkeypatch.setattr(CarbonEngine, "optimize", spy)
    series = synthetic()
    case, kind = SMALL_CASES[1], ForecastKind("4 h only", 4, extend_horizon=False)
    simulate(ReplayProvider({"XX": series}), dataset(series), case, kind, every=5)
    times = backtest.arrivals(dataset(series), case, 5).tolist()
    assert [to_epoch(now) for _, now, _ in calls] == times
    for (jobs, now, provider), arrival in zip(calls, times):
        assert len(jobs) == 1 and jobs[0].earliest_start == arrival
        assert jobs[0].latest_start == arrival + case.slack and jobs[0].zones == ("XX",)
        assert jobs[0].extend_horizon is False
        assert provider.name == "replay" and provider.forecast_hours == 4

    # What is measured is what the answer says: an answer that always starts last costs exactly that.
    monkeypatch.setattr(CarbonEngine, "optimize", real_optimize)
    monkeypatch.setattr(backtest, "chosen_intervals",
                        lambda outcome: [(outcome.job.latest_start,
                                          outcome.job.latest_start + outcome.job.duration)])
    latest = simulate(ReplayProvider({"XX": series}), dataset(series), case, kind, every=5)
    truth = backtest.Truth(series)
    assert latest.realized == pytest.approx(
        [truth.emissions([(t + case.slack, t + case.slack + case.duration)]) for t in times])


def test_an_answer_outside_the_allowed_window_is_refused(monkeypatch):
    series = synthetic()
    monkeypatch.setattr(backtest, "chosen_intervals",
                        lambda outcome: [(outcome.job.latest_start + HOUR,
                                          outcome.job.latest_start + HOUR + outcome.job.duration)])
    with pytest.raises(backtest.InvalidAnswer):
        simulate(ReplayProvider({"XX": series}), dataset(series), SMALL_CASES[1], PERFECT)


def test_chosen_intervals_reads_the_typed_answer():
    series = synthetic()
    engine = CarbonEngine(ReplayProvider({"XX": series}, forecast_hours=30), backtest.new_cache())
    now = START.replace(hour=3)
    job = Job(duration=3 * HOUR, zones=("XX",), earliest_start=to_epoch(now),
                       latest_start=to_epoch(now) + 20 * HOUR, interruptible=True)
    schedule = engine.optimize([job], now)[0]
    assert backtest.chosen_intervals(schedule) == [tuple(i) for i in schedule.intervals]
    assert sum(b - a for a, b in backtest.chosen_intervals(schedule)) == 3 * HOUR
    too_late = Job(duration=HOUR, zones=("XX",), earliest_start=to_epoch(now) + 40 * HOUR,
                            latest_start=to_epoch(now) + 41 * HOUR, extend_horizon=False)
    assert backtest.chosen_intervals(engine.optimize([too_late], now)[0]) == []


def test_report_keeps_the_prose_around_the_generated_part(tmp_path):
    series = synthetic()
    rows = backtest.run(ReplayProvider({"XX": series}), [dataset(series)], cases=SMALL_CASES[:2],
                        forecasts=[PERFECT, ForecastKind("6 h only", 6, extend_horizon=False)])
    assert [(r["case"], r["forecast"]) for r in rows] == [
        (c.name, k) for c in SMALL_CASES[:2] for k in ("perfect", "6 h only")]
    meta = {"command": "x", "date": "d", "machine": "m", "seconds": 1.0, "calls": 2,
            "commit": "c", "every": 5, "days": None}
    doc = tmp_path / "backtest.md"
    doc.write_text(f"# Title\n\nprose before\n\n{backtest_report.BEGIN}\nold\n{backtest_report.END}\n\nprose after\n")
    backtest_report.write_doc(doc, rows, meta, "chart.png")
    backtest_report.write_doc(doc, rows, meta, "chart.png")
    text = doc.read_text()
    assert text.startswith("# Title\n\nprose before\n\n") and text.endswith("\n\nprose after\n")
    assert text.count(backtest_report.BEGIN) == 1 and "old" not in text
    assert "### 1 h, 24 h slack" in text and "| synthetic | 6 h only |" in text
    backtest_report.chart(rows, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not (DATA / "ES_2022_hourly.csv").exists(), reason="../shared data absent")
def test_a_short_run_on_the_exports(tmp_path):
    doc, png = tmp_path / "backtest.md", tmp_path / "backtest.png"
    assert backtest.main(["--data", str(DATA), "--zones", "ES", "--years", "2022", "--days", "10",
                          "--every", "11", "--workers", "1", "--doc", str(doc), "--png", str(png)]) == 0
    text = doc.read_text()
    assert "Electricity Maps (electricitymaps.com), ODbL" in text
    sections = {part.split("\n", 1)[0]: part for part in text.split("\n### ")[1:]}
    for case in backtest.CASES:
        rows = [line.split("|")[1:-1] for line in sections[case.name].splitlines()
                if line.startswith("| ES 2022 |")]
        assert [r[1].strip() for r in rows] == [k.name for k in backtest.FORECASTS]
        jobs, oracle, ours, captured = rows[0][2:6]
        assert int(jobs) >= 9 and float(oracle) > 0
        assert float(ours) == float(oracle) and captured.strip() == "100.0"   # perfect: the optimum
        assert all(float(r[4]) <= float(oracle) + 1e-9 for r in rows)        # nobody beats it
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("starts_in", [None, 3 * HOUR])  # None: at the latest start
def test_asking_again_follows_replan_at_and_keeps_the_later_answer(monkeypatch, starts_in):
    """The "asking again" kind re-asks at replan_at while it comes no later than the answer's
    start, with what is left of the window, as `carbon-optimizer wait` does; the last answer is
    measured."""
    calls = []
    real_optimize = CarbonEngine.optimize

    def spy(self, jobs, now, capacity=None):
        outcome = real_optimize(self, jobs, now, capacity)[0]
        calls.append((jobs[0], to_epoch(now), outcome))
        if len(calls) == 1:  # the first answer: start later, ask again in 3 h
            start = jobs[0].latest_start if starts_in is None else to_epoch(now) + starts_in
            outcome = replace(outcome, intervals=((start, start + jobs[0].duration),),
                              coverage=replace(outcome.coverage, replan_at=to_epoch(now) + 3 * HOUR))
        return [outcome]
    monkeypatch.setattr(CarbonEngine, "optimize", spy)
    series = synthetic()
    case = Case("1 h, 24 h slack", HOUR, 24 * HOUR)
    kind = ForecastKind("6 h + extension, asking again", 6, extend_horizon=True, replan=True)
    result = simulate(ReplayProvider({"XX": series}), dataset(series, days=1), case, kind, every=100)
    first, second = calls[0], calls[1]
    # A question reaches the service a moment after the time it was asked for, as a real one does.
    assert first[1] + 3 * HOUR < second[1] <= first[1] + 3 * HOUR + 5
    assert second[0].earliest_start == second[1]
    assert second[0].latest_start == first[0].latest_start
    truth = backtest.Truth(series)
    assert result.realized[0] == pytest.approx(truth.emissions(backtest.chosen_intervals(calls[-1][2])))
    assert result.asks[0] == len(calls) - 1 and result.summary()["asks_max"] == len(calls) - 1


def test_targets_are_judged_per_client_and_name_the_zone_year_that_misses():
    from tools.backtest_report import targets

    def row(data, case, kind, captured, saving, worse):
        return {"data": data, "case": case, "forecast": kind, "captured": captured, "saving": saving,
                "worse": worse}
    case = "1 h job, 72 h slack"
    rows = [row("A 2021", case, "24 h + extension, asking again", 90.0, 30.0, 1.2),
            row("A 2021", case, "24 h only, asking again", 89.0, 29.9, 0.0),
            row("B 2021", case, "24 h + extension, asking again", 84.0, 20.0, 0.1),
            row("B 2021", case, "24 h only, asking again", 84.0, 20.1, 0.0),
            row("A 2021", case, "24 h + extension", 70.0, 25.0, 0.0),
            row("A 2021", case, "24 h only", 70.0, 25.0, 0.0)]
    asking, first = targets(rows)
    assert "asking again at replan_at" in asking and "87.0%" in asking and "goal ≥ 85%: met" in asking
    assert "saves LESS than horizon only in some zone-year" in asking and "+1.2 points" in asking and "(A 2021;" in asking
    assert "goal ≤ +1.0: NOT met" in asking
    assert "taking the first answer" in first and "NOT met, short by 15.0 points" in first
    assert "never saves less" in first and "goal ≤ +1.0: met" in first


def test_someone_elses_export_with_other_zones_years_and_a_finer_step(tmp_path):
    """--data, --zones, --years, --cases and --forecasts on a directory of another export: a zone
    and year not in ../shared, 15-minute points; the report names them and states the coverage."""
    data = tmp_path / "export"
    data.mkdir()
    start = datetime(2023, 1, 1, tzinfo=timezone.utc)
    quarter = np.arange(20 * 96)
    values = 250 + 90 * np.cos((quarter % 96 - 52) / 96 * 2 * np.pi) + \
        np.random.default_rng(5).normal(0, 15, len(quarter))
    rows = ["Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
            "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
            "Data Source,Data Estimated,Data Estimation Method"]
    for q, value in zip(quarter.tolist(), values.tolist()):
        moment = datetime.fromtimestamp(to_epoch(start) + q * 900, timezone.utc)
        rows.append(f"{moment:%Y-%m-%d %H:%M:%S},Somewhere,Somewhere,ZZ-NORTH,{value * 0.8:.2f},"
                    f"{value:.2f},50,40,test,false,")
    (data / "ZZ-NORTH_2023_15_minutes.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    doc, png = tmp_path / "b.md", tmp_path / "b.png"
    assert backtest.main(["--data", str(data), "--zones", "ZZ-NORTH", "--years", "2023", "--days", "14",
                          "--every", "13", "--workers", "1", "--cases", "1 h job, 24", "6 h job, 72",
                          "--forecasts", "24 h", "--doc", str(doc), "--png", str(png)]) == 0
    text = doc.read_text()
    assert "| ZZ-NORTH 2023 | 24 h + extension |" in text and "### 6 h job, 72 h slack" in text
    assert "### 24 h job" not in text and "| ZZ-NORTH 2023 | perfect |" not in text
    assert "truth within stated error %" in text
    with pytest.raises(SystemExit):
        backtest.main(["--data", str(data), "--zones", "ZZ-NORTH", "--years", "2023",
                       "--cases", "no such case", "--doc", "", "--png", str(png)])


def test_the_report_states_realised_coverage_and_the_worse_share_target_per_zone_year():
    from tools.backtest_report import realised_coverage, worse_share

    def row(data, case, kind, worse, on, within):
        return {"data": data, "case": case, "forecast": kind, "worse": worse, "on_estimates": on,
                "within_error": within}
    rows = [row("A 2021", "c1", "24 h + extension, asking again", 1.4, 40, 75.0),
            row("A 2021", "c1", "24 h only, asking again", 0.2, 0, float("nan")),
            row("B 2021", "c1", "24 h + extension, asking again", 0.5, 10, 100.0),
            row("B 2021", "c1", "24 h only, asking again", 0.0, 0, float("nan"))]
    note = worse_share(rows)[0]
    assert "in 1 of 2 zone-year cases: NOT met in A 2021, c1 (+1.2)" in note
    coverage = realised_coverage(rows)[0]
    # 30 + 10 within of 50 answers; only A 2021 has enough answers to be named per case.
    assert "for 80.0% of 50 answers" in coverage and "75.0–75.0%" in coverage
    assert "1 of 1 such cases more than 5 points below 90%" in coverage
