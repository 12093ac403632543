"""Waiting on work done in the background or by another process, bounded only against a hang."""

from __future__ import annotations

import time

# A bound only a hang reaches: no test asserts speed (a timed assertion is a flaky test; the
# figures are in bench/ and BENCHMARKS.md), so a wait is bounded only so that a hang fails instead
# of blocking the suite. A passing test never waits this long; a loaded machine never needs to.
HANG = 60.0


def wait_for(condition, seconds: float = HANG, poll: float = 0.02) -> bool:
    """True as soon as `condition()` is (for work done in the background or by another process),
    False if it is still not after `seconds` (by default only a hang is)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True
