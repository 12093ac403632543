"""The `env` backend (the default): ELECTRICITY_MAPS_API_KEY, API_KEYS (comma-separated, each
`name=key` or a bare key), METRICS_TOKEN, WATTTIME_USERNAME and WATTTIME_PASSWORD, read once from
the environment, or from the mapping given instead of it."""

from __future__ import annotations

import os
from typing import Mapping, Optional

from carbon_optimizer.errors import ConfigError
from carbon_optimizer.ops.env_variables import EnvVariable
from carbon_optimizer.secret_store.base import BaseSecretStore, Secrets, named_keys

# What this backend reads, for DEPLOYMENT.md's generated configuration table.
VARIABLES: tuple[EnvVariable, ...] = (
    EnvVariable("ELECTRICITY_MAPS_API_KEY", None,
                "Electricity Maps API key (a secret; `env` backend, see "
                "[Secrets and API keys](#secrets-and-api-keys))"),
    EnvVariable("API_KEYS", None, "comma-separated client API keys, each `name=key` or a bare key "
                "(named `key-<position>`) (a secret; `env` backend)"),
    EnvVariable("METRICS_TOKEN", None, "bearer token `/metrics` then requires (a secret; `env` backend)"),
    EnvVariable("WATTTIME_USERNAME", None, "WattTime API username (`env` backend)"),
    EnvVariable("WATTTIME_PASSWORD", None, "WattTime API password (a secret; `env` backend)"),
)


def _refuse_json(value: str) -> None:
    """A JSON list or object here (a secret manager's JSON injected whole) would be split on its
    commas into keys like `["one"`: refuse it at start-up. The value itself is never repeated."""
    stripped = value.strip()
    if stripped.startswith(("[", "{")) or '"' in stripped or "'" in stripped:
        raise ConfigError("secrets (env backend): API_KEYS looks like JSON (brackets or quotes); "
                          "it expects the keys comma-separated, e.g. API_KEYS=key-one,key-two")


class EnvSecretStore(BaseSecretStore):
    """Secrets read once from the environment; a new value needs a restart."""

    backend = "env"
    location = "environment"

    def __init__(self, environ: Optional[Mapping[str, str]] = None):
        environ = os.environ if environ is None else environ
        raw_keys = environ.get("API_KEYS") or ""
        _refuse_json(raw_keys)
        try:
            keys, names = named_keys(raw_keys.split(","))
        except ValueError as exc:
            raise ConfigError(f"secrets (env backend): API_KEYS {exc}") from None
        if raw_keys.strip() and not keys:
            raise ConfigError("secrets (env backend): API_KEYS is set but holds no key")
        self._secrets = Secrets(
            electricity_maps_api_key=(environ.get("ELECTRICITY_MAPS_API_KEY") or "").strip() or None,
            api_keys=keys, api_key_names=names,
            metrics_token=(environ.get("METRICS_TOKEN") or "").strip() or None,
            watttime_username=(environ.get("WATTTIME_USERNAME") or "").strip() or None,
            watttime_password=(environ.get("WATTTIME_PASSWORD") or "").strip() or None,
        )
