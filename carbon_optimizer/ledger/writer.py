"""The Ledger the web layer hands records to: a bounded in-memory queue, written in batches by a
background thread, with a bounded spool for when the database is unreachable.

A request's cost is a deque append per record (no lock, no I/O, never an exception). The thread
writes up to BATCH records at a time, every INTERVAL seconds or sooner when a batch is waiting.
While the database is down, batches go to the spool (in order: once the spool holds records, new
ones go behind them), and the spool is replayed, oldest first, when a write succeeds again; the
store ignores records it already has, so a replay cut short loses and duplicates nothing. Past the
spool's bound (and the queue's) records are dropped: counted, logged once per burst, shown by
health().
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from typing import Callable, Optional, Sequence

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from carbon_optimizer.ledger.records import PlanRecord, RunStarted
from carbon_optimizer.ledger.spool import Record, Spool, SpoolBusy
from carbon_optimizer.ledger.store import LedgerStore
from carbon_optimizer.ledger.urls import scrub
from carbon_optimizer.ops.metrics import LEDGER_DROPPED, LEDGER_QUEUED, LEDGER_SPOOLED, labelled

log = logging.getLogger(__name__)

BATCH = 500
INTERVAL = 0.2
QUEUE_MAX = 20_000            # a worker's queue: far more than a batch interval's records
RETRY_SECONDS = (0.5, 5.0)    # first and longest wait before asking a down database again
REPLAY_SECONDS = 2.0          # one cycle's replay stops after this, so the queue keeps moving
RETENTION_EVERY = 6 * 3600.0  # seconds between retention deletes (each worker; they are idempotent)
SPOOL_RECOUNT = 1.0           # seconds between reads of the spool's size (other workers push too)
BURST_QUIET = 5.0             # seconds without a drop that end a burst of drops (one log line each)



def _unreachable(exc: Exception) -> bool:
    """A database error that is not about the records themselves (those are retried one by one,
    and a record the database still refuses is dropped: spooled, it would only fail again). A
    value the driver cannot even send (an integer past 64 bits, say) is the record's fault too."""
    if not isinstance(exc, SQLAlchemyError):
        return False
    if isinstance(exc, (DataError, IntegrityError)):
        return False
    return isinstance(exc, DBAPIError) or not isinstance(exc, StatementError)


def _split(batch: Sequence[Record]) -> tuple[list[PlanRecord], list[RunStarted]]:
    plans = [r for r in batch if isinstance(r, PlanRecord)]
    runs = [r for r in batch if isinstance(r, RunStarted)]
    return plans, runs


class LedgerWriter:
    """Implements records.Ledger. `fallback`: a spool for when `spool` itself fails (a local file
    behind Redis). `retention_days` None: no retention deletes by this writer."""

    def __init__(self, store: LedgerStore, spool: Spool, *, fallback: Optional[Spool] = None,
                 queue_max: int = QUEUE_MAX,
                 batch: int = BATCH, interval: float = INTERVAL, migrate: bool = True,
                 retention_days: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.spool = spool
        self.fallback = fallback
        self._counts = {id(spool): 0, id(fallback): 0}  # each spool's last size read
        self.queue_max = queue_max
        self.batch = batch
        self.interval = interval
        self.retention_days = retention_days
        self._clock = clock
        self._queue: collections.deque[Record] = collections.deque()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._pid: Optional[int] = None
        self._stopping = False
        self._migrate = migrate
        self._migrated = not migrate
        self._drop_lock = threading.Lock()
        self._db_up = True            # until a write says otherwise
        self._retry_at = 0.0
        self._retry_wait = RETRY_SECONDS[0]
        self._next_retention = 0.0
        self._spooled = 0
        self._counted_at = -SPOOL_RECOUNT
        self._dropped = 0
        self._burst = 0               # records dropped in the current burst
        self._last_drop_at = 0.0
        self._last_error: Optional[str] = None

    # The request side: O(1) per record, never blocks, never raises.

    def submit(self, records: list[PlanRecord]) -> None:
        self._enqueue(records)

    def started(self, report: RunStarted) -> None:
        self._enqueue((report,))

    def _enqueue(self, records: Sequence[Record]) -> None:
        try:
            if self._pid != os.getpid():
                self._start()
            room = self.queue_max - len(self._queue)
            if room < len(records):
                self._drop(len(records) - max(room, 0), "queue_full")
                records = records[:max(room, 0)]
            self._queue.extend(records)
            if len(self._queue) >= self.batch:
                self._wake.set()
        except Exception:  # noqa: BLE001 - a ledger never fails a request
            log.exception("ledger: a record could not be queued")

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid() or self._stopping:
                return
            if self._pid is not None:
                # A forked worker: the parent's connections are not this process's to use.
                self.store.engine.dispose(close=False)
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
            self._thread.start()

    def health(self) -> dict:
        degraded = not self._db_up or self._spooled > 0 or self._burst > 0
        return {"status": "degraded" if degraded else "ok", "queued": len(self._queue),
                "spooled": self._spooled, "dropped": self._dropped,
                "last_error": self._last_error}

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (or spool it, the database being down) within `timeout` seconds."""
        with self._start_lock:
            self._stopping = True
            thread = self._thread if self._pid == os.getpid() else None
        if thread is None and self._queue:
            # Records queued but no thread here (queued before a fork, say): write them now.
            thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
            thread.start()
        if thread is not None:
            self._wake.set()
            thread.join(timeout)
            if thread.is_alive():
                log.warning("ledger: %d records still queued after %.1f s of shutdown; not kept",
                            len(self._queue), timeout)
        self.store.close()

    # The writer thread.

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._cycle(stopping)
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                log.exception("ledger: the writer's cycle failed")
                if stopping:
                    return  # not round again and again until the process ends
            if stopping and not self._queue:
                return

    def _cycle(self, stopping: bool) -> None:
        now = self._clock()
        if now - self._counted_at >= SPOOL_RECOUNT:
            self._recount(now)
        reachable = self._db_up or now >= self._retry_at
        if reachable and not self._migrated:
            reachable = self._attempt(self.store.migrate)
            self._migrated = reachable
        if reachable and self._spooled > 0 and not stopping:
            reachable = self._replay()
        if reachable and self.retention_days and now >= self._next_retention:
            self._retention(now)
        # What is queued now, not what keeps arriving meanwhile: the next cycle looks at the
        # database (and the spool) afresh.
        pending = len(self._queue)
        while pending > 0:
            batch = [self._queue.popleft() for _ in range(min(self.batch, pending))]
            pending -= len(batch)
            if reachable and self._spooled == 0:
                unwritten = self._write(batch)
                if not unwritten:
                    continue
                reachable = False
                batch = unwritten
            self._to_spool(batch)
        self._end_burst()
        LEDGER_QUEUED.set(len(self._queue))
        LEDGER_SPOOLED.set(self._spooled)

    def _attempt(self, action: Callable[[], None]) -> bool:
        """Run a database action; False (and the database marked down) when it is unreachable."""
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - whatever it was, the database is not usable
            return self._down(exc)
        self._up()
        return True

    def _up(self) -> None:
        if not self._db_up:
            log.info("ledger: the database is reachable again")
        self._db_up = True
        self._retry_wait = RETRY_SECONDS[0]

    def _write(self, batch: Sequence[Record]) -> list[Record]:
        """Write a batch; returns what was not written because the database is unreachable
        (nothing when it all went in). A batch the database refuses is written one record at a
        time, and a record it still refuses is dropped (spooling it would only fail again)."""
        plans, runs = _split(batch)
        try:
            self.store.write(plans, runs)
        except Exception as exc:  # noqa: BLE001 - sorted by _unreachable
            if _unreachable(exc):
                self._down(exc)
                return list(batch)
        else:
            self._up()
            return []
        for index, record in enumerate(batch):
            plans, runs = _split((record,))
            try:
                self.store.write(plans, runs)
            except Exception as exc:  # noqa: BLE001
                if _unreachable(exc):
                    self._down(exc)
                    return list(batch[index:])
                self._error(exc)
                self._drop(1, "rejected")
        self._up()
        return []

    def _down(self, exc: Exception) -> bool:
        self._error(exc)
        if self._db_up:
            log.warning("ledger: the database is unreachable (%s); records go to the spool",
                        self._last_error)
        self._db_up = False
        self._migrated = not self._migrate  # a database back from scratch needs its tables again
        self._retry_at = self._clock() + self._retry_wait * random.uniform(0.8, 1.2)
        self._retry_wait = min(self._retry_wait * 2, RETRY_SECONDS[1])
        return False

    def _error(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self._last_error = scrub(text, self.store.url)[:300]

    def _to_spool(self, batch: Sequence[Record]) -> None:
        kept = None
        for spool in (self.spool, self.fallback):
            if spool is None:
                continue
            try:
                kept = spool.push(list(batch))
                self._counts[id(spool)] += kept
                break
            except Exception as exc:  # noqa: BLE001 - Redis down too, a full disk: try the next
                self._error(exc)
        if kept is None:
            self._drop(len(batch), "spool_error")
            return
        self._spooled += kept
        if kept < len(batch):
            self._drop(len(batch) - kept, "spool_full")

    def _replay(self) -> bool:
        """Write the spools' records, oldest first in each; False when the database failed."""
        deadline = self._clock() + REPLAY_SECONDS
        try:
            for spool in (self.fallback, self.spool):
                if spool is not None and self._counts[id(spool)] > 0:
                    if not self._replay_one(spool, deadline):
                        return False
        finally:
            self._recount(self._clock())
        return self._db_up

    def _replay_one(self, spool: Spool, deadline: float) -> bool:
        try:
            with spool.replaying():
                while self._clock() < deadline:
                    records = spool.take(self.batch)
                    # Left in the spool when the database fails: written again next time.
                    if records and self._write(records):
                        return False
                    spool.commit()
                    if not records:
                        break
        except SpoolBusy:
            pass  # another worker is replaying it
        except Exception as exc:  # noqa: BLE001 - the spool failed: try again next cycle
            self._error(exc)
        return True

    def _recount(self, now: float) -> None:
        for spool in (self.spool, self.fallback):
            if spool is None:
                continue
            try:
                self._counts[id(spool)] = spool.size()
            except Exception as exc:  # noqa: BLE001 - keep the last count
                self._error(exc)
        self._spooled = sum(self._counts.values())
        self._counted_at = now

    def _retention(self, now: float) -> None:
        self._next_retention = now + RETENTION_EVERY * random.uniform(0.9, 1.1)
        try:
            deleted = self.store.retention(self.retention_days)
        except Exception as exc:  # noqa: BLE001 - tried again next period
            self._error(exc)
            return
        if deleted:
            log.info("ledger: deleted %d plans older than %d days", deleted, self.retention_days)

    def _drop(self, count: int, reason: str) -> None:
        if count <= 0:
            return
        labelled(LEDGER_DROPPED, reason).inc(count)
        with self._drop_lock:  # request threads drop too (queue_full)
            self._dropped += count
            self._last_drop_at = self._clock()
            first = self._burst == 0
            self._burst += count
        if first:
            log.warning("ledger: dropping records (%s); counted in "
                        "carbon_ledger_records_dropped_total and shown by /health", reason)

    def _end_burst(self) -> None:
        if self._burst and self._clock() - self._last_drop_at >= BURST_QUIET:
            with self._drop_lock:
                burst, self._burst = self._burst, 0
            log.warning("ledger: %d records were dropped in that burst", burst)
