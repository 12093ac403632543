"""The memory a worker process lends its requests: a pool each request reserves its estimated
working memory from (planner.estimate), so that a worker holds at most its idle size plus the pool
whatever its threads do; and handing freed memory back to the system after a large request.

Why a pool and not a smaller cap per request: 4 threads x the largest request the limits allow
(budget.DEFAULT_MEMORY) would not fit the shipped 512 MiB pod of 3 workers, and a cap a quarter of
that size would refuse reasonable requests (an exact chunk search of a day and a half). With the
pool, a large request (the 500-workload batch of 50 zones reserves 19 MiB) shares its worker
with at most one other, the others wait for them (at most 2 s; then 503 with Retry-After), while
small ones (1-5 MiB) go through at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from carbon_optimizer.errors import Busy

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class MemoryPool:
    """`capacity` bytes lent to requests; a request that cannot have its share within
    `wait_seconds` is refused with Busy (503, Retry-After)."""

    # Long enough for one large request to finish solving (its deadline, 1.5 s) and hand its share on.
    def __init__(self, capacity: int, wait_seconds: float = 2.0):
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self._free = capacity
        self._ready = threading.Condition()

    @property
    def free(self) -> int:
        return self._free

    @contextmanager
    def reserve(self, amount: int) -> Iterator[None]:
        amount = max(0, min(amount, self.capacity))  # the planner refuses more than the capacity
        with self._ready:
            if not self._ready.wait_for(lambda: self._free >= amount, timeout=self.wait_seconds):
                raise Busy(f"this worker's memory for solving ({self.capacity // 2 ** 20} MiB) is "
                           f"held by other requests and this one needs {amount / 2 ** 20:.0f} MiB "
                           "of it; retry shortly, or ask for less (fewer workloads, zones or a "
                           "shorter window)")
            self._free -= amount
        try:
            yield
        finally:
            with self._ready:
                self._free += amount
                self._ready.notify_all()


def _trimmer() -> Optional[Callable[[int], int]]:
    """glibc's malloc_trim, or None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_malloc_trim = _trimmer()


def trim() -> None:
    """Hand the pages freed in every malloc arena back to the system. NumPy's large arrays are
    mapped and unmapped on their own, but glibc raises its mmap threshold after each (up to 32 MiB),
    so the next ones of that size land in a thread's arena and stay resident after they are freed:
    a worker that ran a large search kept 240-410 MiB when idle (issue 23). About 1 ms."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def rss_bytes(pid: Optional[int] = None) -> int:
    """Resident memory of a process (this one by default), from /proc; 0 where there is none."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0
