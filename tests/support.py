"""Test helpers that run real things on loopback: Gunicorn as a process, an Electricity Maps
stand-in speaking the v3 wire format, Redis key clean-up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlparse

import requests

from carbon_optimizer import settings

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = "redis://127.0.0.1:6379/15"
LIMIT_REDIS = "redis://127.0.0.1:6379/13"  # rate-limit tests: a database of their own
# A /v3/zones answer as Electricity Maps sends it to a token (an object keyed by zone key), trimmed
# to the zones the tests need and a few more; the keys are Electricity Maps' own (its public
# electricitymaps-contrib config/zones names them).
ZONES_FIXTURE = ROOT / "tests" / "fixtures" / "electricitymaps_zones.json"


def electricitymaps_zones() -> dict:
    return json.loads(ZONES_FIXTURE.read_text())


# A bound only a hang reaches: no test asserts speed (a timed assertion is a flaky test; the
# figures are in bench/ and BENCHMARKS.md), so a wait is bounded only so that a hang fails instead
# of blocking the suite. A passing test never waits this long; a loaded machine never needs to.
HANG = 60.0


def wait_for(condition, seconds: float = HANG, poll: float = 0.02) -> bool:
    """True as soon as `condition()` is (for work done in the background or by another process),
    False if it is still not after `seconds` (by default only a hang is)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hourly_forecast(zone: str, start: datetime, values: list[Optional[float]], step_minutes: int = 60,
                    updated_at: Optional[datetime] = None) -> dict:
    """A forecast body exactly as Electricity Maps v3 sends it."""
    def stamp(moment: datetime) -> str:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "zone": zone,
        "forecast": [{"carbonIntensity": v, "datetime": stamp(start + timedelta(minutes=step_minutes * i))}
                     for i, v in enumerate(values)],
        "updatedAt": stamp(updated_at or start),
    }


class ElectricityMapsStandIn:
    """A local HTTP server answering /v3/carbon-intensity/{forecast,latest,history} per zone.

    `responses[zone]` is (status, body) served for that zone; `delay` slows every answer, so that
    concurrent requests really overlap (a delay of HANG is a hung provider); `trickle` (seconds)
    sends the body a byte at a time, that long apart; `release()` ends every delay and trickle at
    once (leaving the `with` block does too, so no hung answer outlives the test); `calls` counts requests by (endpoint, zone), `most_in_flight` the most answered at
    once. /v3/zones answers `zone_list` (the recorded list unless a test replaces it).
    """

    def __init__(self, delay: float = 0.0, trickle: float = 0.0):
        self.delay = delay
        self.zone_delay: dict[str, float] = {}  # per zone, instead of `delay`
        self.trickle = trickle
        self.trickle_head = False  # with trickle: the head too, not only the body
        self.responses: dict[str, tuple[int, object]] = {}
        self.zone_list: tuple[int, object] = (200, electricitymaps_zones())
        self.calls: dict[tuple[str, str], int] = {}
        self.tokens_seen: set[str] = set()
        self.most_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                url = urlparse(self.path)
                zone = parse_qs(url.query).get("zone", [""])[0]
                endpoint = url.path.rsplit("/", 1)[-1]
                with stand_in._lock:
                    stand_in.calls[(endpoint, zone)] = stand_in.calls.get((endpoint, zone), 0) + 1
                    stand_in.tokens_seen.add(self.headers.get("auth-token", ""))
                    stand_in._in_flight += 1
                    stand_in.most_in_flight = max(stand_in.most_in_flight, stand_in._in_flight)
                try:
                    self._answer(zone, endpoint)
                except OSError:  # the client gave up (a deadline): nothing to answer
                    pass
                finally:
                    with stand_in._lock:
                        stand_in._in_flight -= 1

            def _answer(self, zone: str, endpoint: str) -> None:
                pause = stand_in.zone_delay.get(zone, stand_in.delay)
                if pause:
                    stand_in._released.wait(pause)
                if endpoint == "zones":
                    status, body = stand_in.zone_list
                else:
                    status, body = stand_in.responses.get(
                        zone, (404, {"status": "error", "message": "zone not found"}))
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                if stand_in.trickle and stand_in.trickle_head:  # the head a byte at a time too
                    payload = (f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
                else:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if not stand_in.trickle:
                        self.wfile.write(payload)
                        return
                for byte in payload:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    stand_in._released.wait(stand_in.trickle)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v3"

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def release(self) -> None:
        """Answer every delayed request now, and every later one at once."""
        self._released.set()

    def upstream_calls(self, endpoint: str = "forecast", zone: Optional[str] = None) -> int:
        with self._lock:
            return sum(n for (e, z), n in self.calls.items() if e == endpoint and (zone is None or z == zone))

    def __enter__(self) -> "ElectricityMapsStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


class _PortTaken(Exception):
    pass


class GunicornProcess:
    """`gunicorn -c gunicorn.conf.py app:app` on a free loopback port, stopped on exit."""

    def __init__(self, env: dict[str, str], workers: int = 2, threads: int = 4,
                 log_path: Optional[Path] = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        # The developer's own service settings (a SECRETS_BACKEND, AWS or Vault credentials, a
        # REDIS_URL) must not leak into a test's service: only what the test gives is configured.
        # Rate limits (web/limits.py) are off unless a test turns them on: load tests would meet them.
        service_vars = set(settings.env_var_names()) | {"ELECTRICITY_MAPS_API_KEY", "API_KEYS", "METRICS_TOKEN"}
        inherited = {k: v for k, v in os.environ.items() if k not in service_vars
                     and not k.startswith(("GUNICORN_", "PROMETHEUS_", "AWS_", "VAULT_"))}
        self.env = {"RATE_LIMIT_ENABLED": "false", **inherited,
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
                    [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT,
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
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
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


def delete_keys(redis_client, prefix: str) -> None:
    """Remove only what a test wrote: the keys under its own prefix."""
    for key in redis_client.scan_iter(match=f"{prefix}*", count=500):
        redis_client.delete(key)


def best_start(points: list[dict], minutes: int, earliest: datetime, latest: datetime):
    """Brute-force reference for one run: each forecast point (`GET /forecast` items) holds for its
    hour, one value per minute; every whole-minute start in [earliest, latest]; the least mean,
    earliest on ties. Returns (start, mean), or None when no run fits."""
    first = datetime.fromisoformat(points[0]["datetime"].replace("Z", "+00:00"))
    per_minute = [p["carbon_intensity"] for p in points for _ in range(60)]
    best = None
    for m in range(len(per_minute) - minutes + 1):
        start = first + timedelta(minutes=m)
        if earliest <= start <= latest:
            mean = sum(per_minute[m:m + minutes]) / minutes
            if best is None or round(mean, 6) < round(best[1], 6):
                best = (start, mean)
    return best
