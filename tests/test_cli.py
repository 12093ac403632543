"""The CI client (client/carbon_optimizer_client.py) run as a process, as a runner runs it: against a
live Gunicorn on the demo provider with API keys, against a closed port, and against a small
loopback stand-in for the answers Gunicorn will not give on cue (429 with Retry-After, a 503, a
replan_at a few seconds away)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from devkit.paths import ROOT
from devkit.ports import free_port
from devkit.service_process import GunicornProcess
from devkit.waiting import HANG, wait_for

CLIENT = ROOT / "client" / "carbon_optimizer_client.py"
KEY = "FAKE-cli-test-key"
# No assertion here is about speed (issue 24): a wait is held only to a bound a loaded machine
# never reaches and a broken client always would, its fault being far longer (an answer starting
# in an hour, a Retry-After of an hour), with the client's own words saying which path it took.
# Below run_client's 30 s timeout, which stops a client that waits for the fault itself.
MARGIN = 20.0
# Writes its arguments and the moment it ran to a file, then exits with the code given: the
# evidence that (and when) the command ran, and with what.
MARKER_COMMAND = ("import json, sys, time; "
                  "open(sys.argv[1], 'w').write(json.dumps({'at': time.time(), 'argv': sys.argv[2:]})); "
                  "print('the command ran'); sys.exit(int(sys.argv[2]))")


def stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_client(*args: str, url: str, key: str | None = KEY, timeout: float = 30,
               extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CARBON_OPTIMIZER_", "GITHUB_"))}
    env["CARBON_OPTIMIZER_URL"] = url
    if key is not None:
        env["CARBON_OPTIMIZER_KEY"] = key
    env.update(extra_env or {})
    return subprocess.run([sys.executable, str(CLIENT), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def marker(tmp_path: Path, code: int = 0) -> tuple[list[str], Path]:
    path = tmp_path / "ran.json"
    return [sys.executable, "-c", MARKER_COMMAND, str(path), str(code), "two words"], path


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with GunicornProcess({"API_KEYS": f"{KEY},FAKE-other-key"}, workers=1, threads=4,
                         log_path=log) as gunicorn:
        yield gunicorn


def optimize(service, body: dict) -> dict:
    """The service's own answer, asked directly: the reference the client's output is held to."""
    answer = requests.post(f"{service.url}/api/v1/optimize", json=body,
                           headers={"X-API-Key": KEY}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- plan ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_plan_prints_when_where_the_saving_and_whether_estimates_were_used(service):
    earliest = stamp(datetime.now(timezone.utc) + timedelta(hours=1))
    flags = ["--duration", "PT45M", "--zones", "DE,FR", "--max-delay", "PT6H", "--power-kw", "2",
             "--earliest-start", earliest]
    expected = optimize(service, {"duration": "PT45M", "zones": ["DE", "FR"], "max_delay": "PT6H",
                                  "power_kw": 2, "earliest_start": earliest})

    as_json = run_client("plan", *flags, "--json", url=service.url)
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    for field in ("zone", "start", "end", "saving_percent", "saving_grams", "carbon_intensity"):
        assert answer[field] == expected[field], field

    text = run_client("plan", *flags, url=service.url)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert f"start {expected['start']} in {expected['zone']}" in out
    assert f"{expected['saving_percent']}% less" in out
    assert f"{expected['saving_grams']} g CO2eq saved" in out
    assert f"vs {expected['baseline']['carbon_intensity']} at the earliest start in DE" in out
    assert ("estimates used: no" in out) is (not expected["provenance"]["estimated"])


@pytest.mark.slow
def test_plan_with_a_cloud_region_names_the_region_and_its_grid_zone(service):
    expected = optimize(service, {"duration": "PT45M", "zones": ["aws:eu-central-1"], "max_delay": "PT6H"})
    text = run_client("plan", "--duration", "PT45M", "--zones", "aws:eu-central-1", "--max-delay", "PT6H",
                      url=service.url)
    assert text.returncode == 0, text.stderr
    assert expected["zone"] == "DE" and expected["location"] == "aws:eu-central-1"
    assert f"start {expected['start']} in aws:eu-central-1 (grid zone DE)" in text.stdout


@pytest.mark.slow
def test_plan_of_a_window_past_the_forecast_says_estimates_were_used(service):
    # The demo forecast reaches 72 h ahead: a window starting 4 days out rests wholly on estimates.
    earliest = stamp(datetime.now(timezone.utc) + timedelta(days=4))
    result = run_client("plan", "--duration", "PT1H", "--zones", "DE", "--max-delay", "PT6H",
                        "--earliest-start", earliest, url=service.url)
    assert result.returncode == 0, result.stderr
    assert "estimates used: 60 min from" in result.stdout
    assert "ask again at" in result.stdout


# -- wait ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_wait_counts_down_then_runs_the_command_and_passes_its_exit_code(real_answer, tmp_path):
    """The service's answer (re-timed) starts in an hour; --max-wait 4 s: the client asks for a
    window that ends then, counts down and runs the command then, not in an hour."""
    command, ran = marker(tmp_path, code=7)
    earliest = datetime.now(timezone.utc) + timedelta(seconds=2)
    began = time.time()
    with ScriptedService([(200, {}, starting_in(real_answer, 3600))]) as stand_in:
        result = run_client("wait", "--duration", "PT1M", "--zones", "DE", "--earliest-start",
                            earliest.isoformat(), "--max-wait", "PT4S", "--progress-every", "PT1S",
                            "--", *command, url=stand_in.url)
    ended = time.time()
    assert result.returncode == 7, result.stderr
    record = json.loads(ran.read_text())
    assert record["argv"] == ["7", "two words"]  # arguments reach the command untouched
    # The window asked for ends where --max-wait does (whole seconds, counted from the client's now).
    sent = stand_in.requests[0]["body"]
    latest = datetime.fromisoformat(sent["latest_start"].replace("Z", "+00:00")).timestamp()
    assert int(began) + 4 <= latest <= ended + 4
    # It waited the 4 s (a lower bound: load only adds to it), then started: the hour's start is
    # far past MARGIN.
    assert began + 4 <= record["at"] < began + MARGIN
    assert "--max-wait reached: starting now" in result.stderr
    assert "the command ran" in result.stdout  # the command's output is its own, on stdout
    assert "starting in DE in" in result.stderr  # the countdown, a line per --progress-every


@pytest.mark.slow
def test_wait_refused_with_400_does_not_run_the_command(service, tmp_path):
    command, ran = marker(tmp_path)
    result = run_client("wait", "--duration", "PT45M", "--zones", "de", "--", *command, url=service.url)
    assert result.returncode == 3
    assert not ran.exists()
    # The service's own words, with its suggestion: a typo in a zone is not a silent "start now".
    assert "HTTP 400 zone_not_found" in result.stderr
    assert "zones[0]: de is neither a zone" in result.stderr and "did you mean DE?" in result.stderr


@pytest.mark.slow
def test_wait_with_a_wrong_key_does_not_run_the_command(service, tmp_path):
    command, ran = marker(tmp_path)
    result = run_client("wait", "--duration", "PT45M", "--zones", "DE", "--", *command,
                        url=service.url, key="FAKE-wrong-key")
    assert result.returncode == 3
    assert not ran.exists()
    assert "HTTP 401 unauthorized" in result.stderr
    assert "FAKE-wrong-key" not in result.stderr + result.stdout  # a key is never printed


@pytest.mark.slow
def test_wait_fails_open_on_a_closed_port(tmp_path):
    command, ran = marker(tmp_path, code=0)
    result = run_client("wait", "--duration", "PT45M", "--zones", "DE", "--max-delay", "PT6H",
                        "--", *command, url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 0, result.stderr
    assert ran.exists()
    assert "WARNING" in result.stderr and "fail open" in result.stderr
    # At once, not after a window or a back-off: the client says so whenever it pauses.
    assert "asking again" not in result.stderr and "starting in" not in result.stderr


@pytest.mark.slow
def test_plan_of_a_matrix_is_one_batch_and_each_job_waits_for_its_own_start(service, tmp_path):
    far = stamp(datetime.now(timezone.utc) + timedelta(days=5))
    batch = tmp_path / "matrix.json"
    batch.write_text(json.dumps({"workloads": [
        {"id": "unit", "duration": "PT10M", "zones": ["DE"], "max_delay": "PT1M"},
        {"id": "e2e", "duration": "PT30M", "zones": ["FR"], "max_delay": "PT6H"},
        # past the forecast, with estimates refused: unschedulable
        {"id": "late", "duration": "PT30M", "zones": ["FR"], "earliest_start": far,
         "max_delay": "PT1H", "extend_horizon": False},
    ]}))
    saved = tmp_path / "plan.json"
    planned = run_client("plan", "--batch", str(batch), "--save", str(saved), url=service.url)
    assert planned.returncode == 0, planned.stderr
    results = {r["id"]: r for r in json.loads(saved.read_text())["results"]}
    assert results["unit"]["status"] == "scheduled" and results["late"]["status"] == "unschedulable"
    assert "2 of 3 scheduled" in planned.stdout
    # No workload gave power_kw: the summary's grams are null and the client claims none.
    assert json.loads(saved.read_text())["summary"]["saving_grams"] is None
    assert "g CO2eq" not in planned.stdout

    command, ran = marker(tmp_path, code=4)
    # "unit" starts within the minute; --max-wait bounds the test's wait all the same
    waited = run_client("wait", "--from-plan", str(saved), "--id", "unit", "--max-wait", "PT3S",
                        "--", *command, url="http://127.0.0.1:9")
    assert waited.returncode == 4, waited.stderr
    assert ran.exists()

    ran.unlink()
    refused = run_client("wait", "--from-plan", str(saved), "--id", "late", "--", *command,
                         url="http://127.0.0.1:9")
    assert refused.returncode == 3 and not ran.exists()
    assert "window_not_covered" in refused.stderr

    typo = run_client("wait", "--from-plan", str(saved), "--id", "e2f", "--", *command,
                      url="http://127.0.0.1:9")
    assert typo.returncode == 2 and not ran.exists()
    assert "ids: unit, e2e, late" in typo.stderr


@pytest.mark.slow
def test_a_matrix_plan_saved_while_the_service_is_down_lets_every_job_run(tmp_path):
    batch = tmp_path / "matrix.json"
    batch.write_text(json.dumps({"workloads": [{"id": "unit", "duration": "PT10M"}]}))
    saved = tmp_path / "plan.json"
    planned = run_client("plan", "--batch", str(batch), "--save", str(saved),
                         url=f"http://127.0.0.1:{free_port()}")
    assert planned.returncode == 0 and "fail_open" in json.loads(saved.read_text())
    without_save = run_client("plan", "--batch", str(batch), url=f"http://127.0.0.1:{free_port()}")
    assert without_save.returncode == 4

    command, ran = marker(tmp_path, code=0)
    waited = run_client("wait", "--from-plan", str(saved), "--id", "unit", "--", *command,
                        url="http://127.0.0.1:9")
    assert waited.returncode == 0 and ran.exists()
    assert "WARNING" in waited.stderr


# -- answers on cue: a loopback stand-in ----------------------------------------------------------

class ScriptedService:
    """Answers POST /api/v1/optimize with the scripted (status, headers, body) in turn (the last
    one repeats) and records each request's time, headers and body. A run's start report (POST
    /api/v1/plans/<id>/started) is recorded apart, in `started`, and answered 202, or never while
    `hang_started` is set (released at exit)."""

    def __init__(self, script: list[tuple[int, dict, object]], hang_started: bool = False):
        self.script, self.requests, self.started = script, [], []
        self.release = threading.Event()
        if not hang_started:
            self.release.set()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if self.path.endswith("/started"):
                    stand_in.started.append({"at": time.time(), "path": self.path, "body": body,
                                             "key": self.headers.get("X-API-Key")})
                    stand_in.release.wait(60)
                    self._send(202, {}, {"status": "accepted"})
                    return
                stand_in.requests.append({"at": time.time(), "body": body,
                                          "key": self.headers.get("X-API-Key")})
                status, headers, answer = stand_in.script[min(len(stand_in.requests), len(stand_in.script)) - 1]
                self._send(status, headers, answer(body) if callable(answer) else answer)

            def _send(self, status, headers, answer):
                try:
                    self._write(status, headers, answer)
                except OSError:  # the client gave up waiting (a start report past its time)
                    pass

            def _write(self, status, headers, answer):
                payload = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def real_answer(service) -> dict:
    """A scheduled answer from the live service: the wire format the stand-in replays."""
    return optimize(service, {"duration": "PT10M", "zones": ["DE"], "max_delay": "PT1H"})


def starting_in(real_answer: dict, seconds: int, replan_in: int | None = None):
    """The real answer, re-timed at the moment it is sent."""
    def build(_body):
        now = datetime.now(timezone.utc).replace(microsecond=0)
        answer = json.loads(json.dumps(real_answer))
        answer.update(start=stamp(now + timedelta(seconds=seconds)), start_in_seconds=seconds)
        answer["provenance"]["replan_at"] = (stamp(now + timedelta(seconds=replan_in))
                                             if replan_in is not None else None)
        return answer
    return build


RATE_LIMITED = {"error": {"code": "rate_limited", "message": "20 per 1 minute"}}


@pytest.mark.slow
def test_429_is_waited_out_for_retry_after_then_the_plan_is_followed(real_answer, tmp_path):
    command, ran = marker(tmp_path, code=0)
    with ScriptedService([(429, {"Retry-After": "1"}, RATE_LIMITED),
                          (200, {}, starting_in(real_answer, 0))]) as stand_in:
        result = run_client("wait", "--duration", "PT10M", "--zones", "DE", "--max-wait", "PT1M",
                            "--", *command, url=stand_in.url)
    assert result.returncode == 0, result.stderr
    first, second = stand_in.requests
    assert second["at"] - first["at"] >= 1.0  # Retry-After honoured
    assert first["body"] == second["body"] and first["key"] == KEY
    assert "rate limited (429)" in result.stderr and "WARNING" not in result.stderr
    assert ran.exists()


@pytest.mark.slow
def test_429_past_max_wait_fails_open_at_once(tmp_path):
    command, ran = marker(tmp_path, code=0)
    with ScriptedService([(429, {"Retry-After": "3600"}, RATE_LIMITED)]) as stand_in:
        result = run_client("wait", "--duration", "PT10M", "--max-wait", "PT30M", "--",
                            *command, url=stand_in.url)
    assert result.returncode == 0, result.stderr
    assert len(stand_in.requests) == 1 and ran.exists()
    assert "WARNING" in result.stderr and "HTTP 429 rate_limited: 20 per 1 minute" in result.stderr
    # At once: the hour's pause was judged past --max-wait, not taken (run_client would time out).
    assert "runs past the time allowed to wait" in result.stderr and "asking again" not in result.stderr


@pytest.mark.slow
def test_a_5xx_fails_open(tmp_path):
    command, ran = marker(tmp_path, code=0)
    failing = {"error": {"code": "upstream_unavailable", "message": "Electricity Maps did not answer"}}
    # Retry-After 30 s runs past --max-wait: no retry, the command runs at once.
    with ScriptedService([(503, {"Retry-After": "30"}, failing)]) as stand_in:
        result = run_client("wait", "--duration", "PT10M", "--max-wait", "PT20S", "--", *command,
                            url=stand_in.url)
    assert result.returncode == 0 and ran.exists() and len(stand_in.requests) == 1
    assert "Electricity Maps did not answer" in result.stderr and "fail open" in result.stderr
    assert "runs past the time allowed to wait" in result.stderr


@pytest.mark.slow
def test_a_200_that_is_no_optimize_answer_fails_open(tmp_path):
    # e.g. CARBON_OPTIMIZER_URL pointing at some other JSON service
    command, ran = marker(tmp_path, code=0)
    with ScriptedService([(200, {}, {"status": "ok"})]) as stand_in:
        waited = run_client("wait", "--duration", "PT10M", "--", *command, url=stand_in.url)
        planned = run_client("plan", "--duration", "PT10M", url=stand_in.url)
    assert waited.returncode == 0 and ran.exists() and "wrong URL?" in waited.stderr
    assert planned.returncode == 4 and "wrong URL?" in planned.stderr


@pytest.mark.slow
def test_wait_asks_again_at_replan_at_for_the_same_window(real_answer, tmp_path):
    command, ran = marker(tmp_path, code=0)
    # The first answer starts in 5 minutes and says to ask again in 2 s; the second starts in 1 s.
    with ScriptedService([(200, {}, starting_in(real_answer, 300, replan_in=2)),
                          (200, {}, starting_in(real_answer, 1))]) as stand_in:
        result = run_client("wait", "--duration", "PT10M", "--zones", "DE", "--max-delay", "PT6H",
                            "--", *command, url=stand_in.url)
    assert result.returncode == 0, result.stderr
    assert "asking again: the forecast now covers more of the window" in result.stderr
    first, second = stand_in.requests
    # At replan_at (2 s: a lower bound, load only adds), not at the first start (300 s).
    assert 1.5 <= second["at"] - first["at"] < MARGIN
    # The window of the first ask, not one moved on, naming the plan it revises.
    assert second["body"] == {**first["body"], "replan_of": real_answer["plan_id"]}
    sent = first["body"]
    latest = datetime.fromisoformat(sent["latest_start"].replace("Z", "+00:00"))
    earliest = datetime.fromisoformat(sent["earliest_start"].replace("Z", "+00:00"))
    assert latest - earliest == timedelta(hours=6) and "max_delay" not in sent
    ran_at = json.loads(ran.read_text())["at"]
    # The second answer's start (1 s after it), long before the first's (300 s).
    assert 0.5 <= ran_at - second["at"] and ran_at - first["at"] < MARGIN
    assert "new plan" in result.stderr


@pytest.mark.slow
def test_wait_asks_again_at_the_start_when_replan_at_is_the_start(real_answer, tmp_path):
    """replan_at equal to the start (the window runs past the forecast): the question is asked
    then, not skipped (the plan is too young for the last check before starting); an answer that
    takes 2 s is waited for (AT_START_TIMEOUT_SECONDS), and its start (the next minute, here 1 s
    after it) is the one followed."""
    command, ran = marker(tmp_path, code=0)
    later = starting_in(real_answer, 1)

    def slowly(body):
        time.sleep(2)
        return later(body)
    with ScriptedService([(200, {}, starting_in(real_answer, 3, replan_in=3)),
                          (200, {}, slowly)]) as stand_in:
        result = run_client("wait", "--duration", "PT10M", "--zones", "DE", "--max-delay", "PT6H",
                            "--", *command, url=stand_in.url)
    assert result.returncode == 0, result.stderr
    assert "asking again failed" not in result.stderr and "new plan" in result.stderr
    first, second = stand_in.requests
    # Asked at the start (3 s), then the new start followed: 2 s for the answer, then 1 s. Lower
    # bounds (load only adds); the upper ones only a hang reaches.
    assert 2.5 <= second["at"] - first["at"] < MARGIN
    assert second["body"] == {**first["body"], "replan_of": real_answer["plan_id"]}
    ran_at = json.loads(ran.read_text())["at"]
    assert 2.5 <= ran_at - second["at"] < MARGIN


@pytest.mark.slow
def test_wait_reports_the_start_by_plan_id_just_before_running_the_command(real_answer, tmp_path):
    command, ran = marker(tmp_path, code=0)
    with ScriptedService([(200, {}, starting_in(real_answer, 0))]) as stand_in:
        result = run_client("wait", "--duration", "PT10M", "--zones", "DE", "--", *command,
                            url=stand_in.url)
    assert result.returncode == 0, result.stderr
    [report] = stand_in.started
    assert report["path"] == f"/api/v1/plans/{real_answer['plan_id']}/started"
    assert report["key"] == KEY and report["body"] == {}  # the service's clock says when
    # In that order: the report came in, then the command ran.
    assert json.loads(ran.read_text())["at"] >= report["at"]
    assert f"start reported (plan {real_answer['plan_id']})" in result.stderr


@pytest.mark.slow
def test_a_start_report_that_is_never_answered_does_not_hold_the_command_or_fail_it(real_answer, tmp_path):
    """The stand-in takes the report and never answers it (until the test ends): the command runs
    all the same, with its own exit code, and the client says so in one quiet line."""
    command, ran = marker(tmp_path, code=5)
    with ScriptedService([(200, {}, starting_in(real_answer, 0))], hang_started=True) as stand_in:
        result = run_client("wait", "--duration", "PT10M", "--zones", "DE", "--", *command,
                            url=stand_in.url)
        assert not stand_in.release.is_set()  # still unanswered when the client was done
    assert result.returncode == 5 and ran.exists(), result.stderr
    assert len(stand_in.started) == 1
    assert "note: the start was not reported (no answer in time); the command runs all the same" \
        in result.stderr
    assert "WARNING" not in result.stderr and "ERROR" not in result.stderr


@pytest.mark.slow
def test_wait_from_plan_reports_the_saved_plans_start_when_a_service_is_named(real_answer, tmp_path):
    command, ran = marker(tmp_path, code=0)
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps({**real_answer, "start": stamp(datetime.now(timezone.utc))}))
    with ScriptedService([(500, {}, {})]) as stand_in:
        result = run_client("wait", "--from-plan", str(saved), "--", *command, url=stand_in.url)
    assert result.returncode == 0 and ran.exists(), result.stderr
    assert [r["path"] for r in stand_in.started] == [f"/api/v1/plans/{real_answer['plan_id']}/started"]
    assert stand_in.requests == []  # a saved plan: nothing asked
    ran.unlink()
    # No service named: a saved plan needs none; nothing is reported and the command runs.
    result = run_client("wait", "--from-plan", str(saved), "--", *command, url="")
    assert result.returncode == 0 and ran.exists(), result.stderr
    assert "reported" not in result.stderr


@pytest.mark.slow
def test_max_wait_tightens_the_window_asked_for(real_answer, tmp_path):
    command, _ = marker(tmp_path, code=0)
    began = datetime.now(timezone.utc).replace(microsecond=0)
    with ScriptedService([(200, {}, starting_in(real_answer, 0))]) as stand_in:
        run_client("wait", "--duration", "PT45M", "--deadline", "2099-01-01T00:00:00Z",
                   "--max-wait", "PT2H", "--", *command, url=stand_in.url)
    ended = datetime.now(timezone.utc)
    sent = stand_in.requests[0]["body"]
    latest = datetime.fromisoformat(sent["latest_start"].replace("Z", "+00:00"))
    assert "deadline" not in sent
    # Two hours from the client's now (whole seconds), which lies between these two instants.
    assert began + timedelta(hours=2) <= latest <= ended + timedelta(hours=2)


# -- packaging and usage --------------------------------------------------------------------------

@pytest.mark.slow
def test_pip_install_gives_the_carbon_optimizer_command(tmp_path):
    target, source = tmp_path / "site", tmp_path / "client"
    # from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds
    shutil.copytree(ROOT / "client", source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "--target", str(target),
                    str(source)], check=True, capture_output=True, timeout=120)
    result = subprocess.run([str(target / "bin" / "carbon-optimizer"), "--version"],
                            env={**os.environ, "PYTHONPATH": str(target)},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "carbon-optimizer 0.1.0"


def test_the_client_package_declares_no_dependencies():
    project = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == []
    assert project["scripts"] == {"carbon-optimizer": "carbon_optimizer_client:main"}
    imported = {line.split()[1].split(".")[0] for line in CLIENT.read_text().splitlines()
                if line.startswith(("import ", "from "))}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_a_command_that_is_not_there_exits_127():
    result = run_client("wait", "--duration", "PT10M", "--", "no-such-command-for-the-cli-test",
                        url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 127 and "command not found" in result.stderr


def test_a_command_that_cannot_start_fails_before_asking_or_waiting(tmp_path):
    # A stand-in that would have the client wait an hour: the command is checked before that.
    far = {"status": "scheduled", "start": stamp(datetime.now(timezone.utc) + timedelta(hours=1)),
           "start_in_seconds": 3600, "zone": "DE"}
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\ntrue\n")
    not_executable.chmod(0o644)
    with ScriptedService([(200, {}, far)]) as stand_in:
        missing = run_client("wait", "--duration", "PT10M", "--max-wait", "PT1H", "--",
                             "/nonexistent/run-e2e", "--flag", url=stand_in.url, timeout=20)
        unexecutable = run_client("wait", "--duration", "PT10M", "--max-wait", "PT1H", "--",
                                  str(not_executable), url=stand_in.url, timeout=20)
    assert missing.returncode == 127, missing.stderr
    assert "command not found: /nonexistent/run-e2e" in missing.stderr
    assert unexecutable.returncode == 126, unexecutable.stderr
    assert f"command not executable: {not_executable}" in unexecutable.stderr
    # Never asked, so never told to wait the hour (run_client's timeout stops one that would).
    assert stand_in.requests == []
    assert "nothing waited for" in missing.stderr and "nothing waited for" in unexecutable.stderr


def test_usage_errors_exit_2_and_help_documents_exit_codes():
    no_url = run_client("wait", "--duration", "PT1H", "--", "true", url="")
    assert no_url.returncode == 2 and "CARBON_OPTIMIZER_URL" in no_url.stderr
    bad = run_client("wait", "--duration", "PT1H", "--max-delay", "6h", "--", "true",
                     url="http://127.0.0.1:9")
    assert bad.returncode == 2 and "--max-delay: '6h' is not an ISO 8601 duration" in bad.stderr
    no_command = run_client("wait", "--duration", "PT1H", url="http://127.0.0.1:9")
    assert no_command.returncode == 2
    helped = run_client("wait", "--help", url="")
    for line in ("3    the service refused the request", "4    plan only",
                 "127: not found", "fail open"):
        assert line in helped.stdout


# -- the GitHub Action and the GitLab template ----------------------------------------------------

def test_signal_goes_into_the_request_and_the_plan_names_the_signal_and_its_unit():
    client = load_client_module()
    args = client.parser().parse_args(["plan", "--duration", "37", "--signal", "marginal"])
    assert client.workload(args) == {"duration": 37, "signal": "marginal"}
    assert "signal" not in client.workload(client.parser().parse_args(["plan", "--duration", "37"]))
    with pytest.raises(SystemExit):
        client.parser().parse_args(["plan", "--duration", "37", "--signal", "lifecycle"])
    answer = {"status": "scheduled", "zone": "CAISO_NORTH", "start": "2026-11-23T11:00:00Z",
              "end": "2026-11-23T11:37:00Z", "start_in_seconds": 2550, "carbon_intensity": 301.2,
              "saving_percent": 12.5,
              "baseline": {"zone": "CAISO_NORTH", "carbon_intensity": 344.2},
              "provenance": {"provider": "watttime", "signal": "marginal", "units": "gCO2/kWh",
                             "attribution": None, "estimated": False}}
    text = client.describe(answer)
    assert "301.2 gCO2/kWh (marginal) vs 344.2" in text and "forecast by watttime" in text
    neso = {**answer, "provenance": {**answer["provenance"], "provider": "neso", "signal": "average_direct",
                                     "attribution": "Carbon intensity data: NESO, CC BY 4.0"}}
    assert "Carbon intensity data: NESO, CC BY 4.0" in client.describe(neso)


def test_the_action_passes_its_inputs_to_the_client_and_the_command_exit_code_back(tmp_path):
    """The composite step's script, run as the runner runs it: inputs as CO_* variables, the action
    checked out at GITHUB_ACTION_PATH. A closed port makes the client fail open, so the command runs
    at once; a zone typo (400 from the service) would stop it, tested above."""
    import yaml
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    step = action["runs"]["steps"][0]
    declared = set(action["inputs"])
    used = {value.split("inputs.")[1].rstrip(" }") for value in step["env"].values()}
    assert used == declared  # every input reaches the script, and nothing undeclared is read

    ran = tmp_path / "ran.txt"
    inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    inputs.update({"run": f'echo "$0 ok" > {ran}; exit 9', "duration": "PT45M", "zones": "DE,FR",
                   "max-delay": "PT6H", "url": f"http://127.0.0.1:{free_port()}",
                   "api-key": "FAKE-action-key"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_OPTIMIZER_", "GITHUB_"))}
    for variable, expression in step["env"].items():
        env[variable] = inputs[expression.split("inputs.")[1].rstrip(" }")]
    env.update(GITHUB_ACTION_PATH=str(ROOT), GITHUB_ACTIONS="true")
    result = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 9, result.stderr
    assert ran.read_text() == "bash ok\n"
    assert "::warning title=carbon-optimizer::" in result.stdout  # on the run's summary page
    assert "FAKE-action-key" not in result.stdout + result.stderr


def gitlab_ci():
    """scripts/gitlab_ci.py: GitLab CI files read as GitLab reads them (!reference, extends)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("gitlab_ci", ROOT / "scripts" / "gitlab_ci.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GITLAB_TEMPLATE = str(ROOT / "ci/gitlab/carbon-optimizer.gitlab-ci.yml")


def test_the_gitlab_example_extends_only_what_the_template_defines():
    reader = gitlab_ci()
    template = reader.load(GITLAB_TEMPLATE)
    example = reader.load(str(ROOT / "examples/gitlab/.gitlab-ci.yml"))
    assert example["include"][0]["file"] == "ci/gitlab/carbon-optimizer.gitlab-ci.yml"
    extended = {job["extends"] for job in example.values() if isinstance(job, dict) and "extends" in job}
    assert extended == {".carbon-optimizer", ".carbon-optimizer-plan"}
    assert extended <= set(template)
    # A job with a before_script of its own still installs the client (GitLab replaces lists).
    jobs = reader.jobs_of(str(ROOT / "examples/gitlab/.gitlab-ci.yml"), GITLAB_TEMPLATE)
    install = reader.shell_script(jobs, ".carbon-optimizer-install").removeprefix("set -e\n")
    for name in ("nightly-e2e", "nightly-load", "test-matrix"):
        assert install in reader.shell_script(jobs, name), name


@pytest.mark.parametrize("saved, expected", [
    ({"status": "scheduled", "id": "nightly-e2e", "zone": "FR", "location": "FR",
      "start": "2026-11-23T16:03:00Z", "end": "2026-11-23T16:48:00Z", "start_in_seconds": 3601},
     {"when": "delayed", "start_in": "3601 seconds",
      "variables": {"CARBON_OPTIMIZER_STATUS": "scheduled", "CARBON_OPTIMIZER_ZONE": "FR",
                    "CARBON_OPTIMIZER_LOCATION": "FR", "CARBON_OPTIMIZER_START": "2026-11-23T16:03:00Z",
                    "CARBON_OPTIMIZER_END": "2026-11-23T16:48:00Z", "CARBON_OPTIMIZER_ID": "nightly-e2e"}}),
    ({"status": "scheduled", "zone": "DE", "location": "aws:eu-central-1", "start": "2026-11-23T16:03:00Z",
      "end": "2026-11-23T16:48:00Z", "start_in_seconds": 41},
     {"when": "on_success",
      "variables": {"CARBON_OPTIMIZER_STATUS": "scheduled", "CARBON_OPTIMIZER_ZONE": "DE",
                    "CARBON_OPTIMIZER_LOCATION": "aws:eu-central-1", "CARBON_OPTIMIZER_START": "2026-11-23T16:03:00Z",
                    "CARBON_OPTIMIZER_END": "2026-11-23T16:48:00Z"}}),
    ({"fail_open": "no answer from the service"},
     {"when": "on_success", "variables": {"CARBON_OPTIMIZER_STATUS": "fail_open"}}),
])
def test_the_gitlab_child_pipeline_starts_the_job_delayed_at_the_planned_start(tmp_path, saved, expected):
    """The template's .carbon-optimizer-child-pipeline script, run by a shell as the job runs it,
    on a saved plan: the child pipeline delays the job by start_in_seconds and tells it the answer;
    the file passes the GitLab CI schema (the `when: delayed` job in it as GitLab will read it)."""
    (tmp_path / "plan.json").write_text(json.dumps(saved))
    jobs = gitlab_ci().jobs_of(GITLAB_TEMPLATE)
    script = gitlab_ci().shell_script(jobs, ".carbon-optimizer-child-pipeline")
    env = {**os.environ, "CARBON_OPTIMIZER_PLAN": "plan.json", "CARBON_OPTIMIZER_CHILD": "child.yml",
           "CARBON_OPTIMIZER_JOB": "e2e", "CARBON_OPTIMIZER_JOB_FILE": "ci/e2e.gitlab-ci.yml"}
    result = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    import yaml
    child = yaml.safe_load((tmp_path / "child.yml").read_text())
    assert child == {"include": [{"local": "ci/e2e.gitlab-ci.yml"}], "e2e": expected}
    if expected["when"] != "delayed":
        return
    # with the included job's script in place, as GitLab merges the include
    merged = tmp_path / "merged.yml"
    merged.write_text(json.dumps({"e2e": {**expected, "script": ["./run-e2e-suite.sh"]}}))
    checked = subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
                              "vendor.gitlab-ci", str(tmp_path / "child.yml"), str(merged)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the waiting loop, on a clock the test moves --------------------------------------------------

def load_client_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("carbon_optimizer_client_under_test", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wait_asks_again_shortly_before_a_distant_start_and_follows_the_new_answer(client, monkeypatch):
    """An hour's wait on a simulated clock (sleep moves it on): one ask at the start, one a minute
    before the planned start, and the command run at the second answer's start. The answers are
    the service's own (the in-process app), re-timed."""
    answer = client.post("/api/v1/optimize", json={"duration": "PT10M", "zones": ["DE"],
                                                   "max_delay": "PT1H"}).get_json()
    assert answer["status"] == "scheduled"
    module = load_client_module()
    clock = {"now": 1000.0}
    monkeypatch.setattr(module.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(module.time, "sleep", lambda seconds: clock.__setitem__("now", clock["now"] + seconds))
    asks, runs = [], []

    def optimize(self, body, timeout=None):
        asks.append((clock["now"], body))
        start_in = 3600 if len(asks) == 1 else 120  # the newer forecast moves the start later
        return module.Reply("ok", 200, {**answer, "start_in_seconds": start_in,
                                        "provenance": {**answer["provenance"], "replan_at": None}})

    monkeypatch.setattr(module.Service, "optimize", optimize)
    monkeypatch.setattr(module, "_run", lambda command, log, answer=None: runs.append((clock["now"], command)) or 0)
    code = module.main(["wait", "--url", "http://127.0.0.1:9", "--duration", "PT10M", "--max-delay",
                        "PT2H", "--", "make", "e2e"])
    assert code == 0
    assert [round(at) for at, _ in asks] == [1000, 1000 + 3600 - 60]
    assert asks[1][1] == {**asks[0][1], "replan_of": answer["plan_id"]}
    assert runs == [(pytest.approx(1000 + 3600 - 60 + 120), ["make", "e2e"])]


def test_a_replan_at_exactly_the_minimum_gap_is_followed_whatever_the_clock_reads(client, monkeypatch):
    """replan_at 2 s after the answer (the client's smallest gap), start 300 s after it, at a clock
    reading where (t + 300) - 298 < t + 2 in floating point (from a CI run that then skipped the
    question and waited for the start): the question is still asked at replan_at."""
    answer = client.post("/api/v1/optimize", json={"duration": "PT10M", "zones": ["DE"],
                                                   "max_delay": "PT1H"}).get_json()
    start = datetime(2026, 12, 4, 16, 58, 15, tzinfo=timezone.utc)
    t0 = 8057.536133232
    assert t0 + 2.0 > (t0 + 300.0) - 298.0  # the reading is one that rounds below
    module = load_client_module()
    clock = {"now": t0}
    monkeypatch.setattr(module.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(module.time, "sleep", lambda seconds: clock.__setitem__("now", clock["now"] + seconds))
    asks, runs = [], []

    def optimize(self, body, timeout=None):
        asks.append(clock["now"])
        first = len(asks) == 1
        return module.Reply("ok", 200, {**answer, "start": stamp(start), "start_in_seconds": 300 if first else 0,
                                        "provenance": {**answer["provenance"], "replan_at": stamp(
                                            start - timedelta(seconds=298)) if first else None}})

    monkeypatch.setattr(module.Service, "optimize", optimize)
    monkeypatch.setattr(module, "_run", lambda command, log, answer=None: runs.append(clock["now"]) or 0)
    assert module.main(["wait", "--url", "http://127.0.0.1:9", "--duration", "PT10M", "--max-delay",
                        "PT6H", "--", "true"]) == 0
    assert len(asks) == 2 and asks[1] - t0 == pytest.approx(2.0, abs=0.01)
    assert runs == [pytest.approx(asks[1])]


def test_wait_runs_at_max_wait_when_the_plan_starts_later(client, monkeypatch):
    answer = client.post("/api/v1/optimize", json={"duration": "PT10M", "zones": ["DE"]}).get_json()
    module = load_client_module()
    clock = {"now": 0.0}
    monkeypatch.setattr(module.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(module.time, "sleep", lambda seconds: clock.__setitem__("now", clock["now"] + seconds))
    asks, runs = [], []
    monkeypatch.setattr(module.Service, "optimize", lambda self, body, timeout=None: asks.append(
        clock["now"]) or module.Reply("ok", 200, {**answer, "start_in_seconds": 7200}))
    monkeypatch.setattr(module, "_run", lambda command, log, answer=None: runs.append(clock["now"]) or 0)
    assert module.main(["wait", "--url", "http://127.0.0.1:9", "--duration", "PT10M",
                        "--max-wait", "PT30M", "--", "true"]) == 0
    assert runs == [pytest.approx(1800)]
    assert len(asks) == 2 and asks[1] == pytest.approx(1800 - 60)  # the last check before starting


# Starts the client with SIGINT at its default disposition whatever this process inherited (a
# shell's background job, or a CI runner, may start pytest with SIGINT ignored; exec keeps an
# ignored signal ignored, and Python then installs no KeyboardInterrupt handler).
SIGINT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


@pytest.mark.slow
def test_an_interrupted_wait_exits_130_without_running(real_answer, tmp_path):
    import signal
    command, ran = marker(tmp_path)
    with ScriptedService([(200, {}, starting_in(real_answer, 600))]) as stand_in:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_OPTIMIZER_", "GITHUB_"))}
        process = subprocess.Popen([sys.executable, "-c", SIGINT_DEFAULT, str(CLIENT), "wait",
                                    "--url", stand_in.url, "--duration", "PT10M", "--", *command],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: stand_in.requests)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=HANG)
    assert process.returncode == 130 and not ran.exists()
    assert "interrupted" in err


@pytest.mark.slow
def test_on_a_terminal_the_countdown_is_one_line_rewritten(real_answer, tmp_path):
    import pty
    command, ran = marker(tmp_path)
    primary, secondary = pty.openpty()
    with ScriptedService([(200, {}, starting_in(real_answer, 2))]) as stand_in:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_OPTIMIZER_", "GITHUB_"))}
        process = subprocess.Popen([sys.executable, str(CLIENT), "wait", "--url", stand_in.url,
                                    "--duration", "PT10M", "--", *command], env=env,
                                   stdout=subprocess.DEVNULL, stderr=secondary)
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
        process.wait(timeout=10)
    os.close(primary)
    assert process.returncode == 0 and ran.exists()
    text = seen.decode()
    assert "\rcarbon-optimizer: starting in " in text and text.count("\rcarbon-optimizer:") >= 2


@pytest.mark.slow
def test_429_from_the_live_service_is_waited_then_fails_open(tmp_path, redis_prefix):
    """The real limiter (on Redis, 1 optimize per minute for this key): the second ask is a 429
    whose Retry-After (up to a minute) is past --max-wait, so the client runs the command at
    once, loudly, instead of waiting or failing the pipeline."""
    env = {"API_KEYS": KEY, "RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_OPTIMIZE": "1 per minute",
           "REDIS_URL": "redis://127.0.0.1:6379/15", "CACHE_KEY_PREFIX": redis_prefix}
    with GunicornProcess(env, workers=1, threads=2, log_path=tmp_path / "gunicorn.log") as live:
        first = run_client("plan", "--duration", "PT45M", "--zones", "DE", url=live.url)
        assert first.returncode == 0, first.stderr
        command, ran = marker(tmp_path, code=5)
        second = run_client("wait", "--duration", "PT45M", "--zones", "DE", "--max-wait", "PT2S",
                            "--", *command, url=live.url)
    assert "429" in second.stderr and "WARNING" in second.stderr, second.stderr
    assert ran.exists() and second.returncode == 5  # ran, its exit code passed through
    # At once: the Retry-After (most of a minute) was judged past --max-wait, not waited out.
    assert "runs past the time allowed to wait" in second.stderr and "asking again" not in second.stderr


# -- back-off: a floor, a growing jittered pause, a cap per question (issue 24) ---------------------

@pytest.mark.slow
def test_retry_after_0_is_not_a_busy_loop(tmp_path):
    """A service refusing with Retry-After: 0 (the last second of a window): the client pauses at
    least a second between requests; the old client sent hundreds in --max-wait's 4 s."""
    with ScriptedService([(429, {"Retry-After": "0"}, RATE_LIMITED)]) as stand_in:
        result = run_client("plan", "--duration", "PT10M", "--max-wait", "PT4S", url=stand_in.url)
    assert result.returncode == 4, result.stderr
    times = [r["at"] for r in stand_in.requests]
    # Each request is answered before the pause that follows it: the gaps seen here are at least
    # the floor, so at most 1 + 4 requests fit in 4 s.
    assert 2 <= len(times) <= 5, len(times)
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[1:]))
    assert "gave up after" in result.stderr and "runs past the time allowed to wait" in result.stderr


class SimulatedTime:
    """The client's `time` module on a clock that only `sleep` moves: hours of back-off in no time,
    while its requests go to a real HTTP stand-in."""

    def __init__(self):
        self.now, self.sleeps = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if len(self.sleeps) > 50:  # a client without a floor pauses 0 s for ever: stop it here
            raise AssertionError(f"more than 50 pauses, the last {self.sleeps[-3:]}: a busy loop")


def plan_on_simulated_time(monkeypatch, script, *flags):
    module = load_client_module()
    clock = SimulatedTime()
    monkeypatch.setattr(module, "time", clock)
    with ScriptedService(script) as stand_in:
        code = module.main(["plan", "--url", stand_in.url, "--duration", "PT10M", *flags])
    return code, stand_in.requests, clock.sleeps


def test_retries_back_off_exponentially_with_jitter_and_stop_after_five(monkeypatch, capsys):
    code, asked, sleeps = plan_on_simulated_time(monkeypatch, [(429, {"Retry-After": "0"}, RATE_LIMITED)])
    assert code == 4 and len(asked) == 6  # one question, five retries, then a clear stop
    err = capsys.readouterr().err
    assert "gave up after 6 requests, each answered rate limited (429)" in err
    # equal jitter: retry n pauses between half of 2**n s and 2**n s, never under the 1 s floor
    assert len(sleeps) == 5
    for n, pause in enumerate(sleeps):
        assert max(1.0, 2 ** n / 2) <= pause <= max(1.0, 2 ** n), (n, pause)
    _, _, again = plan_on_simulated_time(monkeypatch, [(429, {"Retry-After": "0"}, RATE_LIMITED)])
    assert again[1:] != sleeps[1:]  # jittered: two clients refused together do not retry together


def test_a_5xx_is_retried_after_a_longer_retry_after_and_then_answered(monkeypatch, capsys, real_answer_in_process):
    failing = {"error": {"code": "upstream_unavailable", "message": "Electricity Maps did not answer"}}
    code, asked, sleeps = plan_on_simulated_time(
        monkeypatch, [(503, {"Retry-After": "7"}, failing), (502, {}, failing),
                      (200, {}, real_answer_in_process)])
    assert code == 0 and len(asked) == 3
    assert sleeps[0] == 7  # Retry-After above the back-off wins
    assert 1.0 <= sleeps[1] <= 2.0  # no Retry-After: the back-off's second step
    assert f"start {real_answer_in_process['start']}" in capsys.readouterr().out


@pytest.fixture
def real_answer_in_process(client) -> dict:
    """A scheduled answer from the in-process app (no Gunicorn needed): the wire format to replay."""
    answer = client.post("/api/v1/optimize", json={"duration": "PT10M", "zones": ["DE"],
                                                   "max_delay": "PT1H"}).get_json()
    assert answer["status"] == "scheduled"
    return answer


@pytest.mark.slow
def test_against_the_live_limiter_a_refused_plan_asks_twice_not_hundreds(tmp_path, limit_prefix):
    """Gunicorn with the limiter on Redis at 1 optimize a second: every refusal says Retry-After 0
    (the window ends within the second). The client meets one, pauses at least the floor, which
    ends the window, and is answered: two requests. (The old client asked until the window ended.)
    The budget is spent by the test just before; if the window ends before the client's first
    request, that round proves nothing and is run again."""
    from tests.support import LIMIT_REDIS
    env = {"API_KEYS": KEY, "RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_OPTIMIZE": "1 per 1 second",
           "REDIS_URL": LIMIT_REDIS, "CACHE_KEY_PREFIX": limit_prefix}
    log = tmp_path / "gunicorn.log"
    body = {"duration": "PT10M", "zones": ["DE"]}

    def client_statuses(offset: int) -> list[int]:
        lines = log.read_bytes()[offset:].decode().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith('{"time"') and '"access"' in line]
        return [e["status"] for e in entries
                if e["path"] == "/api/v1/optimize" and (e["user_agent"] or "").startswith("carbon-optimizer-client/")]
    with GunicornProcess(env, workers=1, threads=2, log_path=log) as live:
        # A round proves something only if the client's first request lands in the 1 s window the
        # test just spent, which a loaded machine (a slow process start) can miss: enough rounds.
        for _ in range(20):
            while requests.post(f"{live.url}/api/v1/optimize", json=body, headers={"X-API-Key": KEY},
                                timeout=10).status_code != 429:
                pass
            offset = log.stat().st_size
            result = run_client("plan", "--duration", "PT10M", "--zones", "DE", "--max-wait", "PT1M",
                                url=live.url)
            assert result.returncode == 0, result.stderr
            # The access line is written just after the answer is sent.
            assert wait_for(lambda: client_statuses(offset)[-1:] == [200])
            statuses = client_statuses(offset)
            if statuses[:1] == [429]:
                break
    assert statuses == [429, 200], statuses
    assert "rate limited (429): asking again in 1s (retry 1 of 5)" in result.stderr


# -- what the command is told ---------------------------------------------------------------------

# Prints the variables the client sets (not CARBON_OPTIMIZER_URL or _KEY, which it is given) as JSON.
PRINT_ENV = ("import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
             "if k.startswith('CARBON_OPTIMIZER_') and k not in ('CARBON_OPTIMIZER_URL', 'CARBON_OPTIMIZER_KEY')}))")


def told(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_wait_tells_the_command_the_zone_location_start_and_end(service):
    """Against the live service: the zone chosen among two and the run, as the service answers for
    that same run asked directly; a cloud region is passed as asked, with its grid zone."""
    result = run_client("wait", "--id", "job-7", "--duration", "PT10M", "--zones", "DE,FR",
                        "--max-delay", "PT0M", "--", sys.executable, "-c", PRINT_ENV, url=service.url)
    seen = told(result)
    assert set(seen) == {"CARBON_OPTIMIZER_STATUS", "CARBON_OPTIMIZER_ID", "CARBON_OPTIMIZER_ZONE",
                         "CARBON_OPTIMIZER_LOCATION", "CARBON_OPTIMIZER_START", "CARBON_OPTIMIZER_END",
                         "CARBON_OPTIMIZER_PLAN_ID"}
    assert len(seen["CARBON_OPTIMIZER_PLAN_ID"]) == 32
    assert f"start reported (plan {seen['CARBON_OPTIMIZER_PLAN_ID']})" in result.stderr
    start = datetime.strptime(seen["CARBON_OPTIMIZER_START"], "%Y-%m-%dT%H:%M:%SZ")
    end = datetime.strptime(seen["CARBON_OPTIMIZER_END"], "%Y-%m-%dT%H:%M:%SZ")
    assert end - start == timedelta(minutes=10)
    expected = optimize(service, {"duration": "PT10M", "zones": ["DE", "FR"],
                                  "earliest_start": seen["CARBON_OPTIMIZER_START"],
                                  "latest_start": seen["CARBON_OPTIMIZER_START"]})
    assert (seen["CARBON_OPTIMIZER_ZONE"], seen["CARBON_OPTIMIZER_START"], seen["CARBON_OPTIMIZER_END"]) \
        == (expected["zone"], expected["start"], expected["end"])
    assert seen["CARBON_OPTIMIZER_LOCATION"] == expected["zone"]
    assert seen["CARBON_OPTIMIZER_STATUS"] == "scheduled" and seen["CARBON_OPTIMIZER_ID"] == "job-7"

    region = told(run_client("wait", "--duration", "PT10M", "--zones", "aws:eu-central-1",
                             "--max-delay", "PT0M", "--", sys.executable, "-c", PRINT_ENV, url=service.url))
    assert (region["CARBON_OPTIMIZER_LOCATION"], region["CARBON_OPTIMIZER_ZONE"]) == ("aws:eu-central-1", "DE")


def test_wait_from_plan_tells_the_command_the_chunks_and_the_plan_id(client, tmp_path):
    """A saved batch answer with an interruptible workload (two chunks, from the service's own
    answer) and a plan id (the field a later issue adds): the command is told each chunk."""
    batch = client.post("/api/v1/optimize", json={"workloads": [
        {"id": "train", "duration": "PT4H22M", "zones": ["DE"], "max_delay": "P1D",
         "interruptible": True, "min_chunk": "PT30M"},
        {"id": "lint", "duration": "PT10M", "zones": ["FR"]}]}).get_json()
    batch["plan_id"] = "plan-7f3a"
    for result in batch["results"]:
        result["plan_id"] = "plan-7f3a"
    train = batch["results"][0]
    assert len(train["chunks"]) == 2, train
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps(batch))
    # FIXED_NOW is in the past: the saved start is too, so the command runs at once.
    seen = told(run_client("wait", "--from-plan", str(saved), "--id", "train", "--max-wait", "PT1M",
                           "--", sys.executable, "-c", PRINT_ENV, url="http://127.0.0.1:9"))
    assert seen["CARBON_OPTIMIZER_CHUNKS"] == " ".join(f"{c['start']}/{c['end']}" for c in train["chunks"])
    assert seen["CARBON_OPTIMIZER_PLAN_ID"] == "plan-7f3a" and seen["CARBON_OPTIMIZER_ID"] == "train"
    assert (seen["CARBON_OPTIMIZER_START"], seen["CARBON_OPTIMIZER_END"]) == (train["start"], train["end"])
    assert seen["CARBON_OPTIMIZER_ZONE"] == seen["CARBON_OPTIMIZER_LOCATION"] == "DE"

    lint = told(run_client("wait", "--from-plan", str(saved), "--id", "lint", "--max-wait", "PT1M",
                           "--", sys.executable, "-c", PRINT_ENV, url="http://127.0.0.1:9"))
    assert "CARBON_OPTIMIZER_CHUNKS" not in lint and lint["CARBON_OPTIMIZER_ZONE"] == "FR"

    fail_open = tmp_path / "fail-open.json"
    fail_open.write_text(json.dumps({"fail_open": "no answer"}))
    outer = {"CARBON_OPTIMIZER_ZONE": "XX"}  # a value left by an outer wait is not passed on
    seen = told(run_client("wait", "--from-plan", str(fail_open), "--id", "lint", "--", sys.executable,
                           "-c", PRINT_ENV, url="http://127.0.0.1:9", extra_env=outer))
    assert seen == {"CARBON_OPTIMIZER_STATUS": "fail_open"}


def test_wait_with_max_delay_0_starts_at_once_not_at_the_next_whole_minute(client, monkeypatch):
    """At 10:17:30 (the app's clock) the service answers the next whole minute, 30 s away; the
    window asked for ends at 10:17:30, so the command runs at once, told the planned run."""
    from tests.conftest import FIXED_NOW
    module = load_client_module()
    clock = SimulatedTime()
    monkeypatch.setattr(module, "time", clock)

    class Now(datetime):
        @classmethod
        def now(cls, tz=None):
            return FIXED_NOW
    monkeypatch.setattr(module, "datetime", Now)
    answers, runs = [], []

    def optimize_in_process(self, body, timeout=None):
        answers.append(client.post("/api/v1/optimize", json=body).get_json())
        return module.Reply("ok", 200, answers[-1])
    monkeypatch.setattr(module.Service, "optimize", optimize_in_process)
    monkeypatch.setattr(module, "_run", lambda command, log, answer=None: runs.append((clock.now, answer)) or 0)
    assert module.main(["wait", "--url", "http://127.0.0.1:9", "--duration", "PT10M", "--zones", "DE,FR",
                        "--max-delay", "PT0M", "--", "true"]) == 0
    assert answers[0]["start"] == "2026-11-23T10:18:00Z" and answers[0]["start_in_seconds"] == 30
    assert runs == [(1000.0, answers[0])]


# -- plan: an interruptible answer, chunk by chunk -------------------------------------------------

@pytest.mark.slow
def test_plan_prints_each_chunk_of_an_interruptible_answer(service):
    earliest = stamp(datetime.now(timezone.utc).replace(second=17) + timedelta(hours=1))
    flags = ["--duration", "PT4H22M", "--zones", "DE", "--max-delay", "P1D", "--interruptible",
             "--min-chunk", "PT30M", "--earliest-start", earliest]
    expected = optimize(service, {"duration": "PT4H22M", "zones": ["DE"], "max_delay": "P1D",
                                  "interruptible": True, "min_chunk": "PT30M", "earliest_start": earliest})
    assert len(expected["chunks"]) >= 2, expected["chunks"]
    out = run_client("plan", *flags, url=service.url)
    assert out.returncode == 0, out.stderr
    assert f"{len(expected['chunks'])} chunks in DE, 262 min in all" in out.stdout
    for n, chunk in enumerate(expected["chunks"], 1):
        assert f"chunk {n}: {chunk['start']} to {chunk['end']} ({chunk['duration_minutes']} min)" in out.stdout
    assert f"end {expected['end']}" not in out.stdout  # not one run spanning the gap


# -- the repository around the client --------------------------------------------------------------

def test_the_client_build_output_is_ignored_by_git():
    # what `pip install ./client` leaves beside the sources (setuptools' build/ and egg-info)
    paths = ["client/build/lib/carbon_optimizer_client.py",
             "client/carbon_optimizer_client.egg-info/PKG-INFO"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.split() == paths, result.stdout + result.stderr


def github_outputs(path: Path) -> dict:
    """$GITHUB_OUTPUT as the runner reads it: `name=value` lines and `name<<DELIMITER` blocks."""
    outputs, lines = {}, path.read_text().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line:
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1:end])
            i = end + 1
        else:
            if line:
                name, value = line.split("=", 1)
                outputs[name] = value
            i += 1
    return outputs


def run_action_step(inputs: dict, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """action.yml's step script run as the runner runs it, with GITHUB_OUTPUT; returns the outputs
    of the ACTION (its `outputs:` resolved from the step's)."""
    import yaml
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    step = action["runs"]["steps"][0]
    given = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    given.update(inputs)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_OPTIMIZER_", "GITHUB_"))}
    for variable, expression in step["env"].items():
        env[variable] = given[expression.split("inputs.")[1].rstrip(" }")]
    output_file = tmp_path / "github_output"
    output_file.write_text("")
    env.update(GITHUB_ACTION_PATH=str(ROOT), GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(output_file))
    result = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True,
                            text=True, timeout=30)
    step_outputs = github_outputs(output_file)
    resolved = {}
    for name, spec in action["outputs"].items():
        reference = spec["value"].strip("${} ")
        assert reference.startswith(f"steps.{step['id']}.outputs."), reference
        resolved[name] = step_outputs.get(reference.rsplit(".", 1)[1], "")
    return result, resolved


@pytest.mark.slow
def test_the_action_tells_the_command_and_later_steps_the_answer(real_answer, tmp_path):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    answer = {**real_answer, "id": "nightly", "plan_id": "plan-42", "location": "aws:eu-central-1",
              "start": stamp(now), "end": stamp(now + timedelta(minutes=10)), "start_in_seconds": 0,
              "provenance": {**real_answer["provenance"], "replan_at": None}}
    with ScriptedService([(200, {}, answer)]) as stand_in:
        result, outputs = run_action_step(
            {"run": f'{sys.executable} -c "{PRINT_ENV}"', "duration": "PT10M", "zones": "aws:eu-central-1",
             "max-delay": "PT1H", "id": "nightly", "url": stand_in.url}, tmp_path)
    seen = told(result)
    sent = stand_in.requests[0]["body"]
    assert sent["zones"] == ["aws:eu-central-1"] and sent["id"] == "nightly"
    expected = {"status": "scheduled", "zone": real_answer["zone"], "location": "aws:eu-central-1",
                "start": stamp(now), "end": stamp(now + timedelta(minutes=10)), "chunks": "",
                "id": "nightly", "plan-id": "plan-42"}
    assert outputs == expected
    assert seen == {f"CARBON_OPTIMIZER_{k.upper().replace('-', '_')}": v for k, v in expected.items() if v}


def test_a_failed_open_action_says_so_in_its_outputs(tmp_path):
    result, outputs = run_action_step({"run": f"{sys.executable} -c \"{PRINT_ENV}\"", "duration": "PT45M",
                                       "url": f"http://127.0.0.1:{free_port()}"}, tmp_path)
    assert told(result) == {"CARBON_OPTIMIZER_STATUS": "fail_open"}
    assert outputs["status"] == "fail_open" and outputs["zone"] == "" and outputs["start"] == ""


@pytest.mark.slow  # on a Makefile without the check, `make run` starts Gunicorn
def test_make_run_on_a_taken_port_names_gunicorn_bind():
    import socket
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        bind = f"127.0.0.1:{holder.getsockname()[1]}"
        # -o: never reinstall the requirements here; only the run target's own steps are tested
        result = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.runtime", "run"], cwd=ROOT,
                                env={**os.environ, "GUNICORN_BIND": bind}, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode != 0
    assert f"cannot listen on {bind} (already in use)" in result.stderr and "set GUNICORN_BIND" in result.stderr
    assert "Starting gunicorn" not in result.stdout + result.stderr
