"""Where the service's secrets come from: the Electricity Maps key and its clients' API keys.

`SecretStore.current()` is what the rest of the service reads, on every use, so a refreshed value
takes effect without a restart. Values never appear in logs, errors or metrics.

Backends (SECRETS_BACKEND):
- `env` (default): ELECTRICITY_MAPS_API_KEY, API_KEYS (comma-separated), METRICS_TOKEN, read once.
- `aws`: one AWS Secrets Manager secret (AWS_SECRET_ID, AWS_REGION), read with boto3.
- `vault`: one HashiCorp Vault KV version 2 secret (VAULT_ADDR, VAULT_MOUNT, VAULT_PATH), read with
  hvac after token, AppRole or Kubernetes authentication.

The `aws` and `vault` secrets hold one JSON object (SECRET_SHAPE below):

    {"electricity_maps_api_key": "…", "api_keys": ["…", "…"], "metrics_token": "…"}

`api_keys` may also be one comma-separated string (what the AWS console's key/value editor makes);
`metrics_token` is optional. Both backends load at start-up (a failure raises ConfigError, naming the
backend, the location and the missing key) and then refresh every SECRETS_REFRESH_SECONDS in a daemon
thread of each worker; a failed refresh keeps the last good values, is logged and counted.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from carbon_optimizer.ops import metrics
from carbon_optimizer.settings import ConfigError, Settings

log = logging.getLogger(__name__)

# The layout of the secret, for messages; it holds no secret (hence nosec for bandit's B105).
SECRET_SHAPE = (  # nosec B105
    '{"electricity_maps_api_key": "<key>", "api_keys": ["<client key>", ...], "metrics_token": "<optional>"}')


@dataclass(frozen=True)
class Secrets:
    electricity_maps_api_key: Optional[str] = None
    api_keys: tuple[str, ...] = field(default_factory=tuple)
    metrics_token: Optional[str] = None

    def __repr__(self) -> str:  # never print values, even by accident
        return (f"Secrets(electricity_maps_api_key={'set' if self.electricity_maps_api_key else 'unset'}, "
                f"api_keys={len(self.api_keys)}, metrics_token={'set' if self.metrics_token else 'unset'})")

    __str__ = __repr__


class SecretError(Exception):
    """A secret could not be read or is malformed. The message never holds a secret value."""


def _keys_from_csv(value: Optional[str]) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


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
    keys = tuple(dict.fromkeys(k.strip() for k in raw if k.strip()))
    if raw and not keys:
        raise SecretError("key 'api_keys' holds only blank keys")
    token = data.get("metrics_token")
    if token is not None and not isinstance(token, str):
        raise SecretError("key 'metrics_token' must be a string")
    return Secrets(electricity_maps_api_key=em_key, api_keys=keys, metrics_token=(token or "").strip() or None)


class SecretStore:
    """The `env` backend: secrets read once from the environment."""

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

    def current(self) -> Secrets:
        return self._secrets

    def status(self) -> dict:
        return {"backend": self.backend, "status": "ok"}

    def close(self) -> None:
        """Stop background refreshing (nothing to stop for `env`)."""


class RefreshingSecretStore(SecretStore):
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

    def current(self) -> Secrets:
        return self._secrets

    def refresh(self) -> bool:
        """Load the secret again; on failure keep the last good values. True when it worked."""
        try:
            fresh = self._fetch()
            if self._secrets.api_keys and not fresh.api_keys:
                raise SecretError("refusing to drop every client API key on refresh (that would open "
                                  "the API); restart the service to run without keys")
        except Exception as exc:  # noqa: BLE001 - any failure keeps the last good values
            message = str(exc) if isinstance(exc, SecretError) else _describe(exc)
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
            changed = fresh != self._secrets
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


def _describe(exc: BaseException) -> str:
    """A failure, by kind and without any payload: no value can leak through it."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return f"AWS error {error.get('Code', 'unknown')} (HTTP {status})"
        if isinstance(exc, BotoCoreError):
            return f"AWS client error {type(exc).__name__}"
    except ImportError:  # pragma: no cover
        pass
    try:
        import hvac.exceptions as hv
        vault = {hv.Forbidden: "permission denied (HTTP 403)", hv.Unauthorized: "unauthorized (HTTP 401)",
                 hv.VaultDown: "Vault is sealed or down (HTTP 503)", hv.InvalidPath: "no secret at this path (HTTP 404)",
                 hv.InternalServerError: "Vault internal error (HTTP 500)"}
        for kind, text in vault.items():
            if isinstance(exc, kind):
                return text
        if isinstance(exc, hv.VaultError):
            return f"Vault error {type(exc).__name__}"
    except ImportError:  # pragma: no cover
        pass
    import requests
    if isinstance(exc, requests.RequestException):
        return f"cannot reach the secret store ({type(exc).__name__})"
    return f"unexpected error {type(exc).__name__}"


def _wrap(fetch: Callable[[], Secrets]) -> Callable[[], Secrets]:
    """Turn any failure of `fetch` into a SecretError that carries no payload."""
    def guarded() -> Secrets:
        try:
            return fetch()
        except SecretError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise SecretError(_describe(exc)) from None
    return guarded


# -- AWS Secrets Manager --------------------------------------------------------------------------

class AwsSecretStore(RefreshingSecretStore):
    backend = "aws"

    def __init__(self, secret_id: str, region: Optional[str], refresh_seconds: float,
                 require_provider_key: bool = True, endpoint_url: Optional[str] = None,
                 start_thread: bool = True):
        import boto3
        from botocore.config import Config
        if not region and secret_id.startswith("arn:"):
            region = secret_id.split(":")[3] or None  # arn:aws:secretsmanager:<region>:<account>:secret:…
        config = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})
        try:
            client = boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint_url,
                                  config=config)
        except Exception as exc:  # noqa: BLE001 - e.g. NoRegionError
            raise ConfigError(f"secrets (aws backend, secret {secret_id}): cannot build the client "
                              f"({type(exc).__name__}); set AWS_REGION") from None

        def fetch() -> Secrets:
            answer = client.get_secret_value(SecretId=secret_id)
            text = answer.get("SecretString")
            if text is None:
                raise SecretError("the secret has no SecretString (binary secrets are not supported)")
            try:
                data = json.loads(text)
            except ValueError:
                raise SecretError(f"the secret is not JSON; expected {SECRET_SHAPE}") from None
            return parse_secret(data, require_provider_key)

        super().__init__(_wrap(fetch), f"secret {secret_id}", refresh_seconds, start_thread)


# -- HashiCorp Vault, KV version 2 ----------------------------------------------------------------

class VaultSecretStore(RefreshingSecretStore):
    backend = "vault"

    def __init__(self, addr: str, mount: str, path: str, auth_method: str, refresh_seconds: float,
                 token: Optional[str] = None, role_id: Optional[str] = None,
                 secret_id: Optional[str] = None, approle_mount: str = "approle",
                 k8s_role: Optional[str] = None, k8s_mount: str = "kubernetes",
                 k8s_token_path: Optional[str] = None, namespace: Optional[str] = None,
                 cacert: Optional[str] = None, require_provider_key: bool = True,
                 start_thread: bool = True):
        import hvac
        self._client = hvac.Client(url=addr, namespace=namespace, verify=cacert or True, timeout=5)
        self._auth_method = auth_method
        self._login_until = 0.0
        location = f"{addr} {mount}/data/{path.strip('/')}"

        def login() -> None:
            if auth_method == "token":
                self._client.token = token
                self._login_until = float("inf")
                return
            if auth_method == "approle":
                answer = self._client.auth.approle.login(role_id=role_id, secret_id=secret_id,
                                                         mount_point=approle_mount)
            else:
                try:
                    with open(k8s_token_path or "", encoding="utf-8") as handle:
                        jwt = handle.read().strip()
                except OSError:
                    raise SecretError(f"cannot read the Kubernetes service-account token at "
                                      f"{k8s_token_path}") from None
                answer = self._client.auth.kubernetes.login(role=k8s_role, jwt=jwt, mount_point=k8s_mount)
            lease = (answer or {}).get("auth", {}).get("lease_duration") or 0
            # Log in again after two thirds of the token's life (or every refresh if it has none).
            self._login_until = time.monotonic() + lease * 2 / 3 if lease else 0.0

        def read() -> Secrets:
            answer = self._client.secrets.kv.v2.read_secret_version(
                path=path.strip("/"), mount_point=mount, raise_on_deleted_version=True)
            data = (answer or {}).get("data", {}).get("data")
            return parse_secret(data, require_provider_key)

        def fetch() -> Secrets:
            import hvac.exceptions as hv
            if time.monotonic() >= self._login_until:
                login()
            try:
                return read()
            except (hv.Forbidden, hv.Unauthorized):
                if auth_method == "token":
                    raise
                login()  # the login token may have expired or been revoked: once more, fresh
                return read()

        super().__init__(_wrap(fetch), location, refresh_seconds, start_thread)


# -- choice by configuration ----------------------------------------------------------------------

def build_secret_store(settings: Settings, environ: Optional[Mapping[str, str]] = None) -> SecretStore:
    """The store SECRETS_BACKEND asks for, loaded; ConfigError names what is missing, never a value."""
    need_key = settings.carbon_provider not in ("demo", "file")
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
    return SecretStore(environ)
