"""Service configuration: one validated object built from the environment at start-up.

Every environment variable the service reads (apart from Gunicorn's own, in gunicorn.conf.py) is a
field alias here, and each field's `description` is its documentation: DEPLOYMENT.md's configuration
table is generated from them (`make docs`). Secret values (the Electricity Maps key, client API keys)
are not settings: see secret_store/.
"""

from __future__ import annotations

import os
from typing import Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator


from carbon_optimizer.errors import ConfigError


# An Electricity Maps zone key, and a cloud region as `provider:region` (lower case, as the
# providers write them). The request models use the same patterns.
ZONE_KEY_PATTERN = r"^[A-Z]{2,3}(-[A-Z0-9]{1,12}){0,3}$"
CLOUD_REGION_PATTERN = r"^[a-z][a-z0-9]{1,9}:[a-z0-9][a-z0-9-]{0,49}$"
# A client's name: an API_KEYS entry `name=key` gives it (secret_store/base.py named_keys), and the
# plan ledger records it in place of the key.
CLIENT_NAME_PATTERN = r"[A-Za-z0-9_.-]{1,64}"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    # Carbon data
    carbon_provider: Literal["auto", "electricitymaps", "watttime", "neso", "demo", "file"] = Field(
        "auto", alias="CARBON_PROVIDER",
        description="`electricitymaps`, `watttime`, `neso`, `demo`, `file`, or `auto` (Electricity "
                    "Maps when a key is set, else demo)")
    carbon_providers: list[Literal["auto", "electricitymaps", "watttime", "neso", "demo", "file"]] = Field(
        default_factory=list, alias="CARBON_PROVIDERS",
        description="several providers at once, comma-separated (e.g. `electricitymaps,watttime,neso`): "
                    "a request's `signal` picks the first that serves it, and the first listed "
                    "serves requests that name none; empty: `CARBON_PROVIDER` alone")
    electricity_maps_base_url: str = Field(
        "https://api.electricitymaps.com/v4", alias="ELECTRICITY_MAPS_BASE_URL",
        description="Electricity Maps API base URL; its last path segment picks the API version "
                    "(`/v4`; `/v3` is still accepted)")
    neso_base_url: str = Field(
        "https://api.carbonintensity.org.uk", alias="NESO_BASE_URL",
        description="NESO Carbon Intensity API base URL (Great Britain; no key)")
    watttime_base_url: str = Field(
        "https://api.watttime.org", alias="WATTTIME_BASE_URL",
        description="WattTime API base URL (its /login and /v3 endpoints are under it)")
    forecast_horizon_hours: int = Field(72, ge=1, le=168, alias="FORECAST_HORIZON_HOURS",
                                        description="forecast horizon asked of the provider, in hours")
    upstream_connect_timeout: float = Field(1.5, gt=0, le=60, alias="UPSTREAM_CONNECT_TIMEOUT",
                                            description="seconds to connect to the provider")
    upstream_read_timeout: float = Field(
        10.0, gt=0, le=120, alias="UPSTREAM_READ_TIMEOUT",
        description="seconds one socket read may wait (within `UPSTREAM_CALL_SECONDS`)")
    upstream_retries: int = Field(
        2, ge=0, le=10, alias="UPSTREAM_RETRIES",
        description="retries (with backoff) on connection errors, 429 and 5xx, within "
                    "`UPSTREAM_CALL_SECONDS`")
    upstream_call_seconds: float = Field(
        4.0, gt=0, le=120, alias="UPSTREAM_CALL_SECONDS",
        description="seconds one upstream call may take in all: every attempt, read and backoff "
                    "(`UPSTREAM_READ_TIMEOUT` is per read)")
    upstream_deadline_seconds: float = Field(
        5.0, gt=0, le=120, alias="UPSTREAM_DEADLINE_SECONDS",
        description="how long a request waits for the carbon data of all its zones (fetched at "
                    "once); a zone not there by then is served from its stale copy if there is one, "
                    "else fails with 503 + Retry-After")
    upstream_concurrency: int = Field(
        8, ge=1, le=64, alias="UPSTREAM_CONCURRENCY",
        description="upstream calls in flight at once per worker (fetches and background "
                    "refreshes, on threads that only wait on sockets)")
    carbon_data_dir: Optional[str] = Field(
        None, alias="CARBON_DATA_DIR",
        description="folder of Electricity Maps data-portal CSV exports, for `CARBON_PROVIDER=file`")
    file_replay: bool = Field(
        False, alias="FILE_REPLAY",
        description="with `CARBON_PROVIDER=file`: a request may carry `\"as_of\"` (RFC 3339; on a "
                    "workload or at the top of a batch) and is answered as if it were then: the "
                    "exports up to `as_of` + `FILE_FORECAST_HOURS` are the forecast, what lies "
                    "before the history, `start_in_seconds` counts from `as_of`. Without it `as_of` "
                    "is a 400")
    file_forecast_hours: float = Field(24, gt=0, le=24 * 14, alias="FILE_FORECAST_HOURS",
                                       description="hours of forecast a replay reveals past `as_of`")
    history_days: int = Field(
        10, ge=1, le=10, alias="HISTORY_DAYS",
        description="days of a zone's measured history that estimates past a forecast are made "
                    "from (at most 10: Electricity Maps' past-range answers 10 days of hourly data "
                    "in one call)")
    zone_list_ttl_seconds: int = Field(
        21_600, ge=60, le=7 * 86_400, alias="ZONE_LIST_TTL_SECONDS",
        description="how long the provider's zone list is kept (in Redis when configured): it "
                    "changes rarely")
    cloud_region_overrides: dict[str, str] = Field(
        default_factory=dict, alias="CLOUD_REGION_OVERRIDES",
        description="cloud regions resolved otherwise than the built-in table says, or added to "
                    "it: `aws:eu-west-1=IE,gcp:my-region1=DE`")

    # Scheduling defaults
    default_zones: list[str] = Field(
        default_factory=lambda: ["DE"], alias="DEFAULT_ZONES",
        description="comma-separated zones (or cloud regions) used when a workload names none")
    default_window_hours: int = Field(
        24, ge=1, le=24 * 14, alias="DEFAULT_WINDOW_HOURS",
        description="allowed window, in hours, when a workload gives no deadline, latest start or "
                    "delay")
    max_batch_size: int = Field(500, ge=1, le=100_000, alias="MAX_BATCH_SIZE",
                                description="most workloads in one request")
    max_body_bytes: int = Field(1_048_576, ge=1024, alias="MAX_BODY_BYTES",
                                description="largest request body, in bytes")
    solve_timeout_seconds: float = Field(
        1.5, gt=0, le=60, alias="SOLVE_TIMEOUT_SECONDS",
        description="wall-clock seconds one optimize request may spend solving (every solver "
                    "checks it); a request estimated to need more is refused at once with 422 "
                    "`too_large` naming what to change, one that runs out of time gets 503 "
                    "`deadline_exceeded` (in a batch: the workloads left)")

    # Cache
    redis_url: Optional[str] = Field(
        None, alias="REDIS_URL",
        description="e.g. `redis://localhost:6379/0`; unset: an in-process cache per worker (and "
                    "rate limits counted per worker)")
    cache_key_prefix: str = Field("carbon-optimizer:", min_length=1, max_length=100,
                                  alias="CACHE_KEY_PREFIX",
                                  description="prefix of every Redis key the service writes")
    cache_ttl_seconds: int = Field(300, ge=1, alias="CACHE_TTL_SECONDS",
                                   description="how long a fetched forecast is fresh")
    cache_stale_ttl_seconds: int = Field(
        86_400, ge=1, alias="CACHE_STALE_TTL_SECONDS",
        description="how long the last good forecast is kept to serve, flagged stale, when the "
                    "provider fails")
    history_ttl_seconds: int = Field(
        6 * 3600, ge=60, alias="HISTORY_TTL_SECONDS",
        description="how long a zone's fetched history is fresh (days of measurements move "
                    "slowly: one upstream call per zone per TTL)")
    upstream_failure_backoff_seconds: int = Field(
        30, ge=0, alias="UPSTREAM_FAILURE_BACKOFF_SECONDS",
        description="after a failed fetch, serve stale (or 503) for this long before asking the "
                    "provider again")

    # The ledger of plans (issue 29; see ledger/). DATABASE_URL is a SecretStr: it may hold a
    # password, which no repr, log line or error shows.
    ledger_enabled: bool = Field(
        True, alias="LEDGER_ENABLED",
        description="keep a record of every plan in the ledger database (`false`: none is kept)")
    database_url: Optional[SecretStr] = Field(
        None, alias="DATABASE_URL",
        description="the ledger database, e.g. `postgresql+psycopg://user:password@host:5432/db` "
                    "(a secret: never logged); unset: the SQLite file `ledger.db` in `LEDGER_DIR`. "
                    "The schema is migrated at start, or by `python -m "
                    "carbon_optimizer.ledger.migrate`")
    ledger_dir: str = Field(
        "/tmp/carbon-optimizer", min_length=1, alias="LEDGER_DIR",
        description="writable folder of the default SQLite ledger and of the ledger's spool file "
                    "(records kept while the database is unreachable, when `REDIS_URL` is unset)")
    ledger_spool_max: int = Field(
        100_000, ge=0, le=10_000_000, alias="LEDGER_SPOOL_MAX",
        description="most records kept in the spool (Redis, else the file) while the database is "
                    "unreachable; past it records are dropped, counted "
                    "(`carbon_ledger_records_dropped_total`) and shown by `/health`")
    ledger_retention_days: int = Field(
        400, ge=1, le=36_500, alias="LEDGER_RETENTION_DAYS",
        description="plans older than this many days are deleted from the ledger")

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", alias="LOG_LEVEL", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`")

    # Secret store (issue 3; see secret_store/). VAULT_TOKEN and VAULT_SECRET_ID are SecretStr so
    # that no repr, log line or error ever shows them.
    environment: Literal["production", "development"] = Field(
        "production", alias="ENVIRONMENT",
        description="`development` allows Flask's debug mode; `production` forces it off")
    secrets_backend: Literal["env", "aws", "vault"] = Field(
        "env", alias="SECRETS_BACKEND",
        description="where secrets come from: `env`, `aws` (Secrets Manager) or `vault` (KV v2); "
                    "see [Secrets and API keys](#secrets-and-api-keys)")
    secrets_refresh_seconds: int = Field(
        300, ge=0, le=86_400, alias="SECRETS_REFRESH_SECONDS",
        description="how often `aws`/`vault` secrets are read again (rotation without restart); "
                    "`0`: only at start-up")
    aws_secret_id: Optional[str] = Field(None, alias="AWS_SECRET_ID",
                                         description="`aws`: the secret's name or ARN")
    aws_region: Optional[str] = Field(
        None, alias="AWS_REGION",
        description="`aws`: region (else boto3's `AWS_DEFAULT_REGION`, or the region in the ARN)")
    vault_addr: Optional[str] = Field(None, alias="VAULT_ADDR",
                                      description="`vault`: e.g. `https://vault.example.com:8200`")
    vault_namespace: Optional[str] = Field(None, alias="VAULT_NAMESPACE",
                                           description="`vault`: Enterprise/HCP namespace")
    vault_cacert: Optional[str] = Field(
        None, alias="VAULT_CACERT", description="`vault`: CA bundle file for Vault's TLS certificate")
    vault_mount: str = Field("secret", min_length=1, alias="VAULT_MOUNT",
                             description="`vault`: mount point of the KV version 2 engine")
    vault_path: Optional[str] = Field(
        None, alias="VAULT_PATH",
        description="`vault`: path of the secret in that mount, e.g. `carbon-optimizer/prod`")
    vault_auth_method: Literal["token", "approle", "kubernetes"] = Field(
        "token", alias="VAULT_AUTH_METHOD",
        description="`vault`: `token`, `approle` or `kubernetes`")
    vault_token: Optional[SecretStr] = Field(None, alias="VAULT_TOKEN",
                                             description="`vault` + `token`: the token (a secret)")
    vault_role_id: Optional[str] = Field(None, alias="VAULT_ROLE_ID",
                                         description="`vault` + `approle`: role ID")
    vault_secret_id: Optional[SecretStr] = Field(
        None, alias="VAULT_SECRET_ID", description="`vault` + `approle`: secret ID (a secret)")
    vault_approle_mount: str = Field("approle", min_length=1, alias="VAULT_APPROLE_MOUNT",
                                     description="`vault` + `approle`: auth mount")
    vault_k8s_role: Optional[str] = Field(
        None, alias="VAULT_K8S_ROLE",
        description="`vault` + `kubernetes`: Vault role bound to the pod's service account")
    vault_k8s_mount: str = Field("kubernetes", min_length=1, alias="VAULT_K8S_MOUNT",
                                 description="`vault` + `kubernetes`: auth mount")
    vault_k8s_token_path: str = Field("/var/run/secrets/kubernetes.io/serviceaccount/token",
                                      alias="VAULT_K8S_TOKEN_PATH",
                                      description="`vault` + `kubernetes`: service-account JWT")

    # Public-API protection (issue 3; see web/auth.py, web/limits.py, web/headers.py)
    docs_access: Literal["public", "api_key", "disabled"] = Field(
        "public", alias="DOCS_ACCESS",
        description="`/docs` and `/api/v1/openapi.json`: `public`, `api_key` (need `X-API-Key` "
                    "when keys exist; a browser opening `/docs` sends none, so then only programs, "
                    "with the key, read the JSON document) or `disabled`")
    metrics_allow_cidrs: list[str] = Field(
        default_factory=list, alias="METRICS_ALLOW_CIDRS",
        description="comma-separated networks allowed to read `/metrics` (e.g. `10.0.0.0/8`); "
                    "unset: any")
    rate_limit_enabled: bool = Field(True, alias="RATE_LIMIT_ENABLED",
                                     description="rate limits on or off ([Rate limits](#rate-limits))")
    rate_limit_default: str = Field(
        "100 per hour", alias="RATE_LIMIT_DEFAULT",
        description="budget per client (API key, else IP) shared by every limited route without a "
                    "limit of its own")
    rate_limit_optimize: str = Field(
        "20 per minute", alias="RATE_LIMIT_OPTIMIZE",
        description="budget per client of `POST /api/v1/optimize`, its own: these requests do not "
                    "spend `RATE_LIMIT_DEFAULT`; run-start reports (`POST /api/v1/plans/{plan_id}/"
                    "started`) have a budget of this size of their own")
    trusted_proxy_count: int = Field(
        0, ge=0, le=5, alias="TRUSTED_PROXY_COUNT",
        description="proxies in front that append to `X-Forwarded-For` (`1` behind an ALB); the "
                    "client IP is read that many hops from the right; needs `TRUSTED_PROXY_CIDRS`")
    trusted_proxy_cidrs: list[str] = Field(
        default_factory=list, alias="TRUSTED_PROXY_CIDRS",
        description="comma-separated networks of those proxies (behind an ALB: its subnets, e.g. "
                    "`10.0.0.0/24,10.0.1.0/24`); `X-Forwarded-For` is believed only from a peer "
                    "inside them, each hop; set both or neither")
    cors_origins: list[str] = Field(
        default_factory=list, alias="CORS_ORIGINS",
        description="comma-separated browser origins allowed on `/api/*` (e.g. "
                    "`https://ci.example.com`); none by default")

    # The plan ledger (issue 29; ledger/)
    ledger_admin_clients: list[str] = Field(
        default_factory=list, alias="LEDGER_ADMIN_CLIENTS",
        description="comma-separated client names (API_KEYS `name=key`; an unnamed key is "
                    "`key-<position>`) whose savings report covers every client's plans; any "
                    "other client sees only its own")

    @field_validator("ledger_admin_clients", mode="before")
    @classmethod
    def _admins_from_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("ledger_admin_clients")
    @classmethod
    def _client_names(cls, value: list[str]) -> list[str]:
        import re
        for name in value:
            if not re.fullmatch(CLIENT_NAME_PATTERN, name):
                raise ValueError(f"{name[:70]!r} is not a client name (1 to 64 letters, digits, "
                                 "'_', '.' or '-', as API_KEYS `name=key` gives it)")
        return list(dict.fromkeys(value))

    @field_validator("carbon_providers", mode="before")
    @classmethod
    def _providers_list(cls, value: object) -> object:
        return _split_csv(value)

    @property
    def providers(self) -> list[str]:
        """The providers configured, the default first, each once."""
        return list(dict.fromkeys(self.carbon_providers or [self.carbon_provider]))

    @field_validator("default_zones", mode="before")
    @classmethod
    def _zones_from_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("default_zones")
    @classmethod
    def _zones_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one zone is required")
        return value

    @field_validator("cloud_region_overrides", mode="before")
    @classmethod
    def _overrides_from_csv(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = {}
        for part in _split_csv(value):  # type: ignore[union-attr]
            region, sep, zone = part.partition("=")
            if not sep:
                raise ValueError(f"{part!r} is not provider:region=ZONE, e.g. aws:eu-west-1=IE")
            pairs[region.strip().lower()] = zone.strip()
        return pairs

    @field_validator("cloud_region_overrides")
    @classmethod
    def _overrides(cls, value: dict[str, str]) -> dict[str, str]:
        import re
        for region, zone in value.items():
            if not re.fullmatch(CLOUD_REGION_PATTERN, region):
                raise ValueError(f"{region!r} is not provider:region, e.g. aws:eu-west-1")
            if not re.fullmatch(ZONE_KEY_PATTERN, zone):
                raise ValueError(f"{zone!r} (for {region}) is not a zone key such as DE or US-CAL-CISO")
        return value

    @field_validator("metrics_allow_cidrs", "trusted_proxy_cidrs", "cors_origins", mode="before")
    @classmethod
    def _lists_from_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("metrics_allow_cidrs", "trusted_proxy_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network such as 10.0.0.0/8") from None
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        import re
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
                raise ValueError(f"{origin!r} is not an origin such as https://ci.example.com")
        return value

    @field_validator("rate_limit_default", "rate_limit_optimize")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit such as '100 per hour'") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url", "carbon_data_dir", "database_url", "aws_secret_id", "aws_region", "vault_addr",
                     "vault_namespace", "vault_cacert", "vault_path", "vault_token", "vault_role_id",
                     "vault_secret_id", "vault_k8s_role", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def ledger_database_url(self) -> str:
        """The ledger's database: DATABASE_URL, or the SQLite file in LEDGER_DIR."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{os.path.join(self.ledger_dir, 'ledger.db')}"

    @property
    def upstream_lock_seconds(self) -> float:
        """How long a fetch lock is held at most: one upstream call's budget, plus a margin for
        decoding and writing its answer."""
        return self.upstream_call_seconds + 1.0


def env_var_names() -> set[str]:
    """The environment variables Settings reads."""
    return {field.alias for field in Settings.model_fields.values() if field.alias}


def load_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Build Settings from the environment, or raise ConfigError naming each bad variable."""
    environ = os.environ if environ is None else environ
    raw = {name: environ[name] for name in env_var_names() if name in environ}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = error["loc"][0] if error["loc"] else "?"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    if "file" in settings.providers and not settings.carbon_data_dir:
        raise ConfigError("invalid configuration: the file provider needs CARBON_DATA_DIR")
    # Each proxy setting needs the other. A count alone used to trust X-Forwarded-For from any peer;
    # refusing to start is louder than defaulting the networks to loopback, which behind an ALB
    # would quietly make every client the ALB (one shared rate-limit budget).
    if bool(settings.trusted_proxy_count) != bool(settings.trusted_proxy_cidrs):
        raise ConfigError("invalid configuration: TRUSTED_PROXY_COUNT and TRUSTED_PROXY_CIDRS go "
                          "together: set both (the number of proxies that append to X-Forwarded-For, "
                          "and their networks, e.g. the ALB's subnets) or neither")
    return settings
