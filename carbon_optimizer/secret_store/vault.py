"""The `vault` backend: one HashiCorp Vault KV version 2 secret (VAULT_ADDR, VAULT_MOUNT,
VAULT_PATH), read with hvac after token, AppRole or Kubernetes authentication, and holding the JSON
object of SECRET_SHAPE."""

from __future__ import annotations

import time
from typing import Optional

from carbon_optimizer.errors import SecretError
from carbon_optimizer.secret_store.base import RefreshingSecretStore, Secrets, guarded, parse_secret


def describe_vault_failure(exc: BaseException) -> Optional[str]:
    """An hvac failure by its kind only (Vault's error text may echo the request)."""
    import hvac.exceptions as hv
    known = {hv.Forbidden: "permission denied (HTTP 403)", hv.Unauthorized: "unauthorized (HTTP 401)",
             hv.VaultDown: "Vault is sealed or down (HTTP 503)", hv.InvalidPath: "no secret at this path (HTTP 404)",
             hv.InternalServerError: "Vault internal error (HTTP 500)"}
    for kind, text in known.items():
        if isinstance(exc, kind):
            return text
    if isinstance(exc, hv.VaultError):
        return f"Vault error {type(exc).__name__}"
    return None


class VaultSecretStore(RefreshingSecretStore):
    backend = "vault"

    def __init__(self, addr: str, mount: str, path: str, auth_method: str, refresh_seconds: float,
                 token: Optional[str] = None, role_id: Optional[str] = None,
                 secret_id: Optional[str] = None, approle_mount: str = "approle",
                 k8s_role: Optional[str] = None, k8s_mount: str = "kubernetes",
                 k8s_token_path: Optional[str] = None, namespace: Optional[str] = None,
                 cacert: Optional[str] = None, require_provider_key: bool = True,
                 start_thread: bool = True):
        import hvac  # only this backend needs it
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

        super().__init__(guarded(fetch, describe_vault_failure), location, refresh_seconds, start_thread)
