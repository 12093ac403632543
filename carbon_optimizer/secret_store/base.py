"""What every secret backend shares: the Secrets value, the JSON shape of the remote secret, the
store interface, the refresh loop of the remote backends, and the redaction of failures.

Nothing here knows a particular backend; `env.py`, `aws.py` and `vault.py` build on it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from carbon_optimizer.errors import ConfigError, SecretError
from carbon_optimizer.ops import metrics
from carbon_optimizer.settings import CLIENT_NAME_PATTERN

# The package's name, not this module's: log lines keep the logger name they had before the split.
log = logging.getLogger(__package__)

# The layout of the secret, for messages; it holds no secret (hence nosec for bandit's B105).
SECRET_SHAPE = (  # nosec B105
    '{"electricity_maps_api_key": "<key>", "api_keys": ["<name>=<client key>" or "<client key>", ...], '
    '"metrics_token": "<optional>"}')

# A client's name, as `name=key` in API_KEYS or `api_keys` gives it: what the ledger records and
# logs may show in place of the key. An unnamed key is named by its 1-based position (`key-2`).
CLIENT_NAME = re.compile(CLIENT_NAME_PATTERN)
# An entry whose text after its first "=" is empty or only "=" is base64 padding, not a name: such
# a key shorter than this is refused instead (it is more likely `ci=` with its key left out, e.g.
# an empty template variable, and would be a guessable key).
MIN_PADDED_KEY_LENGTH = 16

# Turns a backend client's exception into words with no payload, or None if it is not that client's.
Describer = Callable[[BaseException], Optional[str]]

__all__ = ["SECRET_SHAPE", "BaseSecretStore", "Describer", "RefreshingSecretStore", "Secrets",
           "describe_failure", "guarded", "named_keys", "parse_secret"]


@dataclass(frozen=True)
class Secrets:
    electricity_maps_api_key: Optional[str] = None
    api_keys: tuple[str, ...] = field(default_factory=tuple)
    metrics_token: Optional[str] = None
    # WattTime logs in with a username and password (both optional: only its provider needs them).
    watttime_username: Optional[str] = None
    watttime_password: Optional[str] = None
    # Each key's client name, in the order of api_keys (named_keys); a Secrets built without
    # names (older callers, tests) names its keys by position. Left out of ==, so that such a
    # Secrets equals the same keys parsed (refresh compares names itself).
    api_key_names: tuple[str, ...] = field(default_factory=tuple, compare=False)

    def client_name(self, index: int) -> str:
        """The name of the client whose key is api_keys[index]."""
        names = self.api_key_names
        return names[index] if index < len(names) else f"key-{index + 1}"

    def __repr__(self) -> str:  # never print values, even by accident
        return (f"Secrets(electricity_maps_api_key={'set' if self.electricity_maps_api_key else 'unset'}, "
                f"api_keys={len(self.api_keys)}, metrics_token={'set' if self.metrics_token else 'unset'}, "
                f"watttime_username={'set' if self.watttime_username else 'unset'}, "
                f"watttime_password={'set' if self.watttime_password else 'unset'})")

    __str__ = __repr__


def parse_secret(data: Any, require_provider_key: bool = True) -> Secrets:
    """The JSON object of the `aws` and `vault` backends, checked; errors name keys, never values."""
    if not isinstance(data, dict):
        raise SecretError(f"the secret is not a JSON object; expected {SECRET_SHAPE}")
    em_key = data.get("electricity_maps_api_key")
    if em_key is not None and not isinstance(em_key, str):
        raise SecretError("key 'electricity_maps_api_key' must be a string")
    em_key = (em_key or "").strip() or None
    if require_provider_key and not em_key:
        raise SecretError("missing key 'electricity_maps_api_key' (or it is empty)")
    if "api_keys" not in data:
        raise SecretError("missing key 'api_keys' (a list of client API keys; [] for an open API)")
    raw = data["api_keys"]
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise SecretError("key 'api_keys' must be a list of strings or one comma-separated string")
    try:
        keys, names = named_keys(raw)
    except ValueError as exc:
        raise SecretError(f"key 'api_keys': {exc}") from None
    if raw and not keys:
        raise SecretError("key 'api_keys' holds only blank keys")
    token = data.get("metrics_token")
    if token is not None and not isinstance(token, str):
        raise SecretError("key 'metrics_token' must be a string")
    return Secrets(electricity_maps_api_key=em_key, api_keys=keys, api_key_names=names,
                   metrics_token=(token or "").strip() or None,
                   watttime_username=_optional_string(data, "watttime_username"),
                   watttime_password=_optional_string(data, "watttime_password"))


def named_keys(entries: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Client keys and their names from entries `name=key` or `key` (blank ones skipped): the
    keys, each once in the order given, and their names, an unnamed key's being `key-<n>` with n
    its 1-based position among the entries. A key may hold "=" (base64 padding) when named.
    ValueError names entries by position only: no text of an entry (which may be a key) is shown."""
    pairs: dict[str, str] = {}     # key -> name, in order
    named_at: dict[str, int] = {}  # name -> the position that took it
    position = 0
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        position += 1
        name, sep, key = entry.partition("=")
        if not sep or not key.strip("="):  # no "=", or only padding after it: a key without name
            if sep and len(entry) < MIN_PADDED_KEY_LENGTH:
                raise ValueError(f"entry {position} ends in '=' with no key after it: give "
                                 "name=key (if '=' is part of a short key, name the key)")
            name, key, explicit = f"key-{position}", entry, False
        else:
            name, key, explicit = name.strip(), key.strip(), True
            if not CLIENT_NAME.fullmatch(name):
                raise ValueError(f"entry {position}: the name before '=' must be 1 to 64 letters, "
                                 "digits, '_', '.' or '-'")
        if key in pairs:
            if explicit and pairs[key] != name:  # one key, two names: whose would its plans be?
                raise ValueError(f"entry {position} repeats the key of an earlier entry under "
                                 "another name; give each client its own key")
            continue  # the same key again: kept once, as before names existed
        if name in named_at:
            raise ValueError(f"entries {named_at[name]} and {position} have the same name; each "
                             "client's name must be unique (unnamed keys are named key-<position>)")
        named_at[name] = position
        pairs[key] = name
    return tuple(pairs), tuple(pairs.values())


def _optional_string(data: dict, key: str) -> Optional[str]:
    """An optional string key of the secret, stripped; blank is unset. Errors name the key only."""
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise SecretError(f"key '{key}' must be a string")
    return (value or "").strip() or None


class BaseSecretStore:
    """What the service reads secrets through. `current()` is called on every use, so a refreshed
    value takes effect without a restart; `status()` is the /health line; `close()` stops any
    background work."""

    backend = "base"
    location = ""
    _secrets: Secrets

    def current(self) -> Secrets:
        return self._secrets

    def status(self) -> dict:
        return {"backend": self.backend, "status": "ok"}

    def close(self) -> None:
        """Stop background refreshing (nothing to stop unless a subclass refreshes)."""


class RefreshingSecretStore(BaseSecretStore):
    """A remote backend: `fetch()` loads every secret; it runs at start-up and then on an interval."""

    backend = "remote"

    def __init__(self, fetch: Callable[[], Secrets], location: str, refresh_seconds: float,
                 start_thread: bool = True):
        self._fetch = fetch
        self.location = location
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._last_success: Optional[float] = None
        self._last_failure: Optional[float] = None
        self._failures = 0  # consecutive
        self._last_error: Optional[str] = None
        try:
            self._secrets = fetch()
        except SecretError as exc:
            raise ConfigError(f"secrets ({self.backend} backend, {location}): {exc}") from None
        self._last_success = time.time()
        metrics.SECRET_REFRESHES.labels(self.backend, "ok").inc()
        log.info("secrets loaded", extra={"secret_backend": self.backend, "secret_location": location,
                                          "api_keys": len(self._secrets.api_keys)})
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if start_thread and refresh_seconds > 0:
            self._thread = threading.Thread(target=self._run, name=f"secret-refresh-{self.backend}",
                                            daemon=True)
            self._thread.start()

    def refresh(self) -> bool:
        """Load the secret again; on failure keep the last good values. True when it worked."""
        try:
            fresh = self._fetch()
            if self._secrets.api_keys and not fresh.api_keys:
                raise SecretError("refusing to drop every client API key on refresh (that would open "
                                  "the API); restart the service to run without keys")
        except Exception as exc:  # noqa: BLE001 - any failure keeps the last good values
            message = str(exc) if isinstance(exc, SecretError) else describe_failure(exc)
            with self._lock:
                self._failures += 1
                self._last_failure = time.time()
                self._last_error = message
            metrics.SECRET_REFRESHES.labels(self.backend, "error").inc()
            log.warning("secret refresh failed; keeping the last good values",
                        extra={"secret_backend": self.backend, "secret_location": self.location,
                               "reason": message, "consecutive_failures": self._failures})
            return False
        with self._lock:
            changed = fresh != self._secrets or fresh.api_key_names != self._secrets.api_key_names
            self._secrets = fresh
            self._failures = 0
            self._last_success = time.time()
            self._last_error = None
        metrics.SECRET_REFRESHES.labels(self.backend, "ok").inc()
        if changed:
            log.info("secrets changed on refresh", extra={
                "secret_backend": self.backend, "api_keys": len(fresh.api_keys)})
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    def close(self) -> None:
        self._stop.set()

    def status(self) -> dict:
        from carbon_optimizer.timeseries import from_epoch, rfc3339
        with self._lock:
            failing = self._failures > 0
            body = {"backend": self.backend, "status": "failing" if failing else "ok",
                    "location": self.location,
                    "last_refresh": rfc3339(from_epoch(int(self._last_success))) if self._last_success else None}
            if failing:
                body["consecutive_failures"] = self._failures
                body["detail"] = f"refresh failing ({self._last_error}); serving the last good values"
        return body


# -- redaction ------------------------------------------------------------------------------------

def describe_failure(exc: BaseException, *describers: Describer) -> str:
    """A failure, by kind and without any payload: no value can leak through it. Each backend
    passes the describer of its own client; what none of them knows is named by type only."""
    for describe in describers:
        text = describe(exc)
        if text is not None:
            return text
    import requests  # imported here, as the backends' clients are: only failures need it
    if isinstance(exc, requests.RequestException):
        return f"cannot reach the secret store ({type(exc).__name__})"
    return f"unexpected error {type(exc).__name__}"


def guarded(fetch: Callable[[], Secrets], *describers: Describer) -> Callable[[], Secrets]:
    """`fetch`, with any failure turned into a SecretError that carries no payload."""
    def run() -> Secrets:
        try:
            return fetch()
        except SecretError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise SecretError(describe_failure(exc, *describers)) from None
    return run
