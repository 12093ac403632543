"""The `env` backend (the default): ELECTRICITY_MAPS_API_KEY, API_KEYS (comma-separated) and
METRICS_TOKEN, read once from the environment, or from the mapping given instead of it."""

from __future__ import annotations

import os
from typing import Mapping, Optional

from carbon_optimizer.errors import ConfigError
from carbon_optimizer.secret_store.base import BaseSecretStore, Secrets


def _keys_from_csv(value: Optional[str]) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


class EnvSecretStore(BaseSecretStore):
    """Secrets read once from the environment; a new value needs a restart."""

    backend = "env"
    location = "environment"

    def __init__(self, environ: Optional[Mapping[str, str]] = None):
        environ = os.environ if environ is None else environ
        raw_keys = environ.get("API_KEYS") or ""
        keys = _keys_from_csv(raw_keys)
        if raw_keys.strip() and not keys:
            raise ConfigError("secrets (env backend): API_KEYS is set but holds no key")
        self._secrets = Secrets(
            electricity_maps_api_key=(environ.get("ELECTRICITY_MAPS_API_KEY") or "").strip() or None,
            api_keys=keys,
            metrics_token=(environ.get("METRICS_TOKEN") or "").strip() or None,
        )
