"""Extending a forecast past its horizon: shape, provenance, exactness on periodic data, replan_at."""

from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from carbon_optimizer.scheduling.horizon import estimate_values, estimated_span, extend_series, hour_of_week, replan_at
from carbon_optimizer.timeseries import ForecastSeries, to_epoch

HOUR = 3600
MONDAY = datetime(2026, 11, 23, tzinfo=timezone.utc)


def test_hour_of_week_starts_on_monday():
    assert hour_of_week(to_epoch(MONDAY)) == 0
    assert hour_of_week(to_epoch(MONDAY) + 25 * HOUR) == 25


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(1, 900), min_size=1, max_size=80), extra=st.integers(1, 200),
       step=st.sampled_from([900, 1800, 3600]), with_profile=st.booleans())
def test_extension_keeps_the_forecast_and_marks_only_the_new_points(values, extra, step, with_profile):
    series = ForecastSeries("ES", MONDAY, step, np.array(values), "demo")
    until = series.end_epoch + extra * 600
    profile = np.linspace(100, 300, 168) if with_profile else None
    extended = extend_series(series, until, profile)
    assert extended.end_epoch >= until and extended.end_epoch - step < until
    assert np.array_equal(extended.values[:len(values)], values)
    mask = extended.estimated_mask()
    assert not mask[:len(values)].any() and mask[len(values):].all()
    assert np.isfinite(extended.values).all() and (extended.values > 0).all()


def test_a_zone_that_follows_its_profile_is_extended_exactly():
    daily = 200 + 100 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    profile = np.tile(daily, 7)
    series = ForecastSeries("ES", MONDAY, HOUR, 1.5 * np.tile(daily, 2), "demo")  # level 1.5x
    extended = extend_series(series, series.end_epoch + 72 * HOUR, profile)
    assert extended.values[48:] == pytest.approx(1.5 * np.tile(daily, 3))


def test_far_out_the_profile_takes_over_from_persistence():
    tail = np.full((1, 24), 100.0)
    future_profile = np.tile(np.r_[np.full(12, 50.0), np.full(12, 150.0)], 7)  # mean 100: level 1
    near, far = estimate_values(tail, 168, np.full(24, 100.0), future_profile)[0][[0, 150]]
    assert near == pytest.approx(100.0, abs=5.0)   # persistence: the last day was flat at 100
    assert far == pytest.approx(50.0, abs=1.0)     # six days out: the profile's 50 at that hour


def test_short_forecast_borrows_history_for_its_last_day():
    history = ForecastSeries("ES", MONDAY, HOUR, np.arange(24, dtype=float) + 1, "demo")
    forecast = ForecastSeries("ES", datetime(2026, 11, 24, tzinfo=timezone.utc), HOUR,
                              np.array([100.0, 100.0]), "demo")
    extended = extend_series(forecast, forecast.end_epoch + 3 * HOUR, None, history)
    # Persistence: the values 24 h before the three new hours (history hours 2, 3 and 4).
    assert list(extended.values[2:]) == [3.0, 4.0, 5.0]


def test_estimated_span_and_replan_at():
    now, end = 1000 * HOUR, 1024 * HOUR  # a 24 h forecast
    assert estimated_span(None, [(now, now + HOUR)], end) is None
    span = estimated_span(None, [(end - HOUR, end + 2 * HOUR), (end + 5 * HOUR, end + 6 * HOUR)], end)
    assert span == {"start": end, "seconds": 3 * HOUR}
    assert replan_at(end - 10, now, end, HOUR) is None
    later = replan_at(end + 30 * HOUR + 5, now, end, HOUR)
    assert later == now + 31 * HOUR  # the first whole step at which a 24 h horizon reaches the end
    assert later + (end - now) >= end + 30 * HOUR + 5
