"""Zone keys a remote provider has not listed, sent to it only a few at a time.

While the provider's zone list cannot be had, zone keys pass unchecked (an outage of the list fails
no request that would otherwise succeed), but each unknown one costs an upstream call and a
failure key in the cache: only a few a request and a worker a minute go upstream, the rest fail at
once (upstream_unavailable, as a zone the provider does not answer for).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Iterable, Sequence

from carbon_optimizer.errors import UpstreamUnavailable

log = logging.getLogger(__name__)


class UncheckedZones:
    """One worker's count of the unchecked zones it sent upstream in the last minute, and the
    zones known real without the provider's list: `vouched` (the region table's), and those the
    provider has answered a forecast for (bounded by the provider's zones)."""

    PER_REQUEST = 5
    PER_MINUTE = 30

    def __init__(self, vouched: Iterable[str] = (), monotonic: Callable[[], float] = time.monotonic):
        self._vouched: set[str] = set(vouched)
        self._monotonic = monotonic
        self._sent: deque[float] = deque()  # when this worker sent each unchecked zone
        self._lock = threading.Lock()

    def refused(self, zones: Sequence[str], served: frozenset[str]) -> dict[str, UpstreamUnavailable]:
        """Of `zones` (about to be fetched), those that may not go upstream: not on the provider's
        last list (`served`), nor known otherwise, and over the caps. Each gets its failure."""
        unknown = [z for z in zones if z not in served and z not in self._vouched]
        if not unknown:
            return {}
        sent = 0
        refused: dict[str, UpstreamUnavailable] = {}
        with self._lock:
            now = self._monotonic()
            while self._sent and self._sent[0] <= now - 60:
                self._sent.popleft()
            for zone in unknown:
                if sent < self.PER_REQUEST and len(self._sent) < self.PER_MINUTE:
                    self._sent.append(now)
                    sent += 1
                    continue
                refused[zone] = UpstreamUnavailable(
                    zone,
                    f"the carbon-data provider's zone list cannot be had just now, so zone {zone} "
                    f"is unchecked, and at most {self.PER_REQUEST} unchecked zones a "
                    f"request ({self.PER_MINUTE} a minute) are sent to the provider; "
                    "retry shortly")
        if refused:
            log.warning("zone list unknown: %d unchecked zones not sent upstream", len(refused))
        return refused

    def answered(self, zone: str) -> None:
        """The provider answered a forecast for `zone`: it is real, list or no list."""
        if zone not in self._vouched:
            self._vouched.add(zone)
