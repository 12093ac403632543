"""Proof that no secret value escapes: every fake secret the security tests use is registered here,
every log record of the test run is captured, and answers, health documents, metrics and Gunicorn
logs are collected; `assert_no_leak()` scans it all for any registered value."""

from __future__ import annotations

import logging
from pathlib import Path

from carbon_optimizer.ops.log_format import JsonFormatter

SECRET_VALUES: set[str] = set()
_TEXTS: list[str] = []
_FILES: list[Path] = []


def secret(value: str) -> str:
    """Register a fake secret value (distinctive, so a hit cannot be a coincidence)."""
    SECRET_VALUES.add(value)
    return value


class _Capture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            _TEXTS.append(JsonFormatter().format(record))
        except Exception:  # noqa: BLE001 - a record that cannot format is still a record
            _TEXTS.append(repr(vars(record)))


_HANDLER = _Capture(level=logging.DEBUG)


def install() -> None:
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)


def record(response) -> None:
    """An HTTP answer (Flask test client or requests): status line, headers and body."""
    body = response.get_data(as_text=True) if hasattr(response, "get_data") else response.text
    _TEXTS.append(f"{response.status_code} {dict(response.headers)} {body}")


def record_text(text: str) -> None:
    _TEXTS.append(text)


def record_file(path: Path) -> None:
    _FILES.append(Path(path))


def assert_no_leak() -> int:
    """Scan everything collected; returns how many texts were scanned (so a test sees it did work)."""
    texts = list(_TEXTS)
    for path in _FILES:
        if path.is_dir():
            texts += [p.read_bytes().decode("utf-8", "replace") for p in path.rglob("*") if p.is_file()]
        elif path.exists():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    for value in SECRET_VALUES:
        for text in texts:
            assert value not in text, "a secret value appears in captured output: " + text[:200].replace(value, "<SECRET>")
    return len(texts)
