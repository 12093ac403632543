"""`create_app(settings, *, secret_store, clock)` is the only place the service is built: importing
the package reads no configuration and builds no client, and tests pass their settings explicitly,
so a developer's own service settings (here SECRETS_BACKEND=aws with no AWS configuration at all)
cannot stop or change the test suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from devkit.paths import ROOT
from devkit.service_process import GunicornProcess
from tests.test_deployment_docs import code_env_vars


def hostile_env(**extra: str) -> dict[str, str]:
    """The developer's environment, with the AWS secrets backend asked for and no way to reach AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PROMETHEUS_"))}
    env.update({"SECRETS_BACKEND": "aws", "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}, **extra)
    return env


def test_importing_every_module_reads_no_settings_and_builds_nothing():
    # Settings that would fail load_settings(), a provider without its key and an unreachable
    # Redis: any of them used at import would raise, open a socket or start a thread.
    env = hostile_env(CARBON_PROVIDER="electricitymaps", REDIS_URL="redis://127.0.0.1:1/0",
                      RATE_LIMIT_DEFAULT="not a limit", VAULT_ADDR="http://127.0.0.1:1")
    script = textwrap.dedent("""
        import importlib, os, pkgutil, sys, threading
        import carbon_optimizer
        # The ledger's migration scripts are Alembic's to run (they read its context), not imports.
        names = ["engine"] + [m.name for m in pkgutil.walk_packages(carbon_optimizer.__path__, "carbon_optimizer.")
                              if ".ledger.migrations." not in m.name + "."]
        for name in names:
            importlib.import_module(name)
        def is_socket(fd):
            try:
                return os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
            except OSError:  # the descriptor listdir itself used, closed by now
                return False
        sockets = [fd for fd in os.listdir("/proc/self/fd") if is_socket(fd)] if os.path.isdir("/proc/self/fd") else []
        built = {"boto3": "boto3" in sys.modules, "hvac": "hvac" in sys.modules,
                 "threads": threading.active_count() - 1, "sockets": len(sockets)}
        print(len(names), built)
        sys.exit(0 if not any(built.values()) else 1)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


@pytest.mark.slow
def test_a_developers_aws_secrets_backend_does_not_stop_the_tests():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_optimizer.py", "-q", "-p", "no:randomly",
         "-p", "no:cacheprovider"],
        cwd=ROOT, env=hostile_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_service_started_by_the_tests_inherits_none_of_the_developers_service_settings(monkeypatch):
    # Every variable the code reads is set in the developer's shell; Gunicorn started by a test
    # sees only what the test gives it and the few it sets itself.
    for name in code_env_vars():
        monkeypatch.setenv(name, "from-the-developers-shell")
    env = GunicornProcess({"CARBON_PROVIDER": "demo"}).env  # built, not started
    inherited = {name for name in code_env_vars() if env.get(name) == "from-the-developers-shell"}
    assert not inherited, sorted(inherited)
