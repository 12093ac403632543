"""Where the service's secrets come from: the Electricity Maps key and its clients' API keys.

A store's `current()` (see BaseSecretStore) is what the rest of the service reads, on every use, so
a refreshed value takes effect without a restart. Values never appear in logs, errors or metrics.

Backends (SECRETS_BACKEND):
- `env` (default): ELECTRICITY_MAPS_API_KEY, API_KEYS (comma-separated), METRICS_TOKEN,
  WATTTIME_USERNAME, WATTTIME_PASSWORD, read once.
- `aws`: one AWS Secrets Manager secret (AWS_SECRET_ID, AWS_REGION), read with boto3.
- `vault`: one HashiCorp Vault KV version 2 secret (VAULT_ADDR, VAULT_MOUNT, VAULT_PATH), read with
  hvac after token, AppRole or Kubernetes authentication.

The `aws` and `vault` secrets hold one JSON object (SECRET_SHAPE below):

    {"electricity_maps_api_key": "…", "api_keys": ["…", "…"], "metrics_token": "…"}

Each client key may be `name=key` (the name is what the plan ledger records; a bare key is named
`key-<position>`: base.named_keys). `api_keys` may also be one comma-separated string (what the
AWS console's key/value editor makes);
`metrics_token` is optional, and so are `watttime_username` and `watttime_password` (the WattTime
provider's login). Both backends load at start-up (a failure raises ConfigError, naming the
backend, the location and the missing key) and then refresh every SECRETS_REFRESH_SECONDS in a daemon
thread of each worker; a failed refresh keeps the last good values, is logged and counted.

One module per backend (`env.py`, `aws.py`, `vault.py`) on what they share (`base.py`); this module
chooses one by configuration. Nothing is read or built at import: `build_secret_store` does it, when
`create_app` asks.
"""

from __future__ import annotations

from typing import Mapping, Optional

from carbon_optimizer.errors import ConfigError
from carbon_optimizer.secret_store.aws import AwsSecretStore
from carbon_optimizer.secret_store.base import (SECRET_SHAPE, BaseSecretStore, RefreshingSecretStore, Secrets,
                                                parse_secret)
from carbon_optimizer.secret_store.env import EnvSecretStore
from carbon_optimizer.secret_store.vault import VaultSecretStore
from carbon_optimizer.settings import Settings

# Before the split the env backend was the class `SecretStore`, and callers (tests, tools) build one
# from a mapping by that name; it stays that class. Annotate with BaseSecretStore for any backend.
# Imported from this package (carbon_optimizer.secret_store) only, as are the backends: one path a name.
SecretStore = EnvSecretStore

__all__ = ["SECRET_SHAPE", "AwsSecretStore", "BaseSecretStore", "EnvSecretStore", "RefreshingSecretStore",
           "SecretStore", "Secrets", "VaultSecretStore", "build_secret_store", "parse_secret"]


def build_secret_store(settings: Settings, environ: Optional[Mapping[str, str]] = None) -> BaseSecretStore:
    """The store SECRETS_BACKEND asks for, loaded; ConfigError names what is missing, never a value."""
    need_key = any(name in ("auto", "electricitymaps") for name in settings.providers)
    refresh = settings.secrets_refresh_seconds
    if settings.secrets_backend == "aws":
        if not settings.aws_secret_id:
            raise ConfigError("secrets (aws backend): set AWS_SECRET_ID to the secret's name or ARN")
        return AwsSecretStore(settings.aws_secret_id, settings.aws_region, refresh, need_key)
    if settings.secrets_backend == "vault":
        missing = [name for name, value in (("VAULT_ADDR", settings.vault_addr),
                                            ("VAULT_PATH", settings.vault_path)) if not value]
        method = settings.vault_auth_method
        needs = {"token": [("VAULT_TOKEN", settings.vault_token)],
                 "approle": [("VAULT_ROLE_ID", settings.vault_role_id),
                             ("VAULT_SECRET_ID", settings.vault_secret_id)],
                 "kubernetes": [("VAULT_K8S_ROLE", settings.vault_k8s_role)]}[method]
        missing += [name for name, value in needs if not value]
        if missing:
            raise ConfigError(f"secrets (vault backend, {method} auth): set {', '.join(missing)}")
        return VaultSecretStore(
            settings.vault_addr or "", settings.vault_mount, settings.vault_path or "", method, refresh,
            token=settings.vault_token.get_secret_value() if settings.vault_token else None,
            role_id=settings.vault_role_id,
            secret_id=settings.vault_secret_id.get_secret_value() if settings.vault_secret_id else None,
            approle_mount=settings.vault_approle_mount, k8s_role=settings.vault_k8s_role,
            k8s_mount=settings.vault_k8s_mount, k8s_token_path=settings.vault_k8s_token_path,
            namespace=settings.vault_namespace, cacert=settings.vault_cacert,
            require_provider_key=need_key)
    return EnvSecretStore(environ)
