"""Where records wait while the database is unreachable: a Redis list (shared by every worker of a
deployment, one key per key prefix) or a local file of JSON lines (fsync'd per batch). Both are
bounded: `push` keeps what fits and says how many that was; the writer counts the rest as dropped.

Replay is take -> write -> commit: `take(n)` reads the oldest n without removing them, `commit(n)`
removes them once the database has them. A replay cut short writes the same records again, which
the store ignores (idempotent by plan id). A lock (a Redis key, or flock on a file) keeps two
workers from replaying, and so removing, the same records at once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Optional, Protocol, Union

from carbon_optimizer.ledger.records import PlanRecord, RunStarted

log = logging.getLogger(__name__)

Record = Union[PlanRecord, RunStarted]


def encode(record: Record) -> str:
    kind = "plan" if isinstance(record, PlanRecord) else "run"
    return json.dumps({"kind": kind, **dataclasses.asdict(record)}, separators=(",", ":"))


def decode(line: Union[str, bytes]) -> Record:
    values = json.loads(line)
    kind = values.pop("kind")
    if kind == "plan":
        values["intervals"] = tuple((a, b) for a, b in values["intervals"])
        return PlanRecord(**values)
    return RunStarted(**values)


def _decoded(lines: list) -> list[Record]:
    records = []
    for line in lines:
        try:
            records.append(decode(line))
        except (ValueError, TypeError, KeyError):
            log.warning("ledger spool: skipped a record that does not decode (%d bytes)", len(line))
    return records


class Spool(Protocol):
    def push(self, records: list[Record]) -> int:
        """Keep as many of `records` as fit, in order; returns how many were kept."""
        ...

    def take(self, limit: int) -> list[Record]:
        """The oldest `limit` records, left in place until commit(); none: the spool is empty. A
        line that does not decode (cut short by a crash) is skipped, and removed by the commit."""
        ...

    def commit(self) -> None:
        """Remove what the last take() returned (now written)."""
        ...

    def size(self) -> int: ...

    def replaying(self): ...  # a context manager: held while take/write/commit run


class FileSpool:
    """JSON lines appended to `path`; `path.offset` holds how many bytes were replayed. The file is
    replaced by an empty one once everything in it is replayed (no rewrite per batch). Shared by the processes of
    one machine through flock on `path.lock`: push() and replaying() each take it (not nested)."""

    def __init__(self, path: Union[str, Path], limit: int) -> None:
        self.path = Path(path)
        self.limit = limit
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._offset_path = self.path.with_name(self.path.name + ".offset")
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        # What this process counted last: (the file's inode, offset, file size, lines past the
        # offset), so a count reads only what was appended since (another process may append too).
        self._counted = (0, 0, 0, 0)
        self._taken = (0, 0, 0)  # (from offset, to offset, lines) of the last take()

    def replaying(self):
        return _FileLock(self._lock_path)

    def _offset(self) -> int:
        try:
            offset = int(self._offset_path.read_text() or 0)
            # Past the end: stale (the file was removed or replaced by hand); read it all again.
            return offset if offset <= os.stat(self.path).st_size else 0
        except (FileNotFoundError, ValueError):
            return 0

    def _count(self) -> int:
        offset = self._offset()
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return 0
        known_file, known_offset, known_size, known_lines = self._counted
        if known_file == status.st_ino and known_offset == offset and offset <= known_size <= status.st_size:
            start, lines = known_size, known_lines
        else:
            start, lines = offset, 0
        with open(self.path, "rb") as spool:
            spool.seek(start)
            while chunk := spool.read(1 << 20):
                lines += chunk.count(b"\n")
        self._counted = (status.st_ino, offset, status.st_size, lines)
        return lines

    def size(self) -> int:
        with _FileLock(self._lock_path):
            return self._count()

    def push(self, records: list[Record]) -> int:
        if not records:
            return 0
        with _FileLock(self._lock_path):
            kept = records[:max(0, self.limit - self._count())]
            if kept:
                with open(self.path, "ab") as spool:
                    spool.write(b"".join(encode(r).encode() + b"\n" for r in kept))
                    spool.flush()
                    os.fsync(spool.fileno())
            return len(kept)

    def take(self, limit: int) -> list[Record]:
        offset = position = self._offset()
        records: list[Record] = []
        try:
            with open(self.path, "rb") as spool:
                spool.seek(offset)
                while len(records) < limit:
                    line = spool.readline()
                    if not line.endswith(b"\n"):
                        break  # end of file (or a line cut short by a crash: never complete)
                    position += len(line)
                    records.extend(_decoded([line]))
        except FileNotFoundError:
            pass
        self._taken = (offset, position, len(records))
        return records

    def commit(self) -> None:
        # Called under replaying(), after take(): past what was taken, or emptied when all is done.
        start, end, _lines = self._taken
        if start != self._offset():
            raise ValueError(f"commit() does not follow take(): the spool moved from {start}")
        if end < os.stat(self.path).st_size:
            self._write_offset(end)
            return
        # All replayed: a new empty file (a new inode, so no process's count mistakes it for the
        # old one), the offset reset first. A crash between the two replays the old file again,
        # which writes nothing twice; the other order could skip a new file's first records.
        self._write_offset(0)
        temporary = self.path.with_name(self.path.name + ".new")
        with open(temporary, "wb") as spool:
            os.fsync(spool.fileno())
        os.replace(temporary, self.path)

    def _write_offset(self, offset: int) -> None:
        temporary = self._offset_path.with_name(self._offset_path.name + ".tmp")
        with open(temporary, "w") as out:
            out.write(str(offset))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self._offset_path)


class _FileLock:
    """flock on a file, for the length of a `with`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def __enter__(self) -> "_FileLock":
        self._file = open(self.path, "a")
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


# Push as many as fit under the bound, atomically across workers: KEYS[1] the list, ARGV[1] the bound,
# ARGV[2:] the records. Returns how many were pushed.
_PUSH = """
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local n = math.min(room, #ARGV - 1)
if n <= 0 then return 0 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 2, n + 1))
return n
"""


class RedisSpool:
    """A Redis list `<prefix>ledger:spool`, shared by every worker and replica of a deployment."""

    LOCK_SECONDS = 60  # longer than one replay batch's write may take (the statement timeout)

    def __init__(self, client, prefix: str, limit: int) -> None:  # noqa: ANN001 - redis.Redis
        self.client = client
        self.key = f"{prefix}ledger:spool"
        self.lock_key = f"{prefix}ledger:spool:replay"
        self.limit = limit
        self._push = client.register_script(_PUSH)
        self._taken = 0

    def size(self) -> int:
        return int(self.client.llen(self.key))

    def push(self, records: list[Record]) -> int:
        if not records:
            return 0
        pushed = 0
        # Lua's unpack has a stack limit: a few thousand arguments per call.
        for start in range(0, len(records), 1000):
            chunk = [encode(r) for r in records[start:start + 1000]]
            count = int(self._push(keys=[self.key], args=[self.limit, *chunk]))
            pushed += count
            if count < len(chunk):
                break
        return pushed

    def take(self, limit: int) -> list[Record]:
        while True:
            lines = self.client.lrange(self.key, 0, limit - 1)
            records = _decoded(lines)
            if records or not lines:
                self._taken = len(lines)
                return records
            self.client.ltrim(self.key, len(lines), -1)  # nothing in them decodes

    def commit(self) -> None:
        self.client.ltrim(self.key, self._taken, -1)
        self._taken = 0

    def replaying(self):
        return _RedisLock(self.client, self.lock_key, self.LOCK_SECONDS)


class SpoolBusy(Exception):
    """Another worker is replaying the spool."""


class _RedisLock:
    _RELEASE = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
                "end return 0")

    def __init__(self, client, key: str, seconds: int) -> None:  # noqa: ANN001
        self.client, self.key, self.seconds = client, key, seconds
        self.token: Optional[str] = None

    def __enter__(self) -> "_RedisLock":
        token = uuid.uuid4().hex
        if not self.client.set(self.key, token, nx=True, ex=self.seconds):
            raise SpoolBusy(self.key)
        self.token = token
        return self

    def __exit__(self, *_exc) -> None:
        self.client.eval(self._RELEASE, 1, self.key, self.token)
