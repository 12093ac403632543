"""The risk gate: a run resting on estimates replaces the best run inside the forecast only when it
is expected to be cleaner by more than the estimates' stated error. These zones carry per-lead
errors only (no replay), taken as a bound of unknown coverage; the calibrated quantile and the
margin for a run that starts now are in test_calibrated_gate.py."""

from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest

from carbon_optimizer.scheduling.model import Job, Schedule, ZoneSeries
from carbon_optimizer.scheduling.planner import plan
from carbon_optimizer.timeseries import ForecastSeries, to_epoch

HOUR = 3600
START = datetime(2026, 11, 23, tzinfo=timezone.utc)
NOW = to_epoch(START)


def zone(error: float, estimated_value: float = 100.0, interruptible_gap: bool = False) -> ZoneSeries:
    """A 24 h forecast at 200 with one 150 hour (hour 20); 48 estimated hours after it, flat at
    300 but for one hour (lead 10) at `estimated_value`; a flat measured error of `error`."""
    values = np.full(24, 200.0)
    values[20] = 150.0
    forecast = ForecastSeries("XX", START, HOUR, values, "test")
    estimates = np.full(48, 300.0)
    estimates[10] = estimated_value
    extended = replace(forecast, values=np.concatenate((values, estimates)),
                       estimated=np.r_[np.zeros(24, bool), np.ones(48, bool)])
    return ZoneSeries(forecast=forecast, extended=extended, estimate_error=np.full(48, error))


def job(**options) -> Job:
    return Job(duration=HOUR, zones=("XX",), earliest_start=NOW, latest_start=NOW + 71 * HOUR, **options)


@pytest.mark.parametrize("error, estimated_chosen", [(0.0, True), (49.0, True), (50.0, False), (80.0, False)])
def test_an_estimated_hour_is_chosen_only_when_its_advantage_exceeds_the_error(error, estimated_chosen):
    # Inside the forecast the best hour is 150 (hour 20); past it, 100 at hour 34: an advantage of 50.
    found = plan(job(), {"XX": zone(error)}, NOW)
    assert isinstance(found, Schedule)
    if estimated_chosen:
        assert found.start == NOW + 34 * HOUR and found.mean_intensity == 100.0
        assert found.coverage.estimated and found.coverage.estimate_error == pytest.approx(error)
        assert found.coverage.error_coverage is None  # a bound, not a quantile
        assert not found.coverage.waited_for_forecast
    else:
        assert found.start == NOW + 20 * HOUR and found.mean_intensity == 150.0
        assert not found.coverage.estimated and found.coverage.waited_for_forecast
        # Ask again when a 24 h forecast covers hour 34 (at hour 11), before this run starts.
        assert found.coverage.replan_at == NOW + 11 * HOUR


def test_the_gate_holds_for_chunks_too():
    found = plan(job(interruptible=True), {"XX": zone(80.0)}, NOW)
    assert isinstance(found, Schedule) and found.intervals == ((NOW + 20 * HOUR, NOW + 21 * HOUR),)
    assert found.coverage.waited_for_forecast
    found = plan(job(interruptible=True), {"XX": zone(10.0)}, NOW)
    assert found.intervals == ((NOW + 34 * HOUR, NOW + 35 * HOUR),)


def test_an_error_that_could_not_be_measured_is_never_trusted():
    found = plan(job(), {"XX": zone(np.inf, estimated_value=1.0)}, NOW)
    assert found.start == NOW + 20 * HOUR and found.coverage.waited_for_forecast


def test_ask_again_at_the_start_when_it_comes_before_a_forecast_could_show_the_other():
    early = zone(80.0)
    values = early.forecast.values.copy()
    values[20], values[3] = 200.0, 150.0   # the best hour inside is hour 3, before hour 11
    forecast = replace(early.forecast, values=values)
    extended = replace(early.extended, values=np.concatenate((values, early.extended.values[24:])))
    found = plan(job(), {"XX": replace(early, forecast=forecast, extended=extended)}, NOW)
    assert found.start == NOW + 3 * HOUR and found.coverage.waited_for_forecast
    # Hour 34 is in a forecast only from hour 11; hour 3's run starts first, and a forecast issued
    # by then covers 3 more hours of the window: ask again then.
    assert found.coverage.replan_at == NOW + 3 * HOUR


def test_a_run_on_estimates_keeps_the_run_inside_open_until_it_starts():
    """The estimated hour 34 wins (error 10 < advantage 50), but the best hour inside the forecast
    (hour 3) is still open until it starts: ask again then, not only when hour 34 is forecast."""
    early = zone(10.0)
    values = early.forecast.values.copy()
    values[20], values[3] = 200.0, 150.0
    forecast = replace(early.forecast, values=values)
    extended = replace(early.extended, values=np.concatenate((values, early.extended.values[24:])))
    found = plan(job(), {"XX": replace(early, forecast=forecast, extended=extended)}, NOW)
    assert found.start == NOW + 34 * HOUR and found.coverage.estimated
    assert found.coverage.replan_at == NOW + 3 * HOUR
    # With the best hour inside at hour 20, the estimate is forecast first (hour 11): ask then.
    assert plan(job(), {"XX": zone(10.0)}, NOW).coverage.replan_at == NOW + 11 * HOUR


def test_with_nothing_inside_the_forecast_the_estimates_are_used():
    # A 30 h job cannot run inside a 24 h forecast: the run on estimates is the only one.
    long = Job(duration=30 * HOUR, zones=("XX",), earliest_start=NOW, latest_start=NOW + 42 * HOUR)
    found = plan(long, {"XX": zone(1e6)}, NOW)
    assert isinstance(found, Schedule) and found.coverage.estimated
    assert not found.coverage.waited_for_forecast
    # It starts at once: a forecast covering it would come 6 h after the start, too late to move
    # it, and asking at the start is asking now. The answer is final.
    assert found.start == NOW and found.coverage.replan_at is None
