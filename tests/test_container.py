"""The image, built from the Dockerfile and run as an orchestrator would run it: read-only root,
/tmp as tmpfs, 1 CPU, the host's Redis. Run by `make container-test` (scripts/container-test.sh
installs podman and builds the base image first); skipped elsewhere, saying why.

Podman, not Docker: this machine has no Docker engine (DEPLOYMENT.md, "How the image is checked").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest
import redis
import requests

from tests.support import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow

BASE_IMAGE = os.environ.get("CONTAINER_BASE_IMAGE", "localhost/carbon-optimizer-base:py3.11")
IMAGE = "localhost/carbon-optimizer:smoke"
# Every image these tests build carries LABEL, so that scripts/container-test.sh prunes only what
# they left (older builds, untagged by a newer one) and nothing of anyone else's. The Dockerfile's
# build stage is tagged too: untagged, it would be dangling, and the prune would delete the cache
# the next build reuses (53 s a rerun instead of a few).
LABEL = "carbon-optimizer.container-test=1"
BUILD_STAGE = "localhost/carbon-optimizer:smoke-build-stage"
REDIS_DB = "redis://127.0.0.1:6379/15"
PODMAN_CONF = ROOT / "scripts" / "container-test" / "containers.conf"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": str(PODMAN_CONF)}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, check=check,
                          timeout=timeout)


def _why_not() -> str | None:
    if os.environ.get("CARBON_CONTAINER_TEST") != "1":
        return "container smoke test: run `make container-test` (it installs podman and builds the image)"
    if shutil.which("podman") is None:
        return "container smoke test: podman is not installed (scripts/container-test.sh installs it)"
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        return f"container smoke test: no base image {BASE_IMAGE} (scripts/container-test.sh builds it)"
    probe = podman("run", "--rm", "--network", "host", BASE_IMAGE, "true", check=False)
    if probe.returncode != 0:
        return f"container smoke test: podman cannot run a container here: {probe.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def image():
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    # --format docker keeps the HEALTHCHECK (the OCI format has no field for it).
    common = ("build", "--format", "docker", "--network", "host", "--label", LABEL,
              "--build-arg", f"BASE_IMAGE={BASE_IMAGE}")
    for target in (("--target", "build", "-t", BUILD_STAGE), ("-t", IMAGE)):
        built = podman(*common, *target, str(ROOT), check=False, timeout=600)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    print(f"\nimage build: {time.monotonic() - started:.1f} s")
    return IMAGE


@pytest.fixture(scope="module")
def service(image):
    port = free_port()
    prefix = f"container-smoke-{uuid.uuid4().hex[:8]}:"
    name = f"carbon-smoke-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    podman("run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
           "--cpus", "1",
           "-e", f"GUNICORN_BIND=127.0.0.1:{port}", "-e", f"REDIS_URL={REDIS_DB}",
           "-e", f"CACHE_KEY_PREFIX={prefix}", "-e", "CARBON_PROVIDER=demo",
           "-e", "API_KEYS=smoke-key-one,smoke-key-two", image)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(f"{url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False
    try:
        assert wait_for(healthy, seconds=30, poll=0.2), podman("logs", name).stderr[-3000:]
        print(f"container healthy after {time.monotonic() - started:.1f} s")
        yield {"name": name, "url": url, "prefix": prefix}
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
        client = redis.Redis.from_url(REDIS_DB)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


def inside(service, *command: str) -> subprocess.CompletedProcess:
    return podman("exec", service["name"], *command, check=False)


def test_health_and_an_optimize_request_are_answered_with_the_host_redis(service):
    health = requests.get(f"{service['url']}/health", timeout=5).json()
    assert health["status"] == "ok" and health["checks"]["redis"]["status"] == "ok"
    body = {"duration": "PT1H", "zones": ["DE"], "max_delay": "PT6H"}
    assert requests.post(f"{service['url']}/api/v1/optimize", json=body, timeout=10).status_code == 401
    answer = requests.post(f"{service['url']}/api/v1/optimize", json=body, timeout=10,
                           headers={"X-API-Key": "smoke-key-two"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provenance"]["provider"] == "demo"
    # The forecast went through the host's Redis, under the prefix given to the container.
    client = redis.Redis.from_url(REDIS_DB)
    assert list(client.scan_iter(match=f"{service['prefix']}*"))
    # And from inside the container, as its own health check sees it.
    port = service["url"].rsplit(":", 1)[1]
    local = inside(service, "python", "-c",
                   f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/health').status)")
    assert local.stdout.strip() == "200", local.stderr


def test_runs_as_uid_10001_on_a_read_only_root_with_tmp_as_tmpfs(service):
    assert inside(service, "id", "-u").stdout.strip() == "10001"
    # Gunicorn's master (PID 1) and its workers too, not just a new exec.
    status = inside(service, "cat", "/proc/1/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {"10001"}
    mounts = [line.split() for line in inside(service, "cat", "/proc/mounts").stdout.splitlines()]
    root = [m for m in mounts if m[1] == "/"][-1]
    assert "ro" in root[3].split(",")
    tmp = [m for m in mounts if m[1] == "/tmp"][-1]
    assert tmp[2] == "tmpfs" and "rw" in tmp[3].split(",")
    assert inside(service, "touch", "/app/written").returncode != 0
    assert inside(service, "touch", "/tmp/written").returncode == 0


def test_workers_follow_the_container_cpu_limit_and_start_up_logs_no_error(service):
    logs = podman("logs", service["name"])
    text = logs.stdout + logs.stderr
    # --cpus 1: a CFS quota of one CPU, whatever the host's count.
    assert "3 workers (2 x 1 CPUs + 1" in text and "quota" in text
    assert "CARBON_PROVIDER=demo: serving the built-in demo provider" in text
    assert "[ERROR]" not in text and "Traceback" not in text
    assert "smoke-key" not in text


def test_the_image_healthcheck_command_passes(service):
    config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    check = podman("healthcheck", "run", service["name"], check=False)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.last_in_module  # it stops the container the other tests use
def test_stops_cleanly_on_sigterm(service):
    started = time.monotonic()
    podman("kill", "--signal", "TERM", service["name"])
    code = podman("wait", service["name"], timeout=60).stdout.strip()
    took = time.monotonic() - started
    logs = podman("logs", service["name"])
    text = logs.stdout + logs.stderr
    assert code == "0", text[-2000:]
    assert took < 30  # Gunicorn's graceful timeout; idle workers go at once
    assert "Handling signal: term" in text and "Shutting down: Master" in text
    assert "[ERROR]" not in text and "Traceback" not in text


def test_the_script_prunes_only_the_images_the_test_labels(tmp_path):
    """scripts/container-test.sh with stand-ins for podman and the venv's python that record what
    they are asked: the last step prunes dangling images by the test's label only (a bare
    `podman image prune` removed the build stage's cache, and anyone's dangling images)."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("podman", "runc", "debootstrap"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexit 0\n')
        (bin_dir / tool).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\necho "python $*" >> {calls}\nexit 0\n')
    (venv / "bin" / "python").chmod(0o755)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "container-test.sh")],
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VENV": str(venv)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    prunes = [line for line in calls.read_text().splitlines() if line.startswith("podman image prune")]
    assert prunes == [f"podman image prune -f --filter label={LABEL}"]
    assert "python -m pytest tests/test_container.py" in calls.read_text()
