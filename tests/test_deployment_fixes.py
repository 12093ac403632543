"""Issue 16: what an operator met deploying the service (the ECS secret's JSON in API_KEYS, workers
sized from the host's CPUs, limiter keys outside CACHE_KEY_PREFIX, Gunicorn's control socket under
an unwritable HOME, a misleading demo log line)."""

from __future__ import annotations

import logging
import os

import pytest

from carbon_optimizer.data.providers.factory import build_provider
from carbon_optimizer.errors import ConfigError
from carbon_optimizer.ops.cpu_budget import cpu_budget
from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.settings import load_settings
from carbon_optimizer.web.app_state import app_state
from devkit.service_process import GunicornProcess


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


# -- workers from the CPUs the process may use ----------------------------------------------------

def _cgroup_v2(root, cpu_max, own="/"):
    (root / own.strip("/")).mkdir(parents=True, exist_ok=True)
    (root / own.strip("/") / "cpu.max").write_text(cpu_max + "\n")
    proc = root / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


def _cgroup_v1(root, quota, period, own="/"):
    directory = root / "cpu,cpuacct" / own.strip("/")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (directory / "cpu.cfs_period_us").write_text(f"{period}\n")
    proc = root / "proc-self-cgroup"
    proc.write_text(f"5:cpu,cpuacct:{own}\n4:memory:{own}\n")
    return proc


@pytest.mark.parametrize("cpu_max,affinity,cpus", [
    ("100000 100000", 32, 1),     # docker run --cpus 1 on a 32-core host
    ("150000 100000", 32, 2),     # 1.5 CPUs: rounded up
    ("50000 100000", 32, 1),      # half a CPU: still one
    ("max 100000", 4, 4),         # no quota: the affinity mask
    ("800000 100000", 2, 2),      # a quota above the CPUs it may run on
])
def test_cpu_budget_from_cgroup_v2_quota_and_affinity(tmp_path, cpu_max, affinity, cpus):
    proc = _cgroup_v2(tmp_path, cpu_max)
    budget = cpu_budget(str(tmp_path), str(proc), affinity=set(range(affinity)))
    assert budget.cpus == cpus
    assert budget.workers() == min(2 * cpus + 1, 17)


def test_cpu_budget_reads_the_process_own_v2_cgroup_and_its_parents(tmp_path):
    # Kubernetes without a cgroup namespace: the limit is on the pod's cgroup, the process in a child.
    proc = _cgroup_v2(tmp_path, "max 100000", own="/kubepods/pod1/ctr")
    (tmp_path / "kubepods" / "pod1" / "cpu.max").write_text("200000 100000\n")
    budget = cpu_budget(str(tmp_path), str(proc), affinity=set(range(16)))
    assert budget.cpus == 2 and "quota" in budget.reason and "v2" in budget.reason


@pytest.mark.parametrize("quota,period,affinity,cpus", [
    (100000, 100000, 32, 1),
    (250000, 100000, 32, 3),
    (-1, 100000, 6, 6),          # -1: no quota
])
def test_cpu_budget_from_cgroup_v1_quota(tmp_path, quota, period, affinity, cpus):
    proc = _cgroup_v1(tmp_path, quota, period)
    assert cpu_budget(str(tmp_path), str(proc), affinity=set(range(affinity))).cpus == cpus


def test_cpu_budget_without_cgroup_files_is_the_affinity_mask_and_workers_are_capped(tmp_path):
    budget = cpu_budget(str(tmp_path / "none"), str(tmp_path / "none"), affinity=set(range(64)))
    assert budget.cpus == 64 and budget.workers() == 17 and "affinity" in budget.reason
    assert cpu_budget(str(tmp_path), str(tmp_path / "x"), affinity={3}).workers() == 3


def _gunicorn_log(tmp_path, env, workers=1):
    log = tmp_path / "gunicorn.log"
    gunicorn = GunicornProcess({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), **env},
                               workers=workers, log_path=log)
    return gunicorn, log


@pytest.mark.slow
def test_gunicorn_sizes_workers_from_the_cpus_it_may_use_and_says_why(tmp_path):
    # Gunicorn started on one CPU of this machine (its affinity is inherited from this process):
    # 2 x 1 + 1 = 3 workers, whatever the host's count.
    gunicorn, log = _gunicorn_log(tmp_path, {}, workers=3)
    del gunicorn.env["GUNICORN_WORKERS"]
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mask)})
    try:
        with gunicorn:
            assert len(gunicorn.worker_pids()) == 3
    finally:
        os.sched_setaffinity(0, mask)
    assert "3 workers (2 x 1 CPUs + 1, at most 17: 1 CPUs in the affinity mask" in log.read_text()


@pytest.mark.slow
def test_gunicorn_workers_setting_wins_and_is_logged(tmp_path):
    gunicorn, log = _gunicorn_log(tmp_path, {"GUNICORN_WORKERS": "2"}, workers=2)
    with gunicorn:
        assert len(gunicorn.worker_pids()) == 2
    assert "2 workers (GUNICORN_WORKERS)" in log.read_text()


@pytest.mark.slow
def test_no_control_socket_error_with_an_unwritable_home(tmp_path):
    # As in a read-only container: HOME cannot be created (under a regular file, so that not even
    # root, as these tests may run, can make it).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker / "home"
    gunicorn, log = _gunicorn_log(tmp_path, {"HOME": str(home)})
    gunicorn.env.pop("XDG_RUNTIME_DIR", None)
    with gunicorn:
        pass
    text = log.read_text()
    assert "Listening at" in text
    assert "[ERROR]" not in text and "Control server" not in text


def test_compose_and_kubernetes_set_workers_for_their_cpu_limits():
    import yaml
    from devkit.paths import ROOT

    api = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    assert api["environment"]["GUNICORN_WORKERS"] == "${GUNICORN_WORKERS:-%d}" % (2 * int(api["cpus"]) + 1)
    config = yaml.safe_load((ROOT / "k8s" / "configmap.yaml").read_text())["data"]
    [container] = yaml.safe_load((ROOT / "k8s" / "deployment.yaml").read_text())[
        "spec"]["template"]["spec"]["containers"]
    cpu_limit = str(container["resources"]["limits"]["cpu"])
    cpus = -(-int(cpu_limit[:-1]) // 1000) if cpu_limit.endswith("m") else int(float(cpu_limit) + 0.999)
    assert config["GUNICORN_WORKERS"] == str(2 * cpus + 1)


# -- every Redis key under CACHE_KEY_PREFIX -------------------------------------------------------

KEYS_REDIS = "redis://127.0.0.1:6379/14"  # a database no other test writes: every new key is ours


def test_every_redis_key_the_service_writes_starts_with_cache_key_prefix():
    import uuid

    import redis

    from carbon_optimizer.web.app import create_app

    prefix = f"co16-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(KEYS_REDIS)
    before = set(client.keys("*"))
    env = {"CARBON_PROVIDER": "demo", "REDIS_URL": KEYS_REDIS, "CACHE_KEY_PREFIX": prefix,
           "RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_DEFAULT": "100 per minute",
           "RATE_LIMIT_OPTIMIZE": "2 per minute"}
    app = create_app(settings=load_settings(env), secret_store=SecretStore(env))
    try:
        web = app.test_client()
        body = {"duration": "PT1H", "zones": ["DE", "FR"], "max_delay": "PT6H"}
        statuses = [web.post("/api/v1/optimize", json=body).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]  # the limiter counted in Redis
        assert web.get("/api/v1/forecast?zone=DE").status_code == 200
        written = {key.decode() for key in set(client.keys("*")) - before}
        assert any("ratelimit" in key for key in written) and len(written) >= 2
        assert [key for key in written if not key.startswith(prefix)] == []
    finally:
        app_state(app).engine.close()
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
