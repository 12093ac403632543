"""The memory a worker process lends its requests: a pool each request reserves its estimated
working memory from (cost.estimate), so that a worker holds at most its idle size plus the pool
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
        map_large_allocations()  # one pool per worker process: its allocator set up with it
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self._free = capacity
        self._ready = threading.Condition()

    @property
    def free(self) -> int:
        return self._free

    @contextmanager
    def reserve(self, amount: int) -> Iterator[None]:
        amount = max(0, min(amount, self.capacity))  # cost.estimate refuses more than the capacity
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


def _libc(function: str) -> Optional[Callable[..., int]]:
    """A glibc function, or None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), function) if name else None
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc("malloc_trim")
_mallopt = _libc("mallopt")
_M_MMAP_THRESHOLD = -3
# Allocations from this size on are mapped on their own and unmapped when freed (the chunk
# search's tables and ring, the fleet's plans): back to the system at once, whichever thread
# freed them. Smaller ones stay in the arenas (mapping a few hundred kB for every temporary
# costs page faults on each call: window.py).
MMAP_FROM_BYTES = 4 * 2 ** 20


def map_large_allocations() -> None:
    """Fix glibc's mmap threshold at MMAP_FROM_BYTES for this process. Left to itself, glibc
    raises it after each large block freed (up to 32 MiB), so the next ones land in a thread's
    arena and stay resident after they are freed: a worker that ran large searches kept
    240-410 MiB when idle (issue 23)."""
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, MMAP_FROM_BYTES)


def trim() -> None:
    """Hand the pages freed in every malloc arena back to the system: what a request's blocks
    under MMAP_FROM_BYTES left there."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def rss_bytes(pid: Optional[int] = None) -> int:
    """Resident memory of a process (this one by default), from /proc; 0 where there is none."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0
