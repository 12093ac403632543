"""The provider interface, split by capability (the errors every provider raises are in
carbon_optimizer.errors).

Every provider serves forecasts of one signal, in one unit. The rest is optional and a provider
says it has a capability by having the method: recent measured history (`HasHistory`), the list
of zones it serves (`HasZoneList`), the zone at given coordinates (`CanLocate`). The data source
checks once, when it is built, and never calls what a provider lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Optional, Protocol, get_args, runtime_checkable

from carbon_optimizer.timeseries import ForecastSeries


@dataclass(frozen=True)
class Signal:
    """A kind of carbon intensity, named as users name it (the request's `signal`)."""
    name: str
    description: str


SignalName = Literal["average", "average_direct", "marginal"]

# The signals a request may ask for. Which of them a deployment serves depends on its providers.
SIGNALS: dict[str, Signal] = {s.name: s for s in (
    Signal("average", "the average emissions of the electricity consumed in the zone, with "
                      "life-cycle emission factors (construction, fuel supply and combustion)"),
    Signal("average_direct", "the average emissions of the electricity consumed in the zone, "
                             "counting combustion only (direct emission factors)"),
    Signal("marginal", "the emissions of the generation that meets one more kWh of demand "
                       "(a marginal operating emissions rate)"),
)}
assert tuple(SIGNALS) == get_args(SignalName)

# The unit every series is converted to before it leaves a provider.
G_PER_KWH = "gCO2eq/kWh"
G_CO2_PER_KWH = "gCO2/kWh"  # CO2 alone (WattTime's rates count no other gas)


@runtime_checkable
class Provider(Protocol):
    name: str
    # The signal this provider's forecasts are of (a key of SIGNALS) and their unit.
    signal: str
    units: str
    # Whether fetches are worth sharing through Redis (a remote API) or cheap to repeat (local data).
    shared_cache: bool

    def forecast(self, zone: str, now: datetime) -> ForecastSeries:
        """The forecast for `zone` as known at `now`, starting at or before `now`."""


@runtime_checkable
class HasHistory(Protocol):
    def history(self, zone: str, now: datetime) -> Optional[ForecastSeries]:
        """Recent measured history for `zone` (the last day or more), or None when not offered."""


@runtime_checkable
class HasZoneList(Protocol):
    def zones(self) -> list[str]:
        """Every zone key this provider serves (for this account), sorted."""


@runtime_checkable
class CanLocate(Protocol):
    def locate(self, latitude: float, longitude: float) -> str:
        """The provider's zone key at these coordinates. Raises ZoneNotFound when it covers none
        there, CarbonDataError when it cannot be asked."""


@runtime_checkable
class NamesZones(Protocol):
    def zone_named(self, name: str) -> Optional[str]:
        """The zone key of a name the provider knows besides its zone keys (a region's name, a
        postcode), or None. Bounded in time; raises CarbonDataError when it cannot be asked."""


def attribution(provider: object) -> Optional[str]:
    """What answers built on `provider`'s data must credit (its licence terms), if anything."""
    return getattr(provider, "attribution", None)
