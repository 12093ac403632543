"""The image, built from the Dockerfile and run as an orchestrator would run it: read-only root,
/tmp as tmpfs, 1 CPU, the host's Redis; and the CI templates' job scripts (GitLab, GitHub) run as
written in the python3-only base image. Run by `make container-test` (scripts/container-test.sh
installs podman and builds the base image first); skipped elsewhere, saying why.

Podman, not Docker: this machine has no Docker engine (DEPLOYMENT.md, "How the image is checked").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid

import pytest
import redis
import requests

from devkit.paths import ROOT
from devkit.ports import free_port
from devkit.waiting import HANG, wait_for

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
        assert wait_for(healthy, poll=0.2), podman("logs", name).stderr[-3000:]
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
    # Bounded only against a hang (the graceful timeout is 30 s): how long it took is printed, not
    # asserted; what proves the workers went of themselves is in the log.
    code = podman("wait", service["name"], timeout=HANG + 30).stdout.strip()
    print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM")
    logs = podman("logs", service["name"])
    text = logs.stdout + logs.stderr
    assert code == "0", text[-2000:]
    assert "Handling signal: term" in text and "Shutting down: Master" in text
    # Every worker booted exited by itself: one still busy at the graceful timeout (30 s) is
    # SIGKILLed instead, and never logs "Worker exiting" (checked with a stopped worker).
    booted = re.findall(r"Booting worker with pid: (\d+)", text)
    exited = re.findall(r"Worker exiting \(pid: (\d+)\)", text)
    assert booted and sorted(exited) == sorted(booted), (booted, exited)
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


# -- the CI templates' own scripts, in a python3-only Debian image ----------------------------------

def _load_gitlab_ci():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gitlab_ci", ROOT / "scripts" / "gitlab_ci.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Loopback:
    """On the host's loopback (the container shares its network): GET /client.py serves the
    client's one file, as a raw-file URL would; POST /api/v1/optimize answers every workload
    (one, or a batch) with `answer` re-timed to start now, as the service would in its wire format."""

    def __init__(self, answer: dict):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from datetime import datetime, timedelta, timezone
        import threading
        self.requests: list[dict] = []
        self.started: list[str] = []
        loopback = self

        def now_answer(workload: dict) -> dict:
            start = datetime.now(timezone.utc).replace(microsecond=0)
            return {**answer, "id": workload.get("id"), "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "end": (start + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "start_in_seconds": 0, "provenance": {**answer["provenance"], "replan_at": None}}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if self.path == "/client.py":
                    self._send(200, (ROOT / "client" / "carbon_optimizer_client.py").read_bytes(), "text/x-python")
                else:
                    self._send(404, b"", "text/plain")

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.endswith("/started"):  # the client's report that a run started
                    loopback.started.append(self.path)
                    self._send(202, b"", "application/json")
                    return
                loopback.requests.append(body)
                if "workloads" in body:
                    results = [now_answer(w) for w in body["workloads"]]
                    reply = {"results": results, "summary": {"workloads": len(results), "scheduled": len(results),
                                                             "saving_grams": None}}
                else:
                    reply = now_answer(body)
                self._send(200, json.dumps(reply).encode(), "application/json")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def python_only_image():
    """The base image (Debian's python3 from debootstrap, built by scripts/container-test.sh): what
    python:3.12-slim offers a CI job, and less: no git, no make, no pip, a Python marked externally
    managed (PEP 668). Checked, not assumed."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    probe = podman("run", "--rm", BASE_IMAGE, "sh", "-c",
                   "command -v git || command -v make || python3 -m pip --version 2>/dev/null; "
                   "ls /usr/lib/python3*/EXTERNALLY-MANAGED", check=False)
    assert probe.returncode == 0 and probe.stdout.strip().endswith("EXTERNALLY-MANAGED") \
        and len(probe.stdout.split()) == 1, probe.stdout + probe.stderr
    return BASE_IMAGE


@pytest.fixture
def loopback(make_app):
    app = make_app({"CARBON_PROVIDER": "demo"})
    answer = app.test_client().post("/api/v1/optimize", json={"duration": "PT10M", "zones": ["FR"],
                                                              "max_delay": "PT1H"}).get_json()
    assert answer["status"] == "scheduled"
    served = _Loopback(answer)
    yield served
    served.close()


PRINT_TOLD = "#!/bin/sh\nenv | grep '^CARBON_OPTIMIZER_' | grep -v -e _KEY= -e _URL= -e _SHA256= | sort\n"


def run_in_image(image: str, project, script: str, env: dict) -> subprocess.CompletedProcess:
    flags = [item for name, value in env.items() for item in ("-e", f"{name}={value}")]
    return podman("run", "--rm", "--network", "host", "-v", f"{project}:/builds/project", "-w",
                  "/builds/project", *flags, image, "sh", "-c", script, check=False, timeout=120)


def test_the_gitlab_example_jobs_run_as_written_on_python3_alone(python_only_image, loopback, tmp_path):
    """Each job of examples/gitlab/.gitlab-ci.yml that waits, its before_script and script as
    GitLab composes them (the template included, !reference resolved), run by sh in the image: the
    client is fetched from a URL (here the test's loopback server), its digest checked, and the
    job's command is told where it runs."""
    import hashlib
    reader = _load_gitlab_ci()
    jobs = reader.jobs_of(str(ROOT / "examples/gitlab/.gitlab-ci.yml"),
                          str(ROOT / "ci/gitlab/carbon-optimizer.gitlab-ci.yml"))
    for command in ("run-e2e-suite.sh", "run-load-test.sh", "run-suite.sh"):
        (tmp_path / command).write_text(PRINT_TOLD)
        (tmp_path / command).chmod(0o755)
    digest = hashlib.sha256((ROOT / "client" / "carbon_optimizer_client.py").read_bytes()).hexdigest()
    env = {"CARBON_OPTIMIZER_URL": loopback.url, "CARBON_OPTIMIZER_KEY": "FAKE-gitlab-key",
           "CARBON_OPTIMIZER_CLIENT_URL": f"{loopback.url}/client.py", "CARBON_OPTIMIZER_CLIENT_SHA256": digest,
           "CI_JOB_ID": "4711"}
    for job, location in (("nightly-e2e", "FR"), ("nightly-load", "FR")):
        result = run_in_image(python_only_image, tmp_path, reader.shell_script(jobs, job), env)
        assert result.returncode == 0, result.stdout + result.stderr
        told = dict(line.split("=", 1) for line in result.stdout.splitlines() if line.startswith("CARBON_OPTIMIZER_"))
        assert told["CARBON_OPTIMIZER_ZONE"] == location and told["CARBON_OPTIMIZER_ID"] == job, result.stdout
        assert told["CARBON_OPTIMIZER_STATUS"] == "scheduled"
    assert [r["id"] for r in loopback.requests] == ["nightly-e2e", "nightly-load"]
    assert loopback.requests[1]["zones"] == ["aws:eu-west-3", "aws:eu-central-1"]
    assert len(loopback.started) <= 2  # each job's start reported (best effort) by its plan id

    tampered = run_in_image(python_only_image, tmp_path, reader.shell_script(jobs, "nightly-e2e"),
                            {**env, "CARBON_OPTIMIZER_CLIENT_SHA256": "0" * 64})
    assert tampered.returncode != 0 and "does not have the sha256" in tampered.stderr
    assert len(loopback.requests) == 2  # nothing ran


def test_the_delayed_example_plans_and_writes_its_child_pipeline_on_python3_alone(python_only_image, loopback, tmp_path):
    reader = _load_gitlab_ci()
    jobs = reader.jobs_of(str(ROOT / "examples/gitlab/delayed-e2e.gitlab-ci.yml"),
                          str(ROOT / "ci/gitlab/carbon-optimizer.gitlab-ci.yml"))
    variables = jobs["plan-e2e"]["variables"]
    env = {"CARBON_OPTIMIZER_URL": loopback.url, "CARBON_OPTIMIZER_KEY": "FAKE-gitlab-key",
           "CARBON_OPTIMIZER_CLIENT_URL": f"{loopback.url}/client.py", "CI_JOB_ID": "4712",
           **reader.job(jobs, "plan-e2e")["variables"]}
    result = run_in_image(python_only_image, tmp_path, reader.shell_script(jobs, "plan-e2e"), env)
    assert result.returncode == 0, result.stdout + result.stderr
    child = json.loads((tmp_path / variables["CARBON_OPTIMIZER_CHILD"]).read_text())
    assert child["include"] == [{"local": variables["CARBON_OPTIMIZER_JOB_FILE"]}]
    assert child["e2e"]["variables"]["CARBON_OPTIMIZER_ZONE"] == "FR"
    assert (ROOT / variables["CARBON_OPTIMIZER_JOB_FILE"]).exists()  # the job the child includes


def test_the_github_matrix_plan_job_runs_on_an_externally_managed_python(python_only_image, loopback, tmp_path):
    """The plan job's steps of examples/github/carbon-aware-matrix.yml after checkout, by bash as the
    runner runs a step, with the client's URL pointed at the loopback server."""
    import yaml
    workflow = yaml.safe_load((ROOT / "examples/github/carbon-aware-matrix.yml").read_text())
    steps = [step for step in workflow["jobs"]["plan"]["steps"] if "run" in step]
    (tmp_path / ".github").mkdir()
    (tmp_path / ".github" / "carbon-matrix.json").write_text(json.dumps({"workloads": [
        {"id": "unit", "duration": "PT10M"}, {"id": "e2e", "duration": "PT30M"}]}))
    script = "set -e\nmkdir -p /tmp/runner\n" + "\n".join(
        "".join(f"export {name}='{loopback.url}/client.py'\n" for name in step.get("env", {})) + step["run"]
        for step in steps)
    result = run_in_image(python_only_image, tmp_path, script,
                          {"RUNNER_TEMP": "/tmp/runner", "CARBON_OPTIMIZER_URL": loopback.url,
                           "CARBON_OPTIMIZER_KEY": "FAKE-github-key"})
    assert result.returncode == 0, result.stdout + result.stderr
    saved = json.loads((tmp_path / "carbon-optimizer-plan.json").read_text())
    assert [r["id"] for r in saved["results"]] == ["unit", "e2e"]
