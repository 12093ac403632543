"""The carbon data a deployment serves, by signal: one feed per (provider, signal), in the order
configured (CARBON_PROVIDERS). A request names the signal it wants (`signal`: average,
average_direct, marginal) and is answered from the first feed serving it; without one, from the
first feed. One request reads one feed, so zones are never compared across signals.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from carbon_optimizer.data.cloud_regions import CloudRegion, RegionTable, ResolvedLocations
from carbon_optimizer.data.providers.base import SIGNALS, CanLocate, NamesZones, attribution
from carbon_optimizer.data.source import CarbonDataSource
from carbon_optimizer.errors import CarbonDataError, SignalNotServed, UnknownLocation, ZoneNotFound

log = logging.getLogger(__name__)

# Zones a feed's provider located for coordinates: a few hundred cloud regions at most per feed,
# kept for the worker's life (a region does not move); the bound only guards against misuse.
MAX_LOCATED = 1024


@dataclass
class Feed:
    """One provider's data of one signal, through its data source."""
    source: CarbonDataSource
    # A cloud region's zone in this feed comes from the region table's own column (the table is
    # written in Electricity Maps' zone keys) or, for other providers, from their locate call.
    table_zones: bool = False

    def __post_init__(self) -> None:
        self._located: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        return self.source.provider.name

    @property
    def signal(self) -> str:
        return self.source.provider.signal

    @property
    def units(self) -> str:
        return self.source.provider.units

    @property
    def attribution(self) -> Optional[str]:
        return attribution(self.source.provider)

    @property
    def names_zones(self) -> bool:
        return isinstance(self.source.provider, NamesZones)

    def region_zone(self, region: CloudRegion) -> Optional[str]:
        """A cloud region's zone in this feed as known without asking: the table's, or the one
        this worker located (None: not located yet)."""
        return region.zone if self.table_zones else self._located.get(region.name)

    def look_up(self, regions: Sequence[CloudRegion], names: Sequence[str], wait: float) -> "Lookup":
        """What the provider says of a request's cloud regions (their zones, by coordinates) and
        of names it may know besides its zone keys, asked all at once within `wait` seconds;
        regions located before are answered from this worker's memory."""
        provider = self.source.provider
        calls: dict[str, Callable[[], str]] = {}
        if not self.table_zones and isinstance(provider, CanLocate):
            for region in regions:
                latitude, longitude = region.latitude, region.longitude
                if region.name not in self._located and latitude is not None and longitude is not None:
                    calls[region.name] = functools.partial(provider.locate, latitude, longitude)
        if isinstance(provider, NamesZones):
            for name in names:
                calls[f"name:{name}"] = functools.partial(_named, provider, name)
        answers = self.source.ask_all(calls, wait) if calls else {}
        with self._lock:
            for name, zone in answers.items():
                if not name.startswith("name:") and isinstance(zone, str):
                    self._located[name] = zone
            while len(self._located) > MAX_LOCATED:
                self._located.popitem(last=False)
        return Lookup(self, answers)


def _named(provider: NamesZones, name: str) -> str:
    """NamesZones.zone_named as a lookup: "" for a name the provider does not know."""
    return provider.zone_named(name) or ""


@dataclass
class Lookup:
    """A request's provider lookups in one feed, as RegionTable.resolve_all's hooks."""
    feed: Feed
    answers: dict[str, "str | CarbonDataError"]

    def zone_of(self, region: CloudRegion) -> str:
        """The feed's zone for a cloud region. Raises UnknownLocation when the provider covers
        none there, cannot locate it, or did not answer in time."""
        feed = self.feed
        if feed.table_zones:
            return region.zone
        held = feed._located.get(region.name)
        if held is not None:
            return held
        got = self.answers.get(region.name)
        if got is None:
            raise UnknownLocation(region.name, f"{region.name} has no {feed.signal} zone here: the "
                                               f"provider {feed.provider} cannot locate it", ())
        if isinstance(got, ZoneNotFound):
            raise UnknownLocation(region.name, f"{region.name} ({region.location}) is outside what "
                                               f"the provider {feed.provider} covers", ())
        if isinstance(got, CarbonDataError):
            raise UnknownLocation(region.name, f"{region.name} cannot be located by the provider "
                                               f"{feed.provider} just now: {got.message}", ())
        return got

    def alias(self, name: str) -> Optional[str]:
        """The zone of a name the provider knows besides its zone keys, else None (a provider
        that could not say in time counts as not knowing it)."""
        got = self.answers.get(f"name:{name}")
        if isinstance(got, CarbonDataError):
            log.info("the provider %s could not resolve %s: %s", self.feed.provider, name, got.message)
            return None
        return got or None


class Feeds:
    """The configured feeds, the first being the default."""

    def __init__(self, feeds: Sequence[Feed]):
        if not feeds:
            raise ValueError("at least one feed")
        self._feeds = list(feeds)

    def __iter__(self) -> Iterator[Feed]:
        return iter(self._feeds)

    @property
    def default(self) -> Feed:
        return self._feeds[0]

    def signals(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.signal for f in self._feeds))

    def resolve(self, asked: Sequence[str], suggested: int, signal: Optional[str],
                regions: RegionTable) -> ResolvedLocations:
        """The zones of the locations asked in the feed of `signal`, against one reading of its
        zone list; close matches for the first `suggested` unknown. Every provider lookup the
        request needs runs at once (one wait however many it names). A location unknown there but
        served for another signal says so: one request reads one signal."""
        feed = self.get(signal)
        served = feed.source.served_zones()
        lookup = None
        if not feed.table_zones or feed.names_zones:
            distinct = list(dict.fromkeys(asked))
            found = [r for r in (regions.get(n) for n in distinct if ":" in n) if r is not None]
            names = [n for n in distinct if ":" not in n and (served is None or n not in served)]
            lookup = feed.look_up(found, names if feed.names_zones else [],
                                  feed.source.ZONE_LIST_WAIT_SECONDS)
        resolved = regions.resolve_all(
            asked, served, suggested,
            zone_of=lookup.zone_of if lookup is not None and not feed.table_zones else None,
            alias=lookup.alias if lookup is not None and feed.names_zones else None)
        for location, exc in list(resolved.unknown.items()):
            # Only lists held now: a hint never costs a fetch.
            elsewhere = [other for other in self._feeds if other.signal != feed.signal
                         and location in (other.source.held_zones() or ())]
            if elsewhere:
                served_by = ", ".join(f"{other.signal} ({other.provider})" for other in elsewhere)
                resolved.unknown[location] = UnknownLocation(
                    location, f"{location} is not a zone of signal {feed.signal} ({feed.provider}); "
                              f"it is served for {served_by}: one request reads one signal, so ask "
                              f"with \"signal\": \"{elsewhere[0].signal}\" and only its zones",
                    exc.suggestions)
        return resolved

    def get(self, signal: Optional[str]) -> Feed:
        """The feed for `signal` (None: the default). Raises SignalNotServed naming the signals
        this deployment serves."""
        if signal is None:
            return self.default
        for feed in self._feeds:
            if feed.signal == signal:
                return feed
        available = self.signals()
        served = ", ".join(f"{f.signal} ({f.provider})" for f in self._feeds)
        known = "" if signal in SIGNALS else f"; the signals are {', '.join(SIGNALS)}"
        raise SignalNotServed(f"signal {signal} is not served by this deployment; it serves "
                              f"{served}{known}", available)
