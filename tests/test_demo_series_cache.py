"""The demo provider answers from series computed once per zone and hour (issue 13): the answers
are the ones the formula gives (a reference written here, from the module's documented recipe),
the same on a cache hit as on a miss, read-only, and the cache is bounded."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from carbon_optimizer.data.providers import demo
from carbon_optimizer.errors import ZoneNotFound


def reference_value(week: list[float], zone: str, epoch_hour: int) -> float:
    wobble = int.from_bytes(hashlib.blake2b(f"{zone}/{epoch_hour}".encode(), digest_size=8).digest(), "big")
    # Monday 00:00 first in the table; the epoch began on a Thursday.
    return round(week[(epoch_hour + 72) % 168] * (1 + 0.1 * ((wobble % 1000) / 1000 - 0.5)), 1)


def test_cached_answers_are_the_formula_s_values_on_hits_and_misses():
    week = json.loads(demo._PROFILES_PATH.read_text())["profiles"]["ES"]
    provider = demo.DemoProvider(horizon_hours=72)
    now = datetime(2026, 11, 24, 17, 25, 13, tzinfo=timezone.utc)
    first_hour = int(now.timestamp()) // 3600
    for _ in range(3):  # a miss, then hits
        series = provider.forecast("ES", now + timedelta(minutes=20))  # same hour: same series
        assert series.start == datetime(2026, 11, 24, 17, tzinfo=timezone.utc)
        expected = [reference_value(week, "ES", first_hour + i) for i in range(72)]
        assert np.allclose(series.values, expected, atol=1e-9)
        with pytest.raises(ValueError):
            series.values[0] = 0  # shared between requests: nobody may change it
    history = provider.history("ES", now)
    assert history.values[0] == pytest.approx(reference_value(week, "ES", first_hour - 24))
    # A new hour gives the next series.
    later = provider.forecast("ES", now + timedelta(hours=1))
    assert later.values[0] == pytest.approx(reference_value(week, "ES", first_hour + 1))


def test_unknown_zones_are_refused_and_the_cache_stays_bounded():
    provider = demo.DemoProvider()
    with pytest.raises(ZoneNotFound):
        provider.forecast("NOWHERE", datetime.now(timezone.utc))
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for hour in range(demo._SERIES_CACHE_SIZE + 50):
        provider.forecast("ES", start + timedelta(hours=hour))
    info = provider._cached_series.cache_info()
    assert info.maxsize == demo._SERIES_CACHE_SIZE and info.currsize == demo._SERIES_CACHE_SIZE
