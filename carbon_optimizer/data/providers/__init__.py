"""Carbon-intensity data sources behind one interface: each returns a ForecastSeries."""

from carbon_optimizer.data.providers.base import (  # noqa: F401
    Provider, ProviderError, UpstreamUnavailable, ZoneNotFound, ZoneNotEntitled, InvalidToken,
)
