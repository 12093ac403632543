"""The service as users run it: `gunicorn -c gunicorn.conf.py app:app` as a process on a free
loopback port, with only the settings its caller gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import requests

from carbon_optimizer import settings
from carbon_optimizer.secret_store.env import VARIABLES as SECRET_VARIABLES
from devkit.paths import ROOT
from devkit.ports import free_port
from devkit.waiting import HANG


class _PortTaken(Exception):
    pass


class GunicornProcess:
    """`gunicorn -c gunicorn.conf.py app:app` on a free loopback port, stopped on exit.

    `app` another WSGI app under the same configuration (bench/ runs a plain Flask app so);
    `root` another checkout whose app and gunicorn.conf.py run (bench/ compares two trees)."""

    def __init__(self, env: dict[str, str], workers: int = 2, threads: int = 4,
                 log_path: Optional[Path] = None, app: str = "app:app", root: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.app, self.root = app, root
        # The developer's own service settings (a SECRETS_BACKEND, AWS or Vault credentials, a
        # REDIS_URL) must not leak into a test's service: only what the test gives is configured.
        # Rate limits (web/limits.py) are off unless a test turns them on: load tests would meet them.
        service_vars = set(settings.env_var_names()) | {v.name for v in SECRET_VARIABLES}
        inherited = {k: v for k, v in os.environ.items() if k not in service_vars
                     and not k.startswith(("GUNICORN_", "PROMETHEUS_", "AWS_", "VAULT_"))}
        # Each service its own ledger folder (SQLite file and spool): test services run side by side.
        self.env = {"RATE_LIMIT_ENABLED": "false", **inherited,
                    "LEDGER_DIR": tempfile.mkdtemp(prefix="carbon-optimizer-ledger-"),
                    "GUNICORN_BIND": f"127.0.0.1:{self.port}", "GUNICORN_WORKERS": str(workers),
                    "GUNICORN_THREADS": str(threads), **env}
        self.log_path = log_path
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "GunicornProcess":
        # free_port() only finds a port that was free: another test process (make test runs two)
        # may bind it first. Gunicorn then exits saying so, and it is started again on another.
        for _ in range(3):
            log_path = self.log_path or Path(tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
            with open(log_path, "wb") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app], cwd=self.root,
                    env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                return self._started(log_path)
            except _PortTaken:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.env["GUNICORN_BIND"] = f"127.0.0.1:{self.port}"
            finally:
                if not self.log_path:
                    log_path.unlink(missing_ok=True)
        raise RuntimeError("gunicorn found its port taken three times")

    def _started(self, log_path: Path) -> "GunicornProcess":
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "in use" in log_path.read_text(errors="replace"):
                    raise _PortTaken()
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}: "
                                   + log_path.read_text(errors="replace")[-2000:])
            try:
                # Gunicorn forks its workers a moment apart: wait for all, not just the first.
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200 \
                        and len(self.worker_pids()) >= self.workers:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"gunicorn did not become healthy in {HANG:g} s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
