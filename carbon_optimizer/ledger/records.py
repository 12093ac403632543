"""What the ledger keeps: one record per scheduled workload (a plan), and a run's reported start.

Plain values only (epoch seconds, strings, floats): the web layer builds them from a Schedule and
the request, the ledger stores them; neither the scheduling core nor the engine knows the ledger.
Free text is bounded here, once, so no record can grow a row without limit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Optional, Protocol

# Bounds on the free-text fields (a workload's own id, a client's name, a location as asked).
MAX_TEXT = 128


def bounded(text: Optional[str], limit: int = MAX_TEXT) -> Optional[str]:
    return None if text is None else text[:limit]


def new_plan_id() -> str:
    """A plan's id: random (nothing guessable about another client's plans), 32 hex digits."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class PlanRecord:
    """A scheduled workload as planned. Grams are None without power_kw or energy_kwh; means are
    in the signal's units."""
    plan_id: str
    created_at: int                        # when the plan was made (the request's now)
    client: Optional[str]                  # the API key's name (never the key); None: open API
    workload_id: Optional[str]             # the workload's own `id`, when given
    zone: str
    location: str                          # as asked (a cloud region, or the zone)
    intervals: tuple[tuple[int, int], ...] # the chosen run, epoch seconds, in order
    earliest_start: int                    # the allowed window
    latest_end: int
    duration: int                          # seconds of running
    interruptible: bool
    power_kw: Optional[float]
    energy_kwh: Optional[float]
    mean_intensity: float                  # the plan's forecast mean over its intervals
    baseline_zone: Optional[str]           # running at once in the first zone
    baseline_start: Optional[int]
    baseline_mean_intensity: Optional[float]
    emissions_grams: Optional[float]
    baseline_emissions_grams: Optional[float]
    provider: str
    signal: str
    units: str
    estimated: bool                        # rests partly on estimates past the forecast
    replan_of: Optional[str] = None        # the plan this one revises (a re-ask at replan_at)


@dataclass(frozen=True)
class RunStarted:
    """A client's report that a plan's run really started at `started_at`."""
    plan_id: str
    client: Optional[str]
    started_at: int
    reported_at: int = field(default=0)


class Ledger(Protocol):
    """Where the web layer hands records. Never raises into a request and never blocks it: a
    record it cannot keep is counted (dropped) and shown by health()."""

    def submit(self, records: list[PlanRecord]) -> None: ...

    def started(self, report: RunStarted) -> None: ...

    def health(self) -> dict: ...

    def close(self, timeout: float = 5.0) -> None: ...


class NullLedger:
    """No ledger configured: records are not kept."""

    def submit(self, records: list[PlanRecord]) -> None:
        pass

    def started(self, report: RunStarted) -> None:
        pass

    def health(self) -> dict:
        return {"status": "off"}

    def close(self, timeout: float = 5.0) -> None:
        pass
