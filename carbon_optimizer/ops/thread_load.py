"""How busy a worker's application threads are, for the readiness answer of /health.

The Gunicorn worker (ops/gunicorn_worker.py) counts the requests it has handed to its application
threads and puts its `ThreadLoad` in every request's WSGI environ under `ENVIRON_KEY`; /health
(web/routes.py) reads it from there. Probes run on a lane of their own, so /health answers while
every application thread is held: without this it said "ok" while no other request could be
served (issue 23: slow readers held every thread and a balancer kept routing to the worker).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

ENVIRON_KEY = "carbon_optimizer.thread_load"
#: Every application thread busy for longer than this makes the worker not ready: short bursts of
#: legitimate work (twenty costly requests at once take a second or two) do not flip it.
DEFAULT_GRACE_SECONDS = 3.0


@dataclass
class ThreadLoad:
    """Application threads in use, counted by the worker's event loop (the only writer); read by
    probe threads (a float and an int: each read is atomic)."""

    threads: int
    grace: float = DEFAULT_GRACE_SECONDS
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    busy: int = 0  # requests handed to the application threads and not finished (queued included)
    saturated_since: Optional[float] = None

    def started(self) -> None:
        self.busy += 1
        if self.busy >= self.threads and self.saturated_since is None:
            self.saturated_since = self.clock()

    def finished(self) -> None:
        self.busy = max(0, self.busy - 1)
        if self.busy < self.threads:
            self.saturated_since = None

    def saturated_for(self) -> float:
        """Seconds every application thread has been busy without a break (0 when one is free)."""
        since = self.saturated_since
        return 0.0 if since is None else max(0.0, self.clock() - since)

    def exhausted(self) -> bool:
        return self.saturated_for() > self.grace
