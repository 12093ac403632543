"""Many zones' fetches at once, waited for until one deadline: a request's carbon data comes from
a slow remote provider in the time of its slowest zone, not the sum of them all."""

from __future__ import annotations

import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from typing import Callable, Mapping, Optional, TypeVar

from carbon_optimizer.settings import Settings

T = TypeVar("T")


class FetchPool:
    """`executor` runs a remote provider's fetches (all of a request's zones at once). Without
    one, calls run on the caller's thread, one after another (the local providers compute, so
    threads would not help)."""

    def __init__(self, executor: Optional[Executor], monotonic: Callable[[], float] = time.monotonic):
        self._pool = executor
        self._monotonic = monotonic

    @property
    def parallel(self) -> bool:
        """Whether calls run on threads of their own (else on the caller's, at once)."""
        return self._pool is not None

    def gather(self, calls: Mapping[str, Callable[[], T]],
               deadline: float) -> dict[str, "Future[T] | None"]:
        """Run `calls` (by zone) on the fetch pool, all at once, and wait for them until
        `deadline` (monotonic). A zone's future is None when it was not done by then; a call not
        yet started is cancelled, so a slow provider does not pile up work for requests that have
        given up. Without a pool the calls run here, one after another."""
        if not calls:
            return {}
        futures: dict[str, Future[T]] = {}
        for zone, call in calls.items():
            if self._pool is None:
                futures[zone] = future = Future()
                try:
                    future.set_result(call())
                except Exception as exc:  # noqa: BLE001  (re-raised by .result(), as from a pool)
                    future.set_exception(exc)
            else:
                futures[zone] = self._pool.submit(call)
        if self._pool is not None and futures:
            wait(futures.values(), timeout=max(0.0, deadline - self._monotonic()))
        done: dict[str, Future[T] | None] = {}
        for zone, future in futures.items():
            if future.done():
                done[zone] = future
            else:
                future.cancel()
                done[zone] = None
        return done

    def close(self, wait: bool = True) -> None:
        """Stop the pool: queued fetches are dropped, running ones finish (each within its call
        budget) when `wait`."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)


def upstream_threads(settings: Settings) -> ThreadPoolExecutor:
    """Threads that wait on the provider's sockets: a request's zones are fetched at once, and
    expired zones refreshed in the background. Started lazily, so in each Gunicorn worker."""
    return ThreadPoolExecutor(max_workers=settings.upstream_concurrency, thread_name_prefix="carbon-upstream")
