"""Carbon-intensity data sources behind one interface: each returns a ForecastSeries."""

from providers.base import (  # noqa: F401
    Provider, ProviderError, UpstreamUnavailable, ZoneNotFound, ZoneNotEntitled, InvalidToken,
)
