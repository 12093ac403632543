"""What one request may spend on solving: a wall-clock deadline every solver checks, and a cap on
the work it may start (estimated before solving, so a request too big is refused at once rather
than timed out).

The clock is injected (a monotonic one in the service, a fake one in tests): the scheduling core
still reads no clock of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from carbon_optimizer.errors import DeadlineExceeded

# Work is counted in units of about 10 ns of solving on this machine (calibrated by
# bench/worst_requests.py; see planner._cost): the work cap is the deadline in those units, so a
# request estimated to overrun is refused before it starts.
WORK_PER_SECOND = 100_000_000
DEFAULT_SECONDS = 1.5


@dataclass
class Budget:
    seconds: float = DEFAULT_SECONDS
    work: Optional[int] = None  # default: what `seconds` buys
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
    return Budget(seconds=float("inf"), work=2 ** 62)
