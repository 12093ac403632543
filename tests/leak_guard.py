"""Proof that no secret value escapes. Every fake secret the tests use is registered with `secret()`.
A `Scan` collects what happens while it is open: every log record (root logger, INFO and up, as
the service logs by default), plus the answers, texts and files handed to `record*()`;
`assert_clean()` then looks for every registered value in all of it. A scan sees only what it
collected itself, so its verdict does not depend on which tests ran before."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from carbon_optimizer.ops.log_format import JsonFormatter

SECRET_VALUES: set[str] = set()
_OPEN: list["Scan"] = []


def secret(value: str) -> str:
    """Register a fake secret value (distinctive, so a hit cannot be a coincidence), and the forms
    a hash of it would take in text: a hex digest, or any 12-character prefix of one."""
    SECRET_VALUES.add(value)
    for algorithm in ("sha256", "sha1", "md5", "blake2b"):
        SECRET_VALUES.add(hashlib.new(algorithm, value.encode()).hexdigest()[:12])
    return value


class Scan(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []
        self.files: list[Path] = []
        self.log_records = 0
        self._level = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        self.log_records += 1
        try:
            self.texts.append(JsonFormatter().format(record))
        except Exception:  # noqa: BLE001 - a record that cannot format is still a record
            self.texts.append(repr(vars(record)))

    def __enter__(self) -> "Scan":
        root = logging.getLogger()
        # Whatever an earlier test left the root level at, INFO records are made (an app built
        # inside sets its LOG_LEVEL anyway).
        self._level = root.level
        root.setLevel(min(root.level or logging.WARNING, logging.INFO))
        root.addHandler(self)
        _OPEN.append(self)
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)
        _OPEN.remove(self)

    def assert_clean(self) -> int:
        """Fail on any registered value in what was collected; returns how many texts were scanned."""
        texts = list(self.texts)
        for path in self.files:
            if path.is_dir():
                texts += [p.read_bytes().decode("utf-8", "replace") for p in path.rglob("*") if p.is_file()]
            elif path.exists():
                texts.append(path.read_bytes().decode("utf-8", "replace"))
        for value in SECRET_VALUES:
            for text in texts:
                assert value not in text, \
                    "a secret value appears in captured output: " + text[:300].replace(value, "<SECRET>")
        return len(texts)


def record(response) -> None:
    """An HTTP answer (Flask test client or requests): status line, headers and body, to every open scan."""
    body = response.get_data(as_text=True) if hasattr(response, "get_data") else response.text
    record_text(f"{response.status_code} {dict(response.headers)} {body}")


def record_text(text: str) -> None:
    for scan in _OPEN:
        scan.texts.append(text)


def record_file(path: Path) -> None:
    """A file or folder, read when the scan checks (so a log is read after its process wrote it)."""
    for scan in _OPEN:
        scan.files.append(Path(path))
