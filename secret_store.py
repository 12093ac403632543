"""Where the service's secrets come from: the Electricity Maps key and its clients' API keys.

`SecretStore.current()` is what the rest of the service reads, on every use, so a refreshed value
takes effect without a restart. Values never appear in logs, errors or metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional


@dataclass(frozen=True)
class Secrets:
    electricity_maps_api_key: Optional[str] = None
    api_keys: tuple[str, ...] = field(default_factory=tuple)

    def __repr__(self) -> str:  # never print values, even by accident
        return (f"Secrets(electricity_maps_api_key={'set' if self.electricity_maps_api_key else 'unset'}, "
                f"api_keys={len(self.api_keys)})")


def _keys_from_csv(value: Optional[str]) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


class SecretStore:
    """The `env` backend: secrets read once from the environment."""

    backend = "env"

    def __init__(self, environ: Optional[Mapping[str, str]] = None):
        environ = os.environ if environ is None else environ
        self._secrets = Secrets(
            electricity_maps_api_key=(environ.get("ELECTRICITY_MAPS_API_KEY") or "").strip() or None,
            api_keys=_keys_from_csv(environ.get("API_KEYS")),
        )

    def current(self) -> Secrets:
        return self._secrets

    def status(self) -> dict:
        return {"backend": self.backend, "status": "ok"}
