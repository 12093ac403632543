"""Demo and data-portal CSV providers, the provider choice, and start-up configuration errors."""

from datetime import datetime, timedelta, timezone

import json

import numpy as np
import pytest

from carbon_optimizer.errors import ConfigError, UpstreamUnavailable, ZoneNotFound
from carbon_optimizer.data.providers.csv_file import CsvFileProvider
from carbon_optimizer.data.providers.demo import DemoProvider
from carbon_optimizer.data.providers.electricitymaps import ElectricityMapsProvider
from carbon_optimizer.data.providers.factory import build_provider
from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.settings import load_settings
from devkit.paths import ROOT
from devkit.service_process import GunicornProcess
from carbon_optimizer.timeseries import series_from_points

SHARED_DATA = ROOT.parent / "shared" / "data" / "carbon-intensity"
NOW = datetime(2026, 11, 23, 10, 17, tzinfo=timezone.utc)


def test_demo_is_deterministic_and_hourly_from_the_current_hour():
    first, second = DemoProvider(72).forecast("DE", NOW), DemoProvider(72).forecast("DE", NOW)
    assert np.array_equal(first.values, second.values)
    assert first.start == datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
    assert len(first.values) == 72 and first.provider == "demo"
    # An hour later the overlapping hours keep their values.
    later = DemoProvider(72).forecast("DE", NOW + timedelta(hours=1))
    assert np.array_equal(later.values[:71], first.values[1:])


def test_demo_follows_the_derived_profile_for_known_zones():
    series = DemoProvider(168).forecast("ES", datetime(2026, 11, 23, tzinfo=timezone.utc))  # a Monday
    profile = json.loads((ROOT / "carbon_optimizer" / "data" / "providers" / "demo_profiles.json").read_text())["profiles"]["ES"]
    ratio = series.values / np.array(profile)
    assert np.all(np.abs(ratio - 1) <= 0.051)  # the documented +-5% wobble, nothing more


def test_series_from_points_refuses_a_grid_too_fine_for_its_span():
    # One second apart once, a year apart overall: a 1 s grid would need 31.5 million slots.
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    points = [(t, 1.0), (t + timedelta(seconds=1), 2.0), (t + timedelta(days=365), 3.0)]
    with pytest.raises(ValueError, match="slots"):
        series_from_points("X", "test", points)


def test_electricity_maps_answer_too_fine_for_its_span_is_a_clean_upstream_error():
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    body = {"zone": "DE", "forecast": [
        {"carbonIntensity": 100, "datetime": t.isoformat()},
        {"carbonIntensity": 100, "datetime": (t + timedelta(seconds=1)).isoformat()},
        {"carbonIntensity": 100, "datetime": (t + timedelta(days=365)).isoformat()}]}
    with pytest.raises(UpstreamUnavailable, match="malformed"):
        ElectricityMapsProvider("https://api.electricitymaps.test/v3", lambda: "k")._series(
            "DE", body, "forecast")


def test_series_from_points_dedups_and_sorts():
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    series = series_from_points("X", "test", [(t + timedelta(hours=1), 2.0), (t, 1.0), (t, 1.5)])
    assert list(series.values) == [1.5, 2.0]


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_file_provider_reads_data_portal_exports():
    provider = CsvFileProvider(str(SHARED_DATA))
    assert provider.zones() == ["ES", "US-CAL-CISO"]
    series = provider.forecast("ES", NOW)
    assert series.start == datetime(2021, 1, 1, tzinfo=timezone.utc)
    assert series.step_seconds == 3600 and len(series.values) == 2 * 8760
    assert series.values[0] == 143.06  # the first row's life-cycle intensity
    with pytest.raises(ZoneNotFound):
        provider.forecast("FR", NOW)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_replay_through_the_api(make_app):
    # The service's "now" is set in the recorded year: an earliest start before now means "from
    # now", so replaying the past over HTTP needs a clock there (the `as_of` of issue 12).
    replayed_now = datetime(2022, 6, 1, tzinfo=timezone.utc)
    client = make_app({"CARBON_PROVIDER": "file", "CARBON_DATA_DIR": str(SHARED_DATA)},
                      clock=lambda: replayed_now).test_client()
    body = client.post("/api/v1/optimize", json={
        "duration": 60, "zones": ["ES", "US-CAL-CISO"], "earliest_start": "2022-06-01T00:00:00Z",
        "max_delay": "PT23H"}).get_json()
    assert body["provenance"]["provider"] == "file" and body["start"].startswith("2022-06-01")


def test_file_provider_rejects_a_foreign_csv(tmp_path):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a data-portal export"):
        CsvFileProvider(str(tmp_path)).forecast("ES", NOW)


def test_provider_choice():
    assert build_provider(load_settings({}), SecretStore({})).name == "demo"
    keyed = SecretStore({"ELECTRICITY_MAPS_API_KEY": "k"})
    assert build_provider(load_settings({}), keyed).name == "electricitymaps"
    with pytest.raises(ConfigError, match="needs an Electricity Maps API key"):
        build_provider(load_settings({"CARBON_PROVIDER": "electricitymaps"}), SecretStore({}))
    with pytest.raises(ConfigError, match="CARBON_DATA_DIR"):
        load_settings({"CARBON_PROVIDER": "file"})


@pytest.mark.parametrize("env,named", [
    ({"CACHE_TTL_SECONDS": "soon"}, "CACHE_TTL_SECONDS"),
    ({"CARBON_PROVIDER": "magic"}, "CARBON_PROVIDER"),
    ({"DEFAULT_ZONES": " , "}, "DEFAULT_ZONES"),
    ({"MAX_BATCH_SIZE": "0"}, "MAX_BATCH_SIZE"),
])
def test_bad_configuration_names_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


@pytest.mark.slow
def test_gunicorn_refuses_to_start_on_bad_configuration(tmp_path):
    log = tmp_path / "gunicorn.log"
    with pytest.raises(RuntimeError, match="exited"):
        with GunicornProcess({"CACHE_TTL_SECONDS": "soon", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
                             workers=1, log_path=log):
            pass
    assert "CACHE_TTL_SECONDS" in log.read_text()


def test_demo_provider_refuses_unknown_zones_and_keeps_one_week_per_zone_it_serves():
    from carbon_optimizer.data.providers import demo
    provider = DemoProvider()
    for zone in ("XX", "XX-A1", "de", "US-CA"):  # well-formed or not, never invented
        with pytest.raises(ZoneNotFound, match=zone):
            provider.forecast(zone, NOW)
        with pytest.raises(ZoneNotFound):
            provider.history(zone, NOW)
    served = provider.zones()
    assert len(served) >= 50 and {"DE", "FR", "ES", "US-CAL-CISO"} <= set(served)
    for zone in served:
        provider.forecast(zone, NOW)
    # Synthetic weeks are kept per zone served (tables need none), so memory is bounded by the list.
    assert demo._synthetic_week.cache_info().currsize <= len(served)
