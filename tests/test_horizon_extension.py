"""Estimates past a forecast's horizon from the zone's own data: shape, provenance, exactness on
periodic data, and an error measure that predicts the error on data it has not seen."""

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from carbon_optimizer.scheduling.horizon import (
    estimated_span, extend_series, measured_error, replan_at, window_error,
)
from carbon_optimizer.timeseries import ForecastSeries, to_epoch

HOUR = 3600
MONDAY = datetime(2026, 11, 23, tzinfo=timezone.utc)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "carbon-intensity"


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(1, 900), min_size=1, max_size=80), extra=st.integers(1, 200),
       step=st.sampled_from([900, 1800, 3600]))
def test_extension_keeps_the_forecast_and_marks_only_the_new_points(values, extra, step):
    series = ForecastSeries("ES", MONDAY, step, np.array(values), "demo")
    until = series.end_epoch + extra * 600
    extension = extend_series(series, until)
    extended = extension.series
    assert extended.end_epoch >= until and extended.end_epoch - step < until
    assert np.array_equal(extended.values[:len(values)], values)
    mask = extended.estimated_mask()
    assert not mask[:len(values)].any() and mask[len(values):].all()
    assert np.isfinite(extended.values).all() and (extended.values > 0).all()
    assert len(extension.error) == mask.sum()


def test_a_zone_that_repeats_its_day_is_extended_exactly_with_no_error():
    daily = 200 + 100 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    history = ForecastSeries("XX", MONDAY, HOUR, np.tile(daily, 4), "test")
    forecast = ForecastSeries("XX", datetime(2026, 11, 27, tzinfo=timezone.utc), HOUR, daily.copy(), "test")
    extension = extend_series(forecast, forecast.end_epoch + 72 * HOUR, history)
    assert extension.series.values[24:] == pytest.approx(np.tile(daily, 3))
    assert extension.error == pytest.approx(np.zeros(72), abs=1e-9)


def test_estimates_come_from_the_zones_own_history():
    # Two zones with the same forecast day and different pasts: the far estimates follow each past.
    forecast = ForecastSeries("XX", datetime(2026, 11, 27, tzinfo=timezone.utc), HOUR, np.full(24, 300.0), "t")
    low = ForecastSeries("XX", MONDAY, HOUR, np.full(96, 100.0), "t")
    high = ForecastSeries("XX", MONDAY, HOUR, np.full(96, 500.0), "t")
    far_low = extend_series(forecast, forecast.end_epoch + 240 * HOUR, low).series.values[-1]
    far_high = extend_series(forecast, forecast.end_epoch + 240 * HOUR, high).series.values[-1]
    assert far_low < 200 < 400 < far_high
    # Without any history nothing can be measured: the error is infinite, never trusted.
    assert np.isinf(extend_series(forecast, forecast.end_epoch + 5 * HOUR).error).all()


def _synthetic_zone(days: int, seed: int) -> np.ndarray:
    """A daily shape, a level that drifts from day to day, and hourly noise."""
    rng = np.random.default_rng(seed)
    shape = 250 + 80 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    level = np.cumsum(rng.normal(0, 25, days))
    level -= level.mean()
    return (shape[None, :] + level[:, None]).ravel() + rng.normal(0, 12, days * 24)


def _held_out_error(values: np.ndarray, origins, known_days: int, lead_hours: int):
    """For each origin: the error measure from the 'known' days before it, and the actual
    absolute error of the estimates on the days after it (never seen by the estimator)."""
    predicted, actual = [], []
    for origin in origins:
        known = values[origin - known_days * 24:origin]
        first = to_epoch(MONDAY) + (origin - known_days * 24) * HOUR
        series = ForecastSeries("XX", datetime.fromtimestamp(first, timezone.utc), HOUR, known, "t")
        extension = extend_series(series, series.end_epoch + lead_hours * HOUR)
        truth = values[origin:origin + lead_hours]
        actual.append(np.abs(extension.series.values[len(known):] - truth))
        predicted.append(extension.error)
    return np.mean(predicted, axis=0), np.mean(actual, axis=0)


def test_the_measured_error_predicts_the_error_on_held_out_days():
    values = _synthetic_zone(200, seed=7)
    predicted, actual = _held_out_error(values, range(11 * 24, 190 * 24, 29), 11, 72)
    for lead in (slice(0, 24), slice(24, 48), slice(48, 72)):
        ratio = predicted[lead].mean() / actual[lead].mean()
        assert 0.6 < ratio < 1.6, (lead, ratio)
    assert actual[48:].mean() > actual[:6].mean()  # far is worse than near, as measured


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not here")
def test_the_measured_error_predicts_the_error_on_recorded_exports():
    from carbon_optimizer.data.providers.csv_file import load_directory
    recorded = load_directory(SHARED)
    for zone, series in recorded.items():
        values = series.values
        predicted, actual = _held_out_error(values, range(11 * 24, len(values) - 72, 97), 11, 72)
        ratio = predicted.mean() / actual.mean()
        assert 0.6 < ratio < 1.6, (zone, ratio)


def test_window_error_weighs_each_estimated_second_by_its_lead():
    end, step = 100 * HOUR, HOUR
    error = np.array([10.0, 20.0, 30.0])
    assert window_error([(end - 2 * HOUR, end)], end, step, error) == 0.0
    # Half inside the forecast, then one hour at lead 0 (10): 10 / 2.
    assert window_error([(end - HOUR, end + HOUR)], end, step, error) == pytest.approx(5.0)
    # Chunks: lead 1 (20) and half of lead 2 (30), past the measured leads held at the last.
    assert window_error([(end + HOUR, end + 2 * HOUR), (end + 2 * HOUR, end + 2 * HOUR + 1800)],
                        end, step, error) == pytest.approx((20 * 3600 + 30 * 1800) / 5400)
    assert window_error([(end + 9 * HOUR, end + 10 * HOUR)], end, step, error) == pytest.approx(30.0)
    assert np.isinf(window_error([(end, end + HOUR)], end, step, None))


def test_measured_error_never_falls_with_the_lead():
    values = _synthetic_zone(12, seed=3)
    error = measured_error(values, to_epoch(MONDAY), HOUR, 200)
    assert (np.diff(error) >= 0).all() and np.isfinite(error).all()


def test_estimated_span_and_replan_at():
    now, end = 1000 * HOUR, 1024 * HOUR  # a 24 h forecast
    assert estimated_span(None, [(now, now + HOUR)], end) is None
    span = estimated_span(None, [(end - HOUR, end + 2 * HOUR), (end + 5 * HOUR, end + 6 * HOUR)], end)
    assert (span.start, span.seconds) == (end, 3 * HOUR)
    assert replan_at(end - 10, now, end, HOUR) is None
    later = replan_at(end + 30 * HOUR + 5, now, end, HOUR)
    assert later == now + 31 * HOUR  # the first whole step at which a 24 h horizon reaches the end
    assert later + (end - now) >= end + 30 * HOUR + 5


def test_the_estimator_is_chosen_per_zone_by_its_replayed_error():
    """A zone whose weekends differ from its weekdays, with three weeks known, is best told by the
    last week repeated; with one week known that candidate is not offered; a zone that repeats
    one day exactly is estimated exactly, whichever candidate is chosen."""
    hours = np.arange(21 * 24 + 24)
    weekly = 300 + 80 * np.sin(hours / 24 * 2 * np.pi) - np.where((hours // 24) % 7 >= 5, 150, 0)
    start = to_epoch(MONDAY)
    history = ForecastSeries("XX", MONDAY, HOUR, weekly[:21 * 24], "t")
    forecast = ForecastSeries("XX", datetime.fromtimestamp(start + 21 * 24 * HOUR, timezone.utc), HOUR,
                              weekly[21 * 24:], "t")
    extension = extend_series(forecast, forecast.end_epoch + 72 * HOUR, history)
    assert extension.replay.estimator == "weekly_naive"
    truth = 300 + 80 * np.sin(np.arange(22 * 24, 25 * 24) / 24 * 2 * np.pi) - np.where(
        (np.arange(22 * 24, 25 * 24) // 24) % 7 >= 5, 150, 0)
    assert extension.series.values[24:] == pytest.approx(truth)
    short = ForecastSeries("XX", datetime.fromtimestamp(start + 14 * 24 * HOUR, timezone.utc), HOUR,
                           weekly[14 * 24:21 * 24], "t")
    assert extend_series(forecast, forecast.end_epoch + 72 * HOUR, short).replay.estimator != "weekly_naive"
