"""Cloud regions as locations: `aws:eu-west-1` -> the Electricity Maps zone whose grid powers it.

The table (cloud_regions.csv beside this module) is curated by this project from public facts:
one row per region with the provider, the region's name, the zone, where the region is (in words,
and as latitude and longitude), and the provider's page that says where it is.
CLOUD_REGION_OVERRIDES changes or adds rows at start-up.

The coordinates are those of the city `location` names, city centre as GeoNames and Wikipedia
publish them, rounded to 2 decimals (about 1 km): where a place a region is, not the data centre.
Where `location` names two places, the first ("Tokyo and Saitama": Tokyo). Where it names an area
and no city, the coordinates are of the city standing for it:

| location | city |
|---|---|
| a US state (Ohio, Virginia, Iowa, Wyoming) | its capital |
| a US state whose capital lies on another grid than the table's zone: Oregon (aws us-west-2, BPA), Illinois (azure northcentralus, PJM), California (azure westus, CAISO), Washington (azure westus2, Grant County PUD), Texas (azure southcentralus) | the metro the provider's page and the zone point to: Boardman, Chicago, San Jose, Quincy, San Antonio (a provider that locates by coordinates must land in the table's grid) |
| Northern Virginia | Ashburn |
| Northern California | San Francisco |
| Aragon; Sao Paulo State; New South Wales; Victoria | their capitals (Zaragoza, Sao Paulo, Sydney, Melbourne) |
| Changhua County | Changhua City |
| Ireland, Netherlands, Bahrain, United Arab Emirates, Malaysia | their capitals (Dublin, Amsterdam, Manama, Abu Dhabi, Kuala Lumpur) |
| Israel | Tel Aviv (where the other Israeli regions are) |
| Hong Kong, Singapore | the city |

`resolve` turns what a client asked for (a zone key or a cloud region) into a zone, or raises
UnknownLocation naming the closest names this service knows.
"""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterable, Mapping, Optional

from carbon_optimizer.errors import UnknownLocation
from carbon_optimizer.settings import CLOUD_REGION_PATTERN, ZONE_KEY_PATTERN

TABLE_PATH = Path(__file__).with_name("cloud_regions.csv")
OVERRIDE_SOURCE = "configuration (CLOUD_REGION_OVERRIDES)"
MAX_SUGGESTIONS = 5


@dataclass(frozen=True)
class ResolvedLocations:
    """Locations asked, resolved against one reading of the zone list: location -> its zone, and
    location -> why the service cannot serve it (with close matches for the first few)."""

    zones: dict[str, str]
    unknown: dict[str, UnknownLocation]


@dataclass(frozen=True)
class CloudRegion:
    provider: str   # aws, gcp, azure
    region: str     # the provider's own name, lower case: eu-west-1, europe-west4, westeurope
    zone: str       # Electricity Maps zone key
    location: str   # where the region is, in words
    source: str     # the public page that says where the region is
    # The city `location` names (see the module's docstring); None for a region added by
    # configuration that the table does not hold.
    latitude: Optional[float] = None
    longitude: Optional[float] = None

    @property
    def name(self) -> str:
        """How a client writes it: provider:region."""
        return f"{self.provider}:{self.region}"


def _valid_coordinates(latitude: Optional[float], longitude: Optional[float]) -> bool:
    if latitude is None or longitude is None:
        return latitude is None and longitude is None
    return -90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0  # NaN fails both


def read_table(path: Path = TABLE_PATH) -> dict[str, CloudRegion]:
    """The table's rows by name. Raises ValueError on a malformed, repeated or unsourced row, so
    a bad edit fails the tests and start-up rather than a request."""
    regions: dict[str, CloudRegion] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            fields = {k: (v or "").strip() for k, v in row.items()}
            try:
                coordinates = {k: float(fields[k]) if fields.get(k) else None
                               for k in ("latitude", "longitude")}
            except ValueError:
                raise ValueError(f"{path.name} line {line}: latitude {fields.get('latitude')!r} and "
                                 f"longitude {fields.get('longitude')!r} are not numbers") from None
            region = CloudRegion(**{**fields, **coordinates})
            if not re.fullmatch(CLOUD_REGION_PATTERN, region.name):
                raise ValueError(f"{path.name} line {line}: {region.name!r} is not provider:region")
            if not re.fullmatch(ZONE_KEY_PATTERN, region.zone):
                raise ValueError(f"{path.name} line {line}: {region.zone!r} is not a zone key")
            if not region.source.startswith("https://"):
                raise ValueError(f"{path.name} line {line}: {region.name} has no https source")
            if not _valid_coordinates(region.latitude, region.longitude):
                raise ValueError(f"{path.name} line {line}: {region.name} has coordinates "
                                 f"({region.latitude}, {region.longitude}) outside -90..90, -180..180 "
                                 "(or only one of them)")
            if region.name in regions:
                raise ValueError(f"{path.name} line {line}: {region.name} appears twice")
            regions[region.name] = region
    return regions


class RegionTable:
    """The built-in table with the configured overrides applied."""

    def __init__(self, overrides: Optional[Mapping[str, str]] = None, path: Path = TABLE_PATH):
        regions = read_table(path)
        for name, zone in (overrides or {}).items():
            provider, _, region = name.partition(":")
            known = regions.get(name)
            # A region the table holds keeps its place (only its zone changes).
            regions[name] = CloudRegion(provider=provider, region=region, zone=zone,
                                        location=known.location if known else "",
                                        source=OVERRIDE_SOURCE,
                                        latitude=known.latitude if known else None,
                                        longitude=known.longitude if known else None)
        self._regions = dict(sorted(regions.items()))

    def get(self, name: str) -> Optional[CloudRegion]:
        return self._regions.get(name.lower())

    def __iter__(self):
        return iter(self._regions.values())

    def __len__(self) -> int:
        return len(self._regions)

    def resolve_all(self, asked: Iterable[str], zones: Optional[Collection[str]],
                    suggested: int, zone_of: Optional[Callable[[CloudRegion], str]] = None,
                    alias: Optional[Callable[[str], Optional[str]]] = None) -> ResolvedLocations:
        """Every distinct location in `asked` resolved once (a batch names the same few again and
        again). Unknown ones are kept, not raised, so that every field naming one can be reported;
        only the first `suggested` get close matches (a search over every zone and region each).
        `zone_of` gives a cloud region's zone when the provider's zones are not the table's own
        (it raises UnknownLocation); `alias` the zone of a name the provider knows besides its
        zone keys (a NESO postcode or region name), None when it knows none."""
        found: dict[str, str] = {}
        unknown: dict[str, UnknownLocation] = {}
        for location in dict.fromkeys(asked):
            try:
                suggest = len(unknown) < suggested
                found[location] = (self.resolve(location, zones, suggest, zone_of, alias)
                                   if zone_of is not None or alias is not None
                                   else self.resolve(location, zones, suggest))
            except UnknownLocation as exc:
                unknown[location] = exc
        return ResolvedLocations(found, unknown)

    def resolve(self, asked: str, zones: Optional[Collection[str]], suggest: bool = True,
                zone_of: Optional[Callable[[CloudRegion], str]] = None,
                alias: Optional[Callable[[str], Optional[str]]] = None) -> str:
        """The zone for `asked` (a cloud region or a zone key). `zones` are the zones the provider
        serves, or None when that list cannot be had just now (then any zone key passes, and the
        provider answers for it). Raises UnknownLocation, with close matches only when `suggest`
        (they cost about 0.4 ms a name: a request gets them for its first few unknown names)."""
        if ":" in asked:
            region = self.get(asked)
            if region is None:
                raise UnknownLocation(asked, f"{asked} is not a cloud region this service knows",
                                      self.suggest(asked, zones) if suggest else ())
            zone = region.zone if zone_of is None else zone_of(region)
            if zones is not None and zone not in zones:
                raise UnknownLocation(asked, f"{asked} is in zone {zone}, which the carbon-data "
                                             "provider does not serve", ())
            return zone
        if zones is None or asked in zones:
            return asked
        named = alias(asked) if alias is not None else None
        if named is not None and (zones is None or named in zones):
            return named
        raise UnknownLocation(asked, f"{asked} is neither a zone the carbon-data provider serves nor "
                                     "a cloud region (written provider:region)",
                              self.suggest(asked, zones) if suggest else ())

    def suggest(self, asked: str, zones: Optional[Iterable[str]]) -> tuple[str, ...]:
        """Up to five known names close to `asked`: a region named without (or with the wrong)
        provider first, then the closest spellings among zones and regions."""
        text = asked.lower()
        provider, _, bare = text.rpartition(":")
        found = [r.name for r in self._regions.values() if r.region == bare and r.provider != provider]
        candidates = {name.lower(): name for name in [*(zones or ()), *self._regions]}
        found += [candidates[m] for m in difflib.get_close_matches(text, candidates, n=MAX_SUGGESTIONS)]
        if provider and not found:
            # A region name nothing like a real one: the provider's closest regions, loosely.
            same = {r.region: r.name for r in self._regions.values() if r.provider == provider}
            found = [same[m] for m in difflib.get_close_matches(bare, same, n=3, cutoff=0.4)]
        return tuple(dict.fromkeys(found))[:MAX_SUGGESTIONS]
