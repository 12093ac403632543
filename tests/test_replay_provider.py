"""ReplayProvider reveals exactly what was known at `now`: checked against a small hand-made series."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from carbon_optimizer.errors import NotRecorded, UpstreamUnavailable, ZoneNotFound
from carbon_optimizer.data.providers.replay import ReplayProvider
from carbon_optimizer.timeseries import ForecastSeries, to_epoch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "carbon-intensity"
START = datetime(2022, 3, 1, tzinfo=timezone.utc)
# Value i holds for hour i after START and equals 100 + i, so every revealed value names its hour.
VALUES = 100.0 + np.arange(60)


def recording(step_hours=1, values=VALUES):
    return {"XX": ForecastSeries(zone="XX", start=START, step_seconds=3600 * step_hours,
                                 values=np.array(values, dtype=float), provider="test")}


def hours_of(series):
    """(first hour index, hour indices revealed) read back from the values and checked against
    the series' own timing."""
    indices = [int(v - 100) for v in series.values]
    first = (to_epoch(series.start) - to_epoch(START)) // 3600
    assert indices == list(range(first, first + len(indices)))
    return indices


@pytest.mark.parametrize("offset", [
    timedelta(hours=5),                              # on the hour
    timedelta(hours=5, minutes=30),                  # half past
    timedelta(hours=5, minutes=59, seconds=59),      # a second before the next hour
    timedelta(hours=5, seconds=1),
    timedelta(hours=5, minutes=17, seconds=31),
])
@pytest.mark.parametrize("horizon", [1, 3, 24])
def test_forecast_reveals_the_hour_holding_now_up_to_the_horizon(offset, horizon):
    now = START + offset
    series = ReplayProvider(recording(), forecast_hours=horizon).forecast("XX", now)
    # By hand: hour 5 holds `now`; hour k ends at k + 1, revealed when that is by 5:xx + horizon,
    # so the last is 5 + horizon - 1 whatever the minutes and seconds.
    assert hours_of(series) == list(range(5, 5 + horizon))
    assert series.start <= now < series.end
    assert series.end_epoch <= to_epoch(now) + horizon * 3600       # nothing past the horizon
    assert series.provider == "replay" and series.zone == "XX"


def test_a_horizon_shorter_than_the_rest_of_the_hour_still_reveals_the_hour_holding_now():
    now = START + timedelta(hours=7, minutes=10)
    series = ReplayProvider(recording(), forecast_hours=0.5).forecast("XX", now)
    assert hours_of(series) == [7]


def test_forecast_stops_where_the_recording_stops():
    now = START + timedelta(hours=55, minutes=3)
    assert hours_of(ReplayProvider(recording(), forecast_hours=24).forecast("XX", now)) == \
        [55, 56, 57, 58, 59]


@pytest.mark.parametrize("offset,expected", [
    (timedelta(hours=5), [2, 3, 4]),                  # hour 5 starts at now: not history yet
    (timedelta(hours=5, minutes=30), [2, 3, 4]),      # hour 5 holds now: not over yet
    (timedelta(hours=5, minutes=59, seconds=59), [2, 3, 4]),
    (timedelta(hours=6), [3, 4, 5]),
    (timedelta(hours=2), [0, 1]),                     # less than the span recorded
    (timedelta(minutes=40), None),                    # nothing has ended yet
])
def test_history_is_strictly_before_now(offset, expected):
    now = START + offset
    series = ReplayProvider(recording(), history_hours=3).history("XX", now)
    if expected is None:
        assert series is None
        return
    assert hours_of(series) == expected
    assert series.end_epoch <= to_epoch(now)


def test_default_history_is_ten_days_at_most():
    long = 100.0 + np.arange(400)
    series = ReplayProvider(recording(values=long)).history("XX", START + timedelta(hours=300))
    # Ten days: what one Electricity Maps past-range call answers, so replay sees what production does.
    assert len(series.values) == 240 and series.values[-1] == 100 + 299


def test_steps_other_than_an_hour():
    # Two-hour points: value i holds hours 2i and 2i+1.
    provider = ReplayProvider(recording(step_hours=2, values=[10, 20, 30, 40, 50]), forecast_hours=5,
                              history_hours=4)
    now = START + timedelta(hours=3, minutes=15)      # inside point 1 (hours 2-3)
    # The horizon ends at 8:15: points 1, 2 and 3 end by then (at 4, 6, 8 h), point 4 does not.
    assert list(provider.forecast("XX", now).values) == [20, 30, 40]
    assert list(provider.history("XX", now).values) == [10]


def test_unknown_zone_and_moments_outside_the_recording():
    provider = ReplayProvider(recording())
    with pytest.raises(ZoneNotFound):
        provider.forecast("YY", START)
    with pytest.raises(ZoneNotFound):
        provider.history("YY", START)
    # Final, not passing: asking again about a moment the recording lacks will not help.
    with pytest.raises(NotRecorded) as outside:
        provider.forecast("XX", START - timedelta(seconds=1))
    assert not outside.value.transient and outside.value.code.status == 422
    with pytest.raises(NotRecorded):
        provider.forecast("XX", START + timedelta(hours=60))
    assert not ZoneNotFound("YY", "").transient and UpstreamUnavailable("XX", "").transient
    assert provider.name == "replay" and provider.shared_cache is False


def test_noise_is_seeded_per_zone_and_issue_hour_and_scaled_to_the_zone_mean():
    flat = recording(values=np.full(200, 300.0))
    noisy = ReplayProvider(flat, forecast_hours=24, noise=0.05, seed=1)
    a = noisy.forecast("XX", START + timedelta(hours=10))
    again = noisy.forecast("XX", START + timedelta(hours=10, minutes=20))    # same issue hour
    later = noisy.forecast("XX", START + timedelta(hours=11))
    assert np.array_equal(a.values, again.values[:len(a.values)])
    assert not np.array_equal(a.values[1:], later.values[:-1])               # independent errors
    other_seed = ReplayProvider(flat, forecast_hours=24, noise=0.05, seed=2)
    assert not np.array_equal(a.values, other_seed.forecast("XX", START + timedelta(hours=10)).values)
    errors = np.concatenate([noisy.forecast("XX", START + timedelta(hours=h)).values - 300.0
                             for h in range(0, 170, 7)])
    assert 0.03 * 300 < errors.std() < 0.07 * 300 and abs(errors.mean()) < 0.02 * 300
    # History is measured, not forecast: no noise.
    assert np.all(noisy.history("XX", START + timedelta(hours=50)).values == 300.0)


def test_gap_flags_follow_the_slice():
    values = 100.0 + np.arange(10)
    series = ForecastSeries(zone="XX", start=START, step_seconds=3600, values=values, provider="test",
                            estimated=np.array([False] * 6 + [True] + [False] * 3))
    provider = ReplayProvider({"XX": series}, forecast_hours=3)
    assert list(provider.forecast("XX", START + timedelta(hours=5)).estimated) == [False, True, False]
    assert provider.forecast("XX", START + timedelta(hours=1)).estimated is None


@pytest.mark.skipif(not (DATA / "ES_2022_hourly.csv").exists(), reason="../shared data absent")
def test_from_the_data_portal_exports(tmp_path):
    # One export alone, linked into a directory (read by path, never copied into the repository).
    (tmp_path / "ES_2022_hourly.csv").symlink_to(DATA / "ES_2022_hourly.csv")
    provider = ReplayProvider.from_directory(tmp_path)
    assert provider.zones() == ["ES"]
    now = datetime(2022, 6, 1, 12, 30, 5, tzinfo=timezone.utc)
    forecast = provider.forecast("ES", now)
    assert forecast.start == datetime(2022, 6, 1, 12, tzinfo=timezone.utc)
    assert len(forecast.values) == 24 and forecast.end_epoch <= to_epoch(now) + 24 * 3600
    truth = provider.recorded("ES")
    index = (to_epoch(forecast.start) - truth.start_epoch) // 3600
    assert np.array_equal(forecast.values, truth.values[index:index + 24])
