"""The one time-series type that crosses every boundary: a regular, piecewise-constant series.

Point i holds from `start + i*step` until the next point; the last holds for one step. Providers turn
their wire formats into this and nothing else knows those formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, Optional

import numpy as np

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# A regular grid is sized by the smallest gap between points: this bounds what odd input can cost
# (two years of 5-minute data is 210,240 points).
MAX_SERIES_POINTS = 250_000


def to_epoch(moment: datetime) -> int:
    """Whole seconds since the epoch for an aware datetime."""
    return int((moment - EPOCH) // timedelta(seconds=1))


def from_epoch(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=int(seconds))


def rfc3339(moment: Optional[datetime]) -> Optional[str]:
    """UTC with a trailing Z, seconds precision."""
    if moment is None:
        return None
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    # Formatted by hand: strftime costs several times more, and every answer holds several of these.
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z")


@dataclass(frozen=True)
class ForecastSeries:
    zone: str
    start: datetime
    step_seconds: int
    values: np.ndarray
    provider: str
    updated_at: Optional[datetime] = None
    # Per point: True where the value is an estimate rather than a provider's forecast or measurement.
    estimated: Optional[np.ndarray] = field(default=None)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if self.step_seconds <= 0:
            raise ValueError("step must be positive")
        if len(self.values) == 0:
            raise ValueError("a series needs at least one point")
        self.__dict__["_start_epoch"] = start = to_epoch(self.start)  # read per workload; frozen, so memo here
        self.__dict__["_end_epoch"] = start + self.step_seconds * len(self.values)  # read several times per workload

    @property
    def start_epoch(self) -> int:
        return self.__dict__["_start_epoch"]

    @property
    def end_epoch(self) -> int:
        """Where the last point stops holding: the end of what the series covers."""
        return self.__dict__["_end_epoch"]

    @property
    def end(self) -> datetime:
        return from_epoch(self.end_epoch)

    def boundaries(self) -> np.ndarray:
        """Epoch seconds of every point's start, plus the series end: len(values) + 1 entries.

        Computed once per series (a cached series serves many requests) and read-only, so shared.
        """
        cached = self.__dict__.get("_boundaries")
        if cached is None:
            cached = self.start_epoch + self.step_seconds * np.arange(len(self.values) + 1, dtype=np.int64)
            cached.flags.writeable = False
            self.__dict__["_boundaries"] = cached  # frozen dataclass: a private memo, not a field
        return cached

    def integral(self) -> np.ndarray:
        """The running integral at each boundary (intensity x seconds from the start), cached like
        boundaries(): the prefix sums every window search over this series reads."""
        cached = self.__dict__.get("_integral")
        if cached is None:
            cached = np.empty(len(self.values) + 1, dtype=np.float64)
            cached[0] = 0.0
            np.cumsum(self.values * float(self.step_seconds), out=cached[1:])
            cached.flags.writeable = False
            self.__dict__["_integral"] = cached
        return cached

    def estimated_mask(self) -> np.ndarray:
        if self.estimated is None:
            return np.zeros(len(self.values), dtype=bool)
        return self.estimated

    def to_dict(self) -> dict:
        return {
            "zone": self.zone,
            "provider": self.provider,
            "start": rfc3339(self.start),
            "step_seconds": self.step_seconds,
            "values": [float(v) for v in self.values],
            "updated_at": rfc3339(self.updated_at),
            "estimated": None if self.estimated is None else [bool(e) for e in self.estimated],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ForecastSeries":
        estimated = data.get("estimated")
        return cls(
            zone=data["zone"],
            provider=data["provider"],
            start=parse_utc(data["start"]),
            step_seconds=int(data["step_seconds"]),
            values=np.asarray(data["values"], dtype=np.float64),
            updated_at=parse_utc(data["updated_at"]) if data.get("updated_at") else None,
            estimated=None if estimated is None else np.asarray(estimated, dtype=bool),
        )


def parse_utc(text: str) -> datetime:
    """Parse an ISO 8601 / RFC 3339 timestamp; a naive one is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def series_from_points(zone: str, provider: str, points: Iterable[tuple[datetime, Optional[float]]],
                       updated_at: Optional[datetime] = None) -> ForecastSeries:
    """Normalise possibly irregular, possibly null points onto a regular grid.

    The step is the smallest gap between consecutive points. A null value or a missing point is
    filled by holding the previous known value (the piecewise-constant reading of the data), and
    flagged as estimated. Leading nulls are dropped. Raises ValueError when no value is known.
    """
    known = sorted((to_epoch(t), v) for t, v in points)
    # Deduplicate timestamps, keeping the last value given for each.
    dedup: dict[int, Optional[float]] = {}
    for t, v in known:
        dedup[t] = v
    times = sorted(dedup)
    while times and dedup[times[0]] is None:
        times.pop(0)
    if not times:
        raise ValueError(f"no carbon-intensity values for zone {zone}")
    if len(times) == 1:
        step = 3600
    else:
        step = int(min(b - a for a, b in zip(times, times[1:])))
    start = times[0]
    count = (times[-1] - start) // step + 1
    if count > MAX_SERIES_POINTS:  # e.g. two points a second apart in a year of data
        raise ValueError(f"the points for zone {zone} would need {count} slots of {step} s "
                         f"(at most {MAX_SERIES_POINTS})")
    values = np.empty(count, dtype=np.float64)
    estimated = np.ones(count, dtype=bool)
    slots = {}
    for t in times:
        slot = (t - start) // step
        if dedup[t] is not None:
            slots[slot] = float(dedup[t])
    last = None
    for i in range(count):
        if i in slots:
            last = slots[i]
            estimated[i] = False
        values[i] = last
    return ForecastSeries(zone=zone, provider=provider, start=from_epoch(start), step_seconds=step,
                          values=values, updated_at=updated_at,
                          estimated=estimated if estimated.any() else None)
