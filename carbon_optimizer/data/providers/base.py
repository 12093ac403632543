"""The provider interface (the errors every provider raises are in carbon_optimizer.errors)."""

from __future__ import annotations

from datetime import datetime
from typing import Optional, Protocol

from carbon_optimizer.timeseries import ForecastSeries


class Provider(Protocol):
    name: str
    # Whether fetches are worth sharing through Redis (a remote API) or cheap to repeat (local data).
    shared_cache: bool

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        """The forecast for `zone` as known at `now`, starting at or before `now`."""

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        """Recent measured history for `zone` (the last day or more), or None when not offered."""

    def zones(self) -> list[str]:
        """Every zone key this provider serves, sorted."""
