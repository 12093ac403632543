"""What one request may spend on solving: a wall-clock deadline every solver checks, and caps on
the work it may start and the memory it may hold (both estimated before solving, so a request too
big is refused at once rather than timed out or left to swell a worker).

The clock is injected (a monotonic one in the service, a fake one in tests): the scheduling core
still reads no clock of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from carbon_optimizer.errors import DeadlineExceeded

# Work is counted in units of about 10 ns of solving on this machine (calibrated by
# bench/worst_requests.py; see cost._cost): the work cap is the deadline in those units, so a
# request estimated to overrun is refused before it starts.
WORK_PER_SECOND = 100_000_000
DEFAULT_SECONDS = 1.5
MIB = 2 ** 20
# Working memory one request may hold at its peak, its parsing and answer included (cost.estimate
# counts it). It is also each worker's pool (engine: requests reserve their estimate from it), so a
# worker holds at most this much above its idle size whatever its threads do: 3 workers of ~110 MiB
# idle plus this fit the shipped 512 MiB pod (DEPLOYMENT.md, "Scaling").
DEFAULT_MEMORY = 40 * MIB


@dataclass(frozen=True)
class Cost:
    """A request's estimated solving work (units of about 10 ns) and peak working memory (bytes)."""
    work: int = 0
    memory: int = 0

    def then(self, other: "Cost") -> "Cost":
        """This step followed by `other`: the work adds up, memory held by one is freed before the
        next (the peak is the larger)."""
        return Cost(self.work + other.work, max(self.memory, other.memory))

    def beside(self, other: "Cost") -> "Cost":
        """Both held at once."""
        return Cost(self.work + other.work, self.memory + other.memory)

    @property
    def seconds(self) -> float:
        return self.work / WORK_PER_SECOND


@dataclass(frozen=True)
class RequestCost:
    """What planning one request is estimated to cost (cost.estimate), before any of it."""
    work: int          # solving work it needs: refused over the budget's
    memory: int        # bytes at the request's peak, everything it holds: refused over the budget's
    edge_work: int = 0     # parsing and answers: bounded by the request's size limits
    anytime: bool = False  # the solver improves its plan until the deadline (the fleet)

    def seconds(self, budget: "Budget") -> float:
        """CPU seconds it may take in all, at WORK_PER_SECOND."""
        solving = max(self.work, budget.work or 0) if self.anytime else self.work
        return (solving + self.edge_work) / WORK_PER_SECOND


@dataclass
class Budget:
    seconds: float = DEFAULT_SECONDS
    work: Optional[int] = None  # default: what `seconds` buys
    memory: int = DEFAULT_MEMORY  # bytes of working memory at the peak
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    # True once nobody waits for the answer (the web layer peeks the client's socket): the work
    # then stops at its next check, as at the deadline. Must be cheap: solvers call it in loops.
    cancelled: Optional[Callable[[], bool]] = None

    def __post_init__(self) -> None:
        self.started = self.clock()
        if self.work is None:
            self.work = int(min(self.seconds, 1e6) * WORK_PER_SECOND)

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.deadline or (self.cancelled is not None and self.cancelled())

    def check(self) -> None:
        """Raise DeadlineExceeded once the deadline has passed (or the client has gone)."""
        if self.expired():
            if self.cancelled is not None and self.cancelled():
                raise DeadlineExceeded("the client went away; the search stopped")
            raise DeadlineExceeded(
                f"the search did not finish within this request's {self.seconds:g} s; "
                "ask again, or ask for less (fewer workloads, zones or a shorter window)")


def unlimited() -> Budget:
    """For tools and tests that want no limit (the backtest replays a year of arrivals)."""
    return Budget(seconds=float("inf"), work=2 ** 62, memory=2 ** 62)
