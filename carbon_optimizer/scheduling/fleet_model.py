"""The fleet solvers' types, apart from both solvers (fleet.py, fleet_exact.py) so neither imports
the other's module for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from carbon_optimizer.errors import FailureCode


@dataclass(frozen=True)
class FleetJob:
    length: int
    earliest: int
    latest: int
    zones: tuple[int, ...]
    power_kw: Optional[float] = None

    @property
    def weight(self) -> float:
        return self.power_kw if self.power_kw is not None else 1.0


@dataclass(frozen=True)
class Capacity:
    """Limits per unit of time; None means unlimited."""
    max_concurrent: Optional[int] = None                         # all zones together
    zone_concurrent: Optional[Sequence[Optional[int]]] = None    # per zone
    zone_power_kw: Optional[Sequence[Optional[float]]] = None    # per zone, sum of power_kw


@dataclass(frozen=True)
class Placement:
    zone: int
    start: int


@dataclass
class FleetPlan:
    placements: list[Optional[Placement]]
    reasons: list[Optional[FailureCode]]  # why each job left out was left out
    emissions: float  # sum of weight x intensity x units over placed jobs
    # Whether no plan places more jobs, or as many for fewer grams (HiGHS proved it, or every job
    # sits at its best start as if there were no limits); else why not (`not_proven`).
    proven_optimal: bool = False
    not_proven: Optional[str] = None
    # At most the least emissions of any plan placing the jobs this one places (equal to
    # `emissions` when proven optimal): the plan's gap is (emissions - lower_bound) / emissions.
    lower_bound: Optional[float] = None

    @property
    def placed(self) -> int:
        return sum(p is not None for p in self.placements)
