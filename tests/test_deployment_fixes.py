"""Issue 16: what an operator met deploying the service (the ECS secret's JSON in API_KEYS, workers
sized from the host's CPUs, limiter keys outside CACHE_KEY_PREFIX, Gunicorn's control socket under
an unwritable HOME, a misleading demo log line)."""

from __future__ import annotations

import logging

import pytest

from carbon_optimizer.data.providers.factory import build_provider
from carbon_optimizer.errors import ConfigError
from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.settings import load_settings


# -- API_KEYS that is JSON ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    '["ci-key-one","ci-key-two"]',        # the secret's list injected whole
    ' ["ci-key-one"] ',
    '{"api_keys": "ci-key-one"}',         # the whole secret injected into one variable
    '"ci-key-one","ci-key-two"',
    "'ci-key-one'",
])
def test_env_backend_refuses_api_keys_that_look_like_json_without_repeating_them(value):
    with pytest.raises(ConfigError) as raised:
        SecretStore({"API_KEYS": value})
    message = str(raised.value)
    assert "API_KEYS" in message and "comma-separated" in message
    assert "ci-key-one" not in message and value.strip() not in message


def test_env_backend_still_takes_comma_separated_keys():
    store = SecretStore({"API_KEYS": " ci-key-one, ci-key-two "})
    assert store.current().api_keys == ("ci-key-one", "ci-key-two")


# -- why the demo provider was chosen -------------------------------------------------------------

def _demo_warnings(caplog, env, secrets):
    with caplog.at_level(logging.WARNING, logger="carbon_optimizer.data.providers.factory"):
        assert build_provider(load_settings(env), SecretStore(secrets)).name == "demo"
    return [r.getMessage() for r in caplog.records if "demo" in r.getMessage()]


def test_demo_chosen_by_configuration_says_so(caplog):
    # With or without a key: the operator asked for the demo, the log must not blame a missing key.
    for secrets in ({}, {"ELECTRICITY_MAPS_API_KEY": "em-key"}):
        caplog.clear()
        [line] = _demo_warnings(caplog, {"CARBON_PROVIDER": "demo"}, secrets)
        assert "CARBON_PROVIDER=demo" in line and "no Electricity Maps API key" not in line
        assert "em-key" not in line


def test_demo_chosen_for_want_of_a_key_says_that(caplog):
    [line] = _demo_warnings(caplog, {}, {})
    assert "no Electricity Maps API key" in line and "CARBON_PROVIDER=auto" in line
