"""The provider interface and the errors every provider raises."""

from __future__ import annotations

from datetime import datetime
from typing import Optional, Protocol

from carbon_optimizer.timeseries import ForecastSeries


class ProviderError(Exception):
    """A failure to get carbon data for a zone. Messages name the zone, never a secret."""

    code = "upstream_error"
    # Whether a stale copy may be served instead (a passing fault) or the failure is final for
    # this zone (unknown zone, token not entitled).
    transient = True

    def __init__(self, zone: str, message: str):
        super().__init__(message)
        self.zone = zone
        self.message = message


class UpstreamUnavailable(ProviderError):
    """Timeouts, refused connections, 5xx, 429, malformed answers: try again later."""

    code = "upstream_unavailable"


class InvalidToken(ProviderError):
    """The provider rejected the credentials themselves."""

    code = "upstream_auth_failed"


class ZoneNotEntitled(ProviderError):
    """The credentials are valid but not entitled to this zone."""

    code = "zone_not_entitled"
    transient = False


class ZoneNotFound(ProviderError):
    """The provider has no data for this zone."""

    code = "zone_not_found"
    transient = False


class Provider(Protocol):
    name: str
    # Whether fetches are worth sharing through Redis (a remote API) or cheap to repeat (local data).
    shared_cache: bool

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        """The forecast for `zone` as known at `now`, starting at or before `now`."""

    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        """Recent measured history for `zone` (the last day or more), or None when not offered."""
