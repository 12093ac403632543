#!/usr/bin/env python3
"""carbon-optimizer: ask a carbon-optimizer service when (and where) to run a job, wait, run it.

Standard library only, Python 3.8+, one file: a CI runner can `pip install` the client package or
fetch this file alone and run it with `python3 carbon_optimizer_client.py ...`.

Exit codes (also in --help and the README):
  0    plan: an answer was printed; wait: the command's own exit code is passed through
  2    usage: a bad flag or value, no service URL, an unreadable --batch or --from-plan file
  3    the service refused the request (a 4xx: bad zone, wrong key, window not covered, ...),
       or the saved plan marks the workload unschedulable; the command is NOT run
  4    plan only: the service is unreachable or failing (wait runs the command instead)
  126  wait: the command could not be executed;  127: it was not found
  130  interrupted while waiting (Ctrl-C, or the job was cancelled)
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, List, Optional

__version__ = "0.1.0"

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
EXIT_INTERRUPTED = 130

# Asking again: shortly before the start (a newer forecast may move it), never more often than this.
RECHECK_LEAD_SECONDS = 60.0
RECHECK_MIN_AGE_SECONDS = 300.0  # a plan younger than this at the recheck point is not re-asked
REASK_MIN_GAP_SECONDS = 2.0      # guards against a replan_at that keeps pointing at "now"
AT_START_TIMEOUT_SECONDS = 5.0   # how long a question asked at the start may delay it
# Reporting a run's start (for the service's ledger of measured savings): best effort, and the
# command waits for it at most this long, whatever the network does.
START_REPORT_SECONDS = 2.0
PLAN_ID = re.compile(r"[0-9a-f]{32}")
# Without --max-wait, how long 429 and 5xx answers are waited out before failing open.
RATE_LIMIT_PATIENCE_SECONDS = 600.0
DEFAULT_RETRY_AFTER_SECONDS = 30.0
# Asking again after a 429 or 5xx: never sooner than the floor (a Retry-After of 0 would otherwise
# be a busy loop against a service that is already refusing), an exponential back-off with jitter
# (a matrix of jobs refused at the same second spreads out), at most MAX_RETRIES times a question.
RETRY_FLOOR_SECONDS = 1.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
MAX_RETRIES = 5

# What `wait` tells the command about the answer (README, "Using it from CI"); the same values are
# the GitHub Action's step outputs (lower case, dashes).
ENV_PREFIX = "CARBON_OPTIMIZER_"
ANSWER_VARIABLES = ("STATUS", "ID", "PLAN_ID", "ZONE", "LOCATION", "START", "END", "CHUNKS")

EPILOG = """\
settings:
  CARBON_OPTIMIZER_URL   the service's base URL (or --url), e.g. https://carbon.example.com
  CARBON_OPTIMIZER_KEY   client API key, sent as X-API-Key (or --api-key); never printed

failure policy (wait):
  connection error, timeout   run the command at once, with a loud warning (fail open)
  429, 5xx                    ask again after Retry-After (at least 1 s) or a growing, jittered
                              back-off, at most 5 times and within --max-wait, then fail open
  other 4xx                   print the service's message, exit 3, do NOT run the command

what the command is told (wait; in GitHub Actions also step outputs: zone, plan-id, ...):
  CARBON_OPTIMIZER_STATUS       scheduled, or fail_open (no answer: the others are unset)
  CARBON_OPTIMIZER_ZONE         the grid zone chosen, e.g. FR
  CARBON_OPTIMIZER_LOCATION     that zone as it was asked for: a cloud region, or the zone
  CARBON_OPTIMIZER_START, _END  the planned run, RFC 3339 UTC
  CARBON_OPTIMIZER_CHUNKS       an interruptible plan's runs: "start/end start/end ..."
  CARBON_OPTIMIZER_ID, _PLAN_ID the workload's id, the plan's id (when the service gives one)

what wait tells the service (best effort, never delaying the command more than 2 s):
  asking again (at replan_at, or a last check)  the earlier answer's plan_id as replan_of
  just before running the command               POST /api/v1/plans/<plan_id>/started

exit codes:
  0    plan: answer printed; wait: the command's own exit code is passed through
  2    usage error (bad flag or value, no URL, unreadable --batch / --from-plan file)
  3    the service refused the request (4xx), or the saved plan says unschedulable: not run
  4    plan only: the service is unreachable or failing
  126  the command could not be executed; 127: not found
  130  interrupted while waiting
"""


class UsageError(Exception):
    """A flag or value the client cannot use: exit 2."""


# -- time values ------------------------------------------------------------------------------

_ISO_DURATION = re.compile(
    r"P(?!$)(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?")


def parse_duration(text: str, flag: str, minutes_allowed: bool = False) -> timedelta:
    """An ISO 8601 duration (PT2H30M), or whole minutes where the service takes them."""
    value = text.strip()
    if minutes_allowed and value.isdigit():
        return timedelta(minutes=int(value))
    match = _ISO_DURATION.fullmatch(value.upper())
    if not match:
        raise UsageError(f"{flag}: {text!r} is not an ISO 8601 duration such as PT45M or PT6H")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return timedelta(weeks=parts["w"], days=parts["d"], hours=parts["h"], minutes=parts["m"],
                     seconds=parts["s"])


def parse_time(text: str, flag: str) -> datetime:
    """An RFC 3339 timestamp with an offset (fromisoformat takes a trailing Z only from 3.11)."""
    value = text.strip()
    if value[-1:] in "zZ":
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise UsageError(f"{flag}: {text!r} is not an RFC 3339 timestamp with an offset, "
                         "e.g. 2026-11-23T08:00:00Z")
    return moment


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def human(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


# -- talking to the service -----------------------------------------------------------------------

class Reply:
    """One exchange with the service, classified by the failure policy.

    kind: "ok" (2xx, JSON body), "refused" (4xx other than 429: the request must change),
    "rate_limited" (429, retry_after seconds), "unavailable" (no answer, a timeout, a 5xx, or a body
    that is not the service's JSON; a 5xx's Retry-After, when it sends one, in retry_after).
    """

    def __init__(self, kind: str, status: Optional[int] = None, body: object = None,
                 message: str = "", retry_after: Optional[float] = None):
        self.kind, self.status, self.body = kind, status, body
        self.message, self.retry_after = message, retry_after


def _retry_after(value: Optional[str]) -> float:
    """Retry-After as delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return DEFAULT_RETRY_AFTER_SECONDS
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_text(status: Optional[int], body: object) -> str:
    """The service's error envelope as lines a person reads: message, then one line per field."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {status}" if status else "no answer"
    lines = [f"HTTP {status} {error.get('code', '')}: {error.get('message', '')}".rstrip(": ")]
    for detail in error.get("details") or []:
        if isinstance(detail, dict):
            lines.append(f"  {detail.get('field', '?')}: {detail.get('message', '')}")
    return "\n".join(lines)


class Service:
    def __init__(self, url: str, api_key: Optional[str], timeout: float):
        base = url.strip().rstrip("/")
        if base.endswith("/api/v1/optimize"):
            base = base[: -len("/api/v1/optimize")]
        if not re.match(r"https?://", base):
            raise UsageError(f"--url / CARBON_OPTIMIZER_URL: {url!r} is not an http(s) URL")
        self.base = base
        self.endpoint = base + "/api/v1/optimize"
        self.api_key = api_key or None
        self.timeout = timeout

    def optimize(self, body: dict, timeout: Optional[float] = None) -> Reply:
        return self._post(self.endpoint, body, timeout)

    def started(self, plan_id: str, timeout: float) -> Reply:
        """Tell the service that the plan's run starts now (its clock, not this runner's)."""
        return self._post(f"{self.base}/api/v1/plans/{plan_id}/started", {}, timeout)

    def _post(self, url: str, body: dict, timeout: Optional[float] = None) -> Reply:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "User-Agent": f"carbon-optimizer-client/{__version__}",
                     **({"X-API-Key": self.api_key} if self.api_key else {})})
        try:
            # B310 (file:// and custom schemes): the URL was checked to be http(s) in __init__.
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:  # nosec B310
                status, raw, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, headers = exc.code, exc.headers
            try:
                raw = exc.read()
            except OSError:
                raw = b""
        except (OSError, ValueError) as exc:  # refused, reset, DNS, timeout (socket.timeout is OSError)
            reason = getattr(exc, "reason", exc)
            return Reply("unavailable", message=f"no answer from {url}: {reason}")
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if status == 429:
            return Reply("rate_limited", status, parsed, error_text(status, parsed),
                         _retry_after(headers.get("Retry-After")))
        if status == 408 or status >= 500:  # 408: the request did not arrive in time, a network fault
            # A 503 says when to come back (Retry-After); without one the back-off decides.
            hint = headers.get("Retry-After")
            return Reply("unavailable", status, parsed, error_text(status, parsed),
                         _retry_after(hint) if hint else None)
        if status >= 400:
            return Reply("refused", status, parsed, error_text(status, parsed))
        if not isinstance(parsed, dict):
            return Reply("unavailable", status, None,
                         f"HTTP {status} but the body is not the service's JSON (wrong URL?)")
        return Reply("ok", status, parsed)


def backoff(retry: int, retry_after: Optional[float], draw: Callable[[], float] = random.random) -> float:
    """Seconds to pause before retry number `retry` (0 for the first): half of BACKOFF_BASE * 2**retry
    (capped) plus a random part up to the other half ("equal jitter"), never below the floor, and
    never sooner than a larger Retry-After."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** retry)
    return max(RETRY_FLOOR_SECONDS, ceiling / 2 + draw() * ceiling / 2, retry_after or 0.0)


def _retryable(reply: Reply) -> bool:
    """429, or a service that answered but is failing (5xx, 408); not a connection that failed or
    timed out (that already took its time) nor a body that is not the service's."""
    return reply.kind == "rate_limited" or (
        reply.kind == "unavailable" and reply.status is not None and (reply.status == 408 or reply.status >= 500))


def ask(service: Service, body: dict, deadline: Optional[float], log: "Log",
        patience: float = RATE_LIMIT_PATIENCE_SECONDS) -> Reply:
    """POST; on a 429 or 5xx ask again after `backoff`, at most MAX_RETRIES times, while the pause
    ends before `deadline` (a monotonic time; None: `patience` seconds from now)."""
    limit = deadline if deadline is not None else time.monotonic() + patience
    retry = 0
    while True:
        left = limit - time.monotonic()
        reply = service.optimize(body, timeout=max(1.0, min(service.timeout, left)) if left > 0 else None)
        if not _retryable(reply):
            return reply
        what = "rate limited (429)" if reply.kind == "rate_limited" else f"HTTP {reply.status}"
        if retry >= MAX_RETRIES:
            reply.message += (f"\n  (gave up after {retry + 1} requests, each answered {what}: "
                              "the service is refusing or failing)")
            return reply
        pause = backoff(retry, reply.retry_after)
        if time.monotonic() + pause > limit:
            reply.message += (f"\n  (gave up after {retry + 1} request{'s' if retry else ''}: the next "
                              f"try, in {human(pause)}, runs past the time allowed to wait)")
            return reply
        log.line(f"{what}: asking again in {human(pause)} (retry {retry + 1} of {MAX_RETRIES})")
        time.sleep(pause)
        retry += 1


# -- output -----------------------------------------------------------------------------------

class Log:
    """Messages on stderr (stdout stays the command's, or plan's answer). In GitHub Actions the
    warnings and errors are also annotations, so they show on the run's summary page."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.github = os.environ.get("GITHUB_ACTIONS") == "true"

    def line(self, text: str) -> None:
        print(f"carbon-optimizer: {text}", file=self.stream, flush=True)

    def warning(self, text: str) -> None:
        bar = "!" * 72
        print(f"{bar}\ncarbon-optimizer WARNING: {text}\n{bar}", file=self.stream, flush=True)
        if self.github:
            print(f"::warning title=carbon-optimizer::{_annotation(text)}", flush=True)

    def error(self, text: str) -> None:
        print(f"carbon-optimizer ERROR: {text}", file=self.stream, flush=True)
        if self.github:
            print(f"::error title=carbon-optimizer::{_annotation(text)}", flush=True)


def _annotation(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def scheduled(answer: object) -> bool:
    """Whether a 200 body is a scheduled workload (and not, say, some other server's JSON)."""
    return (isinstance(answer, dict) and answer.get("status") == "scheduled"
            and isinstance(answer.get("start_in_seconds"), (int, float))
            and all(isinstance(answer.get(k), str) for k in ("start", "end", "zone")))


def describe(answer: dict) -> str:
    """A scheduled workload as a few lines: when and where, the saving, the data it rests on."""
    if not scheduled(answer):
        return (f"{answer.get('id') or 'workload'}: {answer.get('status') or 'no plan'} ({answer.get('code')}): "
                f"{answer.get('reason')}")
    name = f"{answer['id']}: " if answer.get("id") else ""
    where = answer["zone"]
    if answer.get("location") and answer["location"] != where:  # a cloud region: say its grid too
        where = f"{answer['location']} (grid zone {where})"
    chunks = _chunks(answer)
    if len(chunks) > 1:  # an interruptible answer: each run, not one span with its gaps in it
        lines = [f"{name}{len(chunks)} chunks in {where}, {answer.get('duration_minutes', '?')} min in all, "
                 f"the first in {human(answer.get('start_in_seconds', 0))}:"]
        lines += [f"  chunk {n}: {start} to {end} ({minutes} min)"
                  for n, (start, end, minutes) in enumerate(chunks, 1)]
    else:
        lines = [f"{name}start {answer['start']} in {where} "
                 f"(in {human(answer.get('start_in_seconds', 0))}), end {answer['end']}"]
    baseline = answer.get("baseline")
    saving = answer.get("saving_percent")
    provenance = answer.get("provenance") or {}
    units = provenance.get("units") or "gCO2eq/kWh"  # older services state no unit
    if provenance.get("signal") and provenance["signal"] != "average":
        units += f" ({provenance['signal']})"
    if baseline and saving is not None:
        text = (f"  {answer['carbon_intensity']} {units} vs {baseline['carbon_intensity']} "
                f"at the earliest start in {baseline['zone']}: {saving}% less")
        if answer.get("saving_grams") is not None:
            text += f", {answer['saving_grams']} g CO2eq saved"
        lines.append(text)
    else:
        lines.append(f"  {answer.get('carbon_intensity')} {units}")
    if provenance.get("estimated"):
        part = provenance.get("estimated_part") or {}
        text = (f"  estimates used: {part.get('minutes', '?')} min from {part.get('start', '?')} "
                "lie past the provider's forecast")
        if provenance.get("replan_at"):
            text += f"; ask again at {provenance['replan_at']}"
        lines.append(text)
    else:
        lines.append(f"  estimates used: no (forecast by {provenance.get('provider', '?')})")
    if provenance.get("stale"):
        lines.append("  the forecast is stale: the provider failed and an older copy was used")
    if provenance.get("attribution"):
        lines.append(f"  {provenance['attribution']}")
    for zone in answer.get("unavailable_zones") or []:
        lines.append(f"  zone {zone.get('zone')} unavailable ({zone.get('code')}): {zone.get('message')}")
    return "\n".join(lines)


def _chunks(answer: dict) -> List[tuple]:
    """An interruptible answer's chunks as (start, end, minutes); [] for any other answer."""
    chunks = answer.get("chunks")
    if not isinstance(chunks, list):
        return []
    return [(c.get("start"), c.get("end"), c.get("duration_minutes")) for c in chunks if isinstance(c, dict)]


def _utc(text: object) -> str:
    """A timestamp of the answer as RFC 3339 UTC with Z (the service's own form; normalised in case
    a proxy or an older service wrote an offset)."""
    try:
        return rfc3339(parse_time(str(text), "answer"))
    except (UsageError, IndexError):
        return str(text)


def answer_values(answer: Optional[dict]) -> Dict[str, str]:
    """What the command is told (ANSWER_VARIABLES, without the prefix): the zone it runs in, the
    location as asked (a cloud region, or the zone), the planned start and end, an interruptible
    answer's chunks as ISO 8601 intervals ("start/end start/end"), the workload's and the plan's ids.
    None: no answer (failing open), only STATUS=fail_open."""
    if answer is None:
        return {"STATUS": "fail_open"}
    values = {"STATUS": "scheduled", "ZONE": str(answer["zone"]),
              "LOCATION": str(answer.get("location") or answer["zone"]),
              "START": _utc(answer["start"]), "END": _utc(answer["end"])}
    if answer.get("id") is not None:
        values["ID"] = str(answer["id"])
    if answer.get("plan_id") is not None:
        values["PLAN_ID"] = str(answer["plan_id"])
    chunks = _chunks(answer)
    if chunks:
        values["CHUNKS"] = " ".join(f"{_utc(start)}/{_utc(end)}" for start, end, _ in chunks)
    return values


def _github_outputs(values: Dict[str, str]) -> None:
    """In a GitHub Actions step, the same values as step outputs (zone, plan-id, ...), each with a
    delimiter no value contains, so that a value cannot add outputs of its own."""
    path = os.environ.get("GITHUB_OUTPUT")
    if os.environ.get("GITHUB_ACTIONS") != "true" or not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        for name in ANSWER_VARIABLES:
            value = values.get(name, "")
            delimiter = f"CARBON_OPTIMIZER_{random.getrandbits(64):016x}"
            handle.write(f"{name.lower().replace('_', '-')}<<{delimiter}\n{value}\n{delimiter}\n")


# -- the request ------------------------------------------------------------------------------

def workload(args: argparse.Namespace) -> dict:
    """The request body from the flags, as the service's Workload schema names its fields."""
    body: dict = {"duration": int(args.duration) if args.duration.strip().isdigit() else args.duration}
    if args.id:
        body["id"] = args.id
    if args.zones:
        body["zones"] = [z.strip() for part in args.zones for z in part.split(",") if z.strip()]
    for flag in ("earliest_start", "deadline", "latest_start", "max_delay", "min_chunk"):
        if getattr(args, flag):
            body[flag] = getattr(args, flag)
    for flag in ("power_kw", "energy_kwh", "max_chunks"):
        if getattr(args, flag) is not None:
            body[flag] = getattr(args, flag)
    if args.interruptible:
        body["interruptible"] = True
    if args.no_extend_horizon:
        body["extend_horizon"] = False
    if args.signal:
        body["signal"] = args.signal
    return body


def fixed_window(body: dict, now: datetime, max_wait: Optional[timedelta]) -> dict:
    """The same workload with an absolute window, so that asking again later keeps the window of the
    first ask (a max_delay counts from the earliest start, which would move), and with the latest
    start no later than --max-wait allows: the service then picks the best start we can wait for."""
    fixed = dict(body)
    earliest = parse_time(body["earliest_start"], "--earliest-start") if "earliest_start" in body else now
    fixed["earliest_start"] = rfc3339(earliest)
    latest = None
    if "max_delay" in fixed:
        latest = earliest + parse_duration(fixed.pop("max_delay"), "--max-delay")
    elif "latest_start" in fixed:
        latest = parse_time(fixed["latest_start"], "--latest-start")
    if max_wait is not None:
        cap = now + max_wait
        if earliest > cap:
            raise UsageError(f"--earliest-start {rfc3339(earliest)} is after --max-wait allows "
                             f"({rfc3339(cap)})")
        if "deadline" in fixed:
            duration = parse_duration(str(fixed["duration"]), "--duration", minutes_allowed=True)
            if parse_time(fixed["deadline"], "--deadline") - duration > cap:
                fixed.pop("deadline")
                latest = cap
        elif latest is None or latest > cap:
            latest = cap
    if latest is not None:
        fixed["latest_start"] = rfc3339(latest)
    return fixed


# -- commands ---------------------------------------------------------------------------------

def service_of(args: argparse.Namespace) -> Service:
    url = args.url or os.environ.get("CARBON_OPTIMIZER_URL")
    if not url:
        raise UsageError("no service URL: give --url or set CARBON_OPTIMIZER_URL")
    key = args.api_key if args.api_key is not None else os.environ.get("CARBON_OPTIMIZER_KEY")
    return Service(url, key, args.timeout)


def _max_wait(args: argparse.Namespace) -> Optional[timedelta]:
    return parse_duration(args.max_wait, "--max-wait") if args.max_wait else None


def command_plan(args: argparse.Namespace, log: Log) -> int:
    service = service_of(args)
    if args.batch:
        body = _read_json(args.batch, "--batch")
    else:
        if not args.duration:
            raise UsageError("--duration is required (or give --batch FILE)")
        body = workload(args)
    max_wait = _max_wait(args)
    deadline = time.monotonic() + max_wait.total_seconds() if max_wait is not None else None
    reply = ask(service, body, deadline, log)
    if reply.kind == "refused":
        log.error(f"the service refused the request:\n{reply.message}")
        return EXIT_REFUSED
    if reply.kind != "ok":
        if args.save:  # the jobs that read this plan run at once: fail open, as `wait` does
            _write_json(args.save, {"fail_open": reply.message})
            log.warning(f"service unavailable, saved a fail-open plan to {args.save}:\n{reply.message}")
            return EXIT_OK
        log.error(f"service unavailable:\n{reply.message}")
        return EXIT_UNAVAILABLE
    batch_answer = isinstance(reply.body.get("results"), list)
    if not batch_answer and not scheduled(reply.body):
        log.error(f"HTTP {reply.status} but the body is no optimize answer (wrong URL?)")
        return EXIT_UNAVAILABLE
    if args.save:
        _write_json(args.save, reply.body)
    if args.json:
        print(json.dumps(reply.body, indent=2))
    elif batch_answer:
        for result in reply.body["results"]:
            print(describe(result))
        summary = reply.body.get("summary", {})
        line = f"{summary.get('scheduled')} of {summary.get('workloads')} scheduled"
        # null when no workload gave power or energy: no grams to report, not a saving of 0 g
        if summary.get("saving_grams") is not None:
            line += f", {summary['saving_grams']} g CO2eq saved in all"
        print(line)
    else:
        print(describe(reply.body))
    return EXIT_OK


class Plan:
    """A scheduled answer pinned to this process's monotonic clock. The service's relative fields
    are used, not its absolute times, so a runner whose clock is off still starts on time."""

    def __init__(self, answer: dict, asked_at: float):
        self.answer, self.asked_at = answer, asked_at
        self.start = asked_at + float(answer.get("start_in_seconds", 0))
        self.replan = None
        replan_at = (answer.get("provenance") or {}).get("replan_at")
        if replan_at:
            offset = (parse_time(answer["start"], "start") - parse_time(replan_at, "replan_at")).total_seconds()
            self.replan = self.start - offset


def _run(command: List[str], log: Log, answer: Optional[dict] = None) -> int:
    """Run the command, told the answer in its environment (None: failing open)."""
    values = answer_values(answer)
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):] in ANSWER_VARIABLES)}
    env.update({ENV_PREFIX + name: value for name, value in values.items()})
    _github_outputs(values)
    told = " ".join(f"{ENV_PREFIX}{name}={values[name]}" for name in ("ZONE", "START") if name in values)
    log.line(f"running: {' '.join(command)}" + (f" ({told}, ...)" if told else ""))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "posix":  # become the command: its signals, its exit status
            os.execvpe(command[0], command, env)
        return subprocess.call(command, env=env)
    except FileNotFoundError:
        log.error(f"command not found: {command[0]}")
        return EXIT_NOT_FOUND
    except PermissionError:
        log.error(f"command not executable: {command[0]}")
        return EXIT_CANNOT_EXECUTE


def _unrunnable(command: List[str], log: Log) -> Optional[int]:
    """The exit status the shell would give if the command cannot be started, else None: checked
    before waiting, so a typo fails at once rather than after the whole window."""
    program = command[0]
    if os.sep in program or (os.altsep and os.altsep in program):  # a path: exec does no PATH search
        if not os.path.exists(program):
            log.error(f"command not found: {program} (no such file); nothing waited for")
            return EXIT_NOT_FOUND
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            log.error(f"command not executable: {program}; nothing waited for")
            return EXIT_CANNOT_EXECUTE
    elif shutil.which(program) is None:
        log.error(f"command not found: {program} (not on PATH); nothing waited for")
        return EXIT_NOT_FOUND
    return None


class Countdown:
    """Sleeps until a monotonic time, showing how long is left: a line rewritten every second on
    a terminal, else a line every `every` seconds (a CI log keeps every line)."""

    def __init__(self, log: Log, every: float, tty: bool):
        self.log, self.every, self.tty = log, every, tty
        self.last_line = float("-inf")

    def until(self, wake: float, describe_target: Callable[[], str]) -> None:
        while True:
            now = time.monotonic()
            left = wake - now
            if left <= 0:
                break
            if self.tty:
                self.log.stream.write(f"\rcarbon-optimizer: {describe_target()}   ")
                self.log.stream.flush()
                time.sleep(min(1.0, left))
            else:
                if now - self.last_line >= self.every:
                    self.log.line(describe_target())
                    self.last_line = now
                time.sleep(min(self.every - (now - self.last_line), left, 60.0))
        if self.tty:
            self.log.stream.write("\n")
            self.log.stream.flush()


def command_wait(args: argparse.Namespace, log: Log) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("give the command to run after --, e.g. wait --duration PT45M -- make e2e")
    unrunnable = _unrunnable(command, log)
    if unrunnable is not None:
        return unrunnable
    max_wait = _max_wait(args)
    started = time.monotonic()
    cap = started + max_wait.total_seconds() if max_wait is not None else None
    every = parse_duration(args.progress_every, "--progress-every").total_seconds()
    countdown = Countdown(log, max(1.0, every), log.stream.isatty())

    if args.from_plan:
        return _wait_from_plan(args, command, cap, countdown, log)
    if not args.duration:
        raise UsageError("--duration is required (or give --from-plan FILE --id ID)")
    if args.interruptible:
        raise UsageError("wait runs the command in one piece: --interruptible is for plan")
    service = service_of(args)
    asked = datetime.now(timezone.utc).replace(microsecond=0)  # as sent: whole seconds
    body = fixed_window(workload(args), asked, max_wait)
    # The service starts runs on whole minutes, so its start can be up to 59 s past the latest start
    # asked for (--max-delay PT0M: the next minute); the client never waits past that latest start.
    latest = (started + (parse_time(body["latest_start"], "latest_start") - asked).total_seconds()
              if "latest_start" in body else None)

    reply = ask(service, body, cap, log)
    if reply.kind == "refused":
        log.error(f"the service refused the request, the command is NOT run:\n{reply.message}")
        return EXIT_REFUSED
    if reply.kind == "ok" and not scheduled(reply.body):
        reply = Reply("unavailable", message=f"HTTP {reply.status} but the body is no optimize "
                                             "answer (wrong URL?)")
    if reply.kind != "ok":
        log.warning(f"no plan from the service, running the command NOW (fail open):\n{reply.message}")
        return _run(command, log)
    plan = Plan(reply.body, time.monotonic())
    log.line(describe(plan.answer))

    while True:
        now = time.monotonic()
        # The earliest of: the planned start, --max-wait, the latest start asked for (on a tie, the start).
        target, bound = min((t, n) for n, t in enumerate((plan.start, cap, latest)) if t is not None)
        if target <= now:
            break
        wake, why = target, "start"
        # replan_at may be the start itself: the forecast published then reaches furthest, and the
        # service still offers the run in hand (from the next whole minute).
        # A millisecond's slack: replan is start - offset, and a gap of exactly REASK_MIN_GAP_SECONDS
        # came out a hair under it in floating point now and then (the replan was then skipped).
        if plan.replan is not None and plan.asked_at + REASK_MIN_GAP_SECONDS <= plan.replan + 1e-3 \
                and plan.replan <= target:
            wake, why = max(now, plan.replan), "replan"
        elif target - RECHECK_LEAD_SECONDS - plan.asked_at >= RECHECK_MIN_AGE_SECONDS:
            wake, why = target - RECHECK_LEAD_SECONDS, "recheck"
        if bound == 1 and why == "start":
            log.line(f"--max-wait ends before the planned start: starting in {human(target - now)}")
        zone = plan.answer.get("zone")
        countdown.until(wake, lambda: f"starting in {zone} in {human(target - time.monotonic())}")
        if why == "start":
            break
        log.line("asking again: " + ("the forecast now covers more of the window"
                                     if why == "replan" else "a last check before starting"))
        # Never past the start (or --max-wait) waiting for an answer, but for a question asked at
        # the start itself, which may take a few seconds.
        at_start = why == "replan" and wake >= target and target == plan.start
        again = service.optimize(revising(body, plan.answer),
                                 timeout=max(AT_START_TIMEOUT_SECONDS if at_start else 1.0,
                                             min(service.timeout, target - time.monotonic())))
        if again.kind == "ok" and scheduled(again.body):
            previous = plan.answer.get("start"), plan.answer.get("zone")
            plan = Plan(again.body, time.monotonic())
            if (plan.answer.get("start"), plan.answer.get("zone")) != previous:
                log.line("new plan: " + describe(plan.answer))
        else:
            # The first answer stands: a later ask that fails does not undo it.
            log.line(f"asking again failed, keeping the plan:\n{again.message}")
            plan.asked_at, plan.replan = time.monotonic(), None
    if bound == 1:
        log.line("--max-wait reached: starting now")
    elif bound == 2:
        log.line("the latest start asked for has come (the service's start is the whole minute "
                 "after it): starting now")
    report_started(service, plan.answer, log)
    return _run(command, log, plan.answer)


def _plan_id(answer: Optional[dict]) -> Optional[str]:
    plan_id = answer.get("plan_id") if isinstance(answer, dict) else None
    return plan_id if isinstance(plan_id, str) and PLAN_ID.fullmatch(plan_id) else None


def revising(body: dict, answer: dict) -> dict:
    """The same question asked again, naming the plan it revises (replan_of), so that the
    service's ledger counts the job once."""
    plan_id = _plan_id(answer)
    return {**body, "replan_of": plan_id} if plan_id else body


def report_started(service: Optional[Service], answer: Optional[dict], log: Log) -> None:
    """Tell the service the plan's run starts now, for its ledger of measured savings. Best effort:
    at most START_REPORT_SECONDS (the request runs on a thread the command does not wait for past
    that, whatever DNS or the network do), and a failure is one line, never the job's failure."""
    plan_id = _plan_id(answer)
    if service is None or plan_id is None:
        return
    done: Dict[str, Reply] = {}
    # The call may take a little longer than the wait for it: a service that does not answer is
    # then always "no answer in time", never a socket timeout racing the wait.
    sender = threading.Thread(target=lambda: done.setdefault(
        "reply", service.started(plan_id, START_REPORT_SECONDS + 1)), name="start-report", daemon=True)
    sender.start()
    sender.join(START_REPORT_SECONDS)
    reply = done.get("reply")
    if reply is not None and reply.kind == "ok":
        log.line(f"start reported (plan {plan_id})")
    else:
        why = "no answer in time" if reply is None else reply.message.splitlines()[0] if reply.message else reply.kind
        log.line(f"note: the start was not reported ({why}); the command runs all the same")


def _wait_from_plan(args: argparse.Namespace, command: List[str], cap: Optional[float],
                    countdown: Countdown, log: Log) -> int:
    """Wait for one workload of a plan saved by `plan --save` (one batch request for a matrix)."""
    saved = _read_json(args.from_plan, "--from-plan")
    if isinstance(saved, dict) and "fail_open" in saved:
        log.warning(f"the saved plan has no answer, running the command NOW (fail open):\n{saved['fail_open']}")
        return _run(command, log)
    results = saved.get("results") if isinstance(saved, dict) and "results" in saved else [saved]
    chosen = [r for r in results if isinstance(r, dict) and (len(results) == 1 or r.get("id") == args.id)]
    if len(chosen) != 1:
        ids = ", ".join(str(r.get("id")) for r in results if isinstance(r, dict))
        raise UsageError(f"--id {args.id!r}: the saved plan has no single workload with that id "
                         f"(ids: {ids or 'none'})")
    answer = chosen[0]
    if not scheduled(answer):
        log.error(f"the plan cannot run this workload, the command is NOT run:\n{describe(answer)}")
        return EXIT_REFUSED
    log.line(describe(answer))
    left = (parse_time(answer["start"], "start") - datetime.now(timezone.utc)).total_seconds()
    target = time.monotonic() + max(0.0, left)
    if cap is not None:
        target = min(target, cap)
    countdown.until(target, lambda: f"starting in {answer.get('zone')} in {human(target - time.monotonic())}")
    try:
        service: Optional[Service] = service_of(args)
    except UsageError:  # no service named: a saved plan needs none, so no start is reported
        service = None
    report_started(service, answer, log)
    return _run(command, log, answer)


def _read_json(path: str, flag: str) -> object:
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{flag}: cannot read JSON from {path}: {exc}") from None


def _write_json(path: str, value: object) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2)
        handle.write("\n")


# -- command line -----------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    service = common.add_argument_group("service")
    service.add_argument("--url", help="service base URL (default: $CARBON_OPTIMIZER_URL)")
    service.add_argument("--api-key", help="client API key, sent as X-API-Key (default: $CARBON_OPTIMIZER_KEY, "
                              "better: a flag shows in process listings)")
    service.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                         help="per request (default: 30)")
    request = common.add_argument_group("the workload (fields of POST /api/v1/optimize)")
    request.add_argument("--duration", help="how long it runs: ISO 8601 (PT45M) or minutes")
    request.add_argument("--zones", action="append", metavar="DE,FR",
                         help="candidate zones, comma-separated (default: the service's)")
    request.add_argument("--id", help="echoed back; with --from-plan, which workload of the plan")
    request.add_argument("--earliest-start", metavar="TIME", help="RFC 3339 (default: now)")
    limit = request.add_mutually_exclusive_group()
    limit.add_argument("--max-delay", metavar="PT6H", help="latest start, after the earliest start")
    limit.add_argument("--deadline", metavar="TIME", help="latest finish, RFC 3339")
    limit.add_argument("--latest-start", metavar="TIME", help="latest start, RFC 3339")
    energy = request.add_mutually_exclusive_group()
    energy.add_argument("--power-kw", type=float, help="mean power draw, for grams CO2eq")
    energy.add_argument("--energy-kwh", type=float, help="energy used, for grams CO2eq")
    request.add_argument("--interruptible", action="store_true", help="may run in chunks")
    request.add_argument("--min-chunk", metavar="PT15M", help="shortest chunk (interruptible)")
    request.add_argument("--max-chunks", type=int, help="most chunks (interruptible)")
    request.add_argument("--no-extend-horizon", action="store_true",
                         help="search only what the provider's forecast covers, no estimates")
    request.add_argument("--signal", choices=("average", "average_direct", "marginal"),
                         help="the carbon signal to schedule on (default: the service's first; "
                              "GET /api/v1/zones lists those it serves)")
    common.add_argument("--max-wait", metavar="PT5H",
                        help="wait at most this long in all (e.g. the runner's job limit): the "
                             "latest start asked for is no later, and a 429 is waited out only "
                             "within it")

    top = argparse.ArgumentParser(
        prog="carbon-optimizer", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Ask a carbon-optimizer service when and where a job runs on the cleanest "
                    "electricity; wait for it, then run the job.", epilog=EPILOG)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="action", metavar="{plan,wait}")
    commands.required = True
    plan = commands.add_parser(
        "plan", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG, help="print when and where to run, the saving, and whether estimates were used")
    plan.add_argument("--json", action="store_true", help="print the service's answer as JSON")
    plan.add_argument("--batch", metavar="FILE", help='a JSON request body {"workloads": [...]} '
                      "(one request for a whole CI matrix); - reads stdin")
    plan.add_argument("--save", metavar="FILE",
                      help="write the answer for `wait --from-plan`; if the service is "
                           "unavailable, write a fail-open plan and exit 0")
    wait = commands.add_parser(
        "wait", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG, usage="carbon-optimizer wait [options] -- COMMAND [ARG ...]",
        help="wait for the cleanest start, asking again as forecasts improve, then run a command")
    wait.add_argument("--from-plan", metavar="FILE",
                      help="wait for the workload --id of a plan saved by `plan --save`, "
                           "without asking the service")
    wait.add_argument("--progress-every", default="PT5M", metavar="PT5M",
                      help="off a terminal (a CI log), print the time left this often (default PT5M)")
    wait.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    return top


def main(argv: Optional[List[str]] = None) -> int:
    log = Log()
    args = parser().parse_args(argv)
    try:
        if args.action == "plan":
            return command_plan(args, log)
        return command_wait(args, log)
    except UsageError as exc:
        log.error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.error("interrupted while waiting; the command was not run")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
