"""The `aws` backend: one AWS Secrets Manager secret (AWS_SECRET_ID, AWS_REGION), read with boto3
and holding the JSON object of SECRET_SHAPE."""

from __future__ import annotations

import json
from typing import Optional

from carbon_optimizer.errors import ConfigError, SecretError
from carbon_optimizer.secret_store.base import (SECRET_SHAPE, RefreshingSecretStore, Secrets, guarded,
                                                parse_secret)


def describe_aws_failure(exc: BaseException) -> Optional[str]:
    """A botocore failure by its error code and status only (its message may echo the request)."""
    from botocore.exceptions import BotoCoreError, ClientError
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"AWS error {error.get('Code', 'unknown')} (HTTP {status})"
    if isinstance(exc, BotoCoreError):
        return f"AWS client error {type(exc).__name__}"
    return None


class AwsSecretStore(RefreshingSecretStore):
    backend = "aws"

    def __init__(self, secret_id: str, region: Optional[str], refresh_seconds: float,
                 require_provider_key: bool = True, endpoint_url: Optional[str] = None,
                 start_thread: bool = True):
        # boto3 is imported here, not at module level: only this backend needs it, and it is slow.
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

        super().__init__(guarded(fetch, describe_aws_failure), f"secret {secret_id}", refresh_seconds,
                         start_thread)
