"""Build the providers configuration asks for (CARBON_PROVIDERS, or CARBON_PROVIDER alone), the
default first: one instance per signal each serves."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from carbon_optimizer.ops import metrics
from carbon_optimizer.data.providers.base import Provider
from carbon_optimizer.data.providers.csv_file import CsvFileProvider
from carbon_optimizer.data.providers.demo import DemoProvider
from carbon_optimizer.data.providers.electricitymaps import ElectricityMapsProvider
from carbon_optimizer.data.providers.neso import NesoProvider
from carbon_optimizer.data.providers.watttime import WattTimeProvider
from carbon_optimizer.errors import ConfigError
from carbon_optimizer.settings import Settings

log = logging.getLogger(__name__)


class KeySource(Protocol):
    """Where the Electricity Maps key is read (a secret store); read on every call, so a rotated
    key is used at once. Named by shape, so the data layer needs no secret-store import."""
    backend: str

    def current(self) -> Any: ...


# Providers whose zone keys are Electricity Maps' (the cloud-region table's own column): the others
# locate a cloud region by its coordinates.
TABLE_ZONE_PROVIDERS = frozenset({"electricitymaps", "demo", "file", "replay"})


def uses_table_zones(provider: Provider) -> bool:
    return provider.name in TABLE_ZONE_PROVIDERS


def build_providers(settings: Settings, secrets: KeySource) -> list[Provider]:
    """Every configured provider, the default first; ConfigError names what is missing."""
    built: list[Provider] = []
    for choice in settings.providers:
        built.extend(_build(choice, settings, secrets))
    signals = [(p.name, p.signal) for p in built]
    if len(set(signals)) < len(signals):
        raise ConfigError("CARBON_PROVIDERS lists one provider twice (e.g. auto and electricitymaps)")
    return built


def build_provider(settings: Settings, secrets: KeySource) -> Provider:
    """The default provider alone."""
    return build_providers(settings, secrets)[0]


def _build(choice: str, settings: Settings, secrets: KeySource) -> list[Provider]:
    """`choice`'s providers: Electricity Maps once per emission-factor type (average and
    average_direct, each its own cache), the others once."""
    first = _build_one(choice, settings, secrets)
    if isinstance(first, ElectricityMapsProvider):
        return [first, _electricity_maps(settings, secrets, "direct")]
    return [first]


def _upstream(settings: Settings, name: str) -> dict[str, Any]:
    """What every remote provider is given alike: its horizon, the bounds of one upstream call,
    its metrics and how much history to ask for."""
    return dict(horizon_hours=settings.forecast_horizon_hours,
                connect_timeout=settings.upstream_connect_timeout,
                read_timeout=settings.upstream_read_timeout, retries=settings.upstream_retries,
                call_seconds=settings.upstream_call_seconds,
                observer=metrics.observe_upstream(name), history_days=settings.history_days)


def _electricity_maps(settings: Settings, secrets: KeySource, factors: str) -> ElectricityMapsProvider:
    return ElectricityMapsProvider(
        base_url=settings.electricity_maps_base_url,
        api_key=lambda: secrets.current().electricity_maps_api_key,
        emission_factor_type=factors, **_upstream(settings, "electricitymaps"))


def _build_one(choice: str, settings: Settings, secrets: KeySource) -> Provider:
    has_key = bool(secrets.current().electricity_maps_api_key)
    asked = choice
    if choice == "auto":
        choice = "electricitymaps" if has_key else "demo"
    if choice == "electricitymaps":
        if not has_key:
            raise ConfigError("CARBON_PROVIDER=electricitymaps needs an Electricity Maps API key "
                              f"(ELECTRICITY_MAPS_API_KEY from the {secrets.backend} secret store)")
        return _electricity_maps(settings, secrets, "lifecycle")
    if choice == "watttime":
        current = secrets.current()
        if not (getattr(current, "watttime_username", None) and getattr(current, "watttime_password", None)):
            raise ConfigError("the watttime provider needs WATTTIME_USERNAME and WATTTIME_PASSWORD "
                              f"(from the {secrets.backend} secret store)")
        return WattTimeProvider(
            base_url=settings.watttime_base_url,
            username=lambda: secrets.current().watttime_username,
            password=lambda: secrets.current().watttime_password,
            redis_url=settings.redis_url, key_prefix=settings.cache_key_prefix,
            **_upstream(settings, "watttime"))
    if choice == "neso":
        return NesoProvider(base_url=settings.neso_base_url, **_upstream(settings, "neso"))
    if choice == "file":
        try:
            return CsvFileProvider(settings.carbon_data_dir or "", replay=settings.file_replay,
                                   forecast_hours=settings.file_forecast_hours,
                                   history_hours=24 * settings.history_days)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
    # Say why the demo was chosen: an operator who asked for it must not hunt for a missing key.
    reason = ("CARBON_PROVIDER=demo" if asked == "demo"
              else "CARBON_PROVIDER=auto and no Electricity Maps API key")
    log.warning("%s: serving the built-in demo provider; every answer says \"provider\": \"demo\" "
                "and is not real carbon data", reason)
    return DemoProvider(horizon_hours=settings.forecast_horizon_hours)
