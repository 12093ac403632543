"""`python app.py` (the debug run DEPLOYMENT.md promises) answers /health on the embedded defaults."""
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from carbon_optimizer import settings
from devkit.paths import ROOT
from devkit.ports import free_port
from devkit.waiting import HANG


@pytest.mark.slow
def test_python_app_py_answers_health_on_the_defaults():
    port = free_port()
    # No service configuration at all: what the code embeds is what runs.
    service_vars = set(settings.env_var_names()) | {"ELECTRICITY_MAPS_API_KEY", "API_KEYS", "METRICS_TOKEN"}
    env = {k: v for k, v in os.environ.items() if k not in service_vars
           and not k.startswith(("GUNICORN_", "PROMETHEUS_", "AWS_", "VAULT_"))}
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + HANG  # only a hang: no test asserts speed
        answer = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        assert answer is not None, f"no answer; exit code {process.poll()}"
        assert answer.status_code == 200
        body = answer.json()
        assert body["status"] == "ok"
        assert body["checks"]["provider"]["name"] == "demo"  # no key: the demo provider
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=15)[0].decode()
    # Debug logging by default, and Flask's development server (never Gunicorn) on loopback.
    debug_lines = [line for line in output.splitlines() if '"level": "DEBUG"' in line]
    assert any(f"development server on 127.0.0.1:{port}" in line for line in debug_lines), output
