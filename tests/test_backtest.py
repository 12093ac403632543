"""The backtest's accounting on synthetic data, and a small slice of the real exports when present."""

from pathlib import Path

import numpy as np
import pytest

from tools import backtest
from tools.backtest import Scenario, simulate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "carbon-intensity"
SMALL = [Scenario("1 h, 24 h slack", 1, 24), Scenario("6 h, 24 h slack", 6, 24),
         Scenario("6 h interruptible", 6, 24, interruptible=True), Scenario("1 h, 72 h slack", 1, 72),
         Scenario("nightly +-4 h", 0.5, 8, 24, 21, 4)]


def weekly_series(weeks=10, seed=3):
    hours = np.arange(weeks * 168)
    day = 300 - 150 * np.clip(np.cos((hours % 24 - 13) / 24 * 2 * np.pi), 0, None)
    return day * np.where((hours // 24) % 7 >= 5, 0.8, 1.0) + np.random.default_rng(seed).normal(0, 5, len(hours))


@pytest.mark.parametrize("scenario", SMALL, ids=lambda s: s.name)
def test_accounting_on_synthetic_data(scenario):
    actual = weekly_series()
    perfect = simulate(actual, scenario, "perfect")
    assert perfect["realized"] == pytest.approx(perfect["oracle"])   # perfect knowledge is the oracle
    assert perfect["oracle"] < perfect["run_now"]
    for kind in ("noisy 10%", "24 h + extension", "24 h only"):
        result = simulate(actual, scenario, kind, seed=1)
        assert result["arrivals"] == perfect["arrivals"]
        assert perfect["oracle"] - 1e-6 <= result["realized"]        # nobody beats the oracle
    noisy = simulate(actual, scenario, "noisy 10%", seed=1)
    assert noisy["realized"] == simulate(actual, scenario, "noisy 10%", seed=1)["realized"]  # seeded


def test_extension_finds_the_cleaner_weekend_that_horizon_only_cannot_see():
    actual = np.tile(weekly_series(weeks=1), 10)   # the weekend (0.8x) repeats every week
    scenario = Scenario("1 h, 72 h slack", 1, 72)
    extended = simulate(actual, scenario, "24 h + extension")
    limited = simulate(actual, scenario, "24 h only")
    assert limited["realized"] > extended["realized"]
    # The estimate's error only costs a little of what the oracle saves.
    saved = extended["run_now"] - extended["realized"]
    assert saved >= 0.9 * (extended["run_now"] - extended["oracle"])


def test_table_and_chart(tmp_path):
    rows = backtest.run({"synthetic": weekly_series()}, scenarios=SMALL[:2],
                        forecasts=["perfect", "24 h only"])
    assert len(rows) == 4 and all(0 <= r["saving"] <= r["oracle"] + 1e-9 for r in rows)
    assert "synthetic" in backtest.table(rows)
    backtest.chart(rows, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not (DATA / "ES_2022_hourly.csv").exists(), reason="../shared data absent")
def test_real_slice_of_es_2022():
    actual = backtest.load_zone(DATA, "ES", [2022])[:12 * 168]
    assert len(actual) == 12 * 168 and np.isfinite(actual).all()
    rows = backtest.run({"ES 2022 slice": actual}, scenarios=SMALL)
    by = {(r["scenario"], r["forecast"]): r for r in rows}
    for scenario in SMALL:
        assert by[(scenario.name, "perfect")]["captured"] == pytest.approx(100.0)
        assert 0 < by[(scenario.name, "perfect")]["oracle"] < 100
    # Interruptible never does worse than one contiguous run with perfect knowledge.
    assert by[("6 h interruptible", "perfect")]["oracle"] >= by[("6 h, 24 h slack", "perfect")]["oracle"]
