"""Gunicorn settings for carbon-optimizer: `gunicorn -c gunicorn.conf.py app:app`.

Every value can be overridden from the environment (GUNICORN_*); the defaults suit a small machine
and scale with its cores. The variables read here are listed, with their defaults and meaning, in
carbon_optimizer/ops/env_variables.py (DEPLOYMENT.md's table is generated from it; a test checks the
defaults below against it).
"""

import glob
import os
import shutil
import sys
import tempfile

# The package sits next to this file; Gunicorn reads this file before it puts its directory on the path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from carbon_optimizer.ops.cpu_budget import MAX_WORKERS, cpu_budget  # noqa: E402


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"invalid configuration: {name} must be a whole number, got {value!r}")


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:5000")
# Workers from the CPUs this process may use (affinity, cgroup quota), not the host's count: a
# container limited to 1 CPU on a 32-core host would otherwise start 65 workers. GUNICORN_WORKERS wins.
_budget = cpu_budget()
if os.environ.get("GUNICORN_WORKERS", "").strip():
    workers = _int("GUNICORN_WORKERS", 1)
    _workers_reason = "GUNICORN_WORKERS"
else:
    workers = _budget.workers()
    _workers_reason = f"2 x {_budget.cpus} CPUs + 1, at most {MAX_WORKERS}: {_budget.reason}"
# Threads let a worker keep serving while one request waits on the provider or a fetch lock.
# gthread, with request heads gathered without a thread and every request read under a deadline
# (slow clients cannot hold threads), and Gunicorn's own error answers in the JSON envelope.
worker_class = "carbon_optimizer.ops.gunicorn_worker.ReadTimeoutWorker"
threads = _int("GUNICORN_THREADS", 4)
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Longer than an AWS ALB's default 60 s idle timeout, so the ALB closes idle connections first.
keepalive = _int("GUNICORN_KEEPALIVE", 75)
# Seconds a client has to send a complete request head, then as many for its body; a client that
# does not is answered 408 and disconnected (DEPLOYMENT.md, "Slow clients").
_read_timeout = _int("GUNICORN_READ_TIMEOUT", 5)
if _read_timeout <= 0:
    raise SystemExit("invalid configuration: GUNICORN_READ_TIMEOUT must be at least 1 (seconds)")
# Seconds a client has to take a whole response, from its first byte to its last; one that does
# not (a slow reader) is disconnected and its thread freed. 10 s moves the largest answer (the
# 1.7 MB Swagger bundle) at 1.4 Mbit/s; a balancer in front reads at once (DEPLOYMENT.md).
_write_timeout = _int("GUNICORN_WRITE_TIMEOUT", 10)
if _write_timeout <= 0:
    raise SystemExit("invalid configuration: GUNICORN_WRITE_TIMEOUT must be at least 1 (seconds)")
# Connections one worker holds at once: when the table is full, idle ones (kept alive, or silent
# since they connected) are closed oldest first to make room. Each costs a file descriptor: 900
# plus the worker's own files stays under the common `ulimit -n` of 1,024 (DEPLOYMENT.md).
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", 900)
# Seconds every application thread of a worker may stay busy before /health says it is not ready
# (503), so that a balancer sends its traffic elsewhere; /health/live stays 200.
_ready_grace = _int("GUNICORN_READY_GRACE", 3)
# Recycling guards against slow leaks (none measured: BENCHMARKS.md). At a few thousand requests a
# second, 1,000 per worker meant a new worker every second or two, which halved throughput.
max_requests = _int("GUNICORN_MAX_REQUESTS", 20000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 2000)
proc_name = "carbon-optimizer"
# Gunicorn's control socket (gunicornc) defaults to ~/.gunicorn/gunicorn.ctl: shared by every instance
# on a host and an error under a read-only or missing HOME. Nothing here uses it: off.
control_socket_disable = True
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logger_class = "carbon_optimizer.ops.access_log.JsonAccessLogger"
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# From a peer in forwarded_allow_ips (a sidecar on loopback), Gunicorn would take SCRIPT_NAME and
# PATH_INFO request headers as the WSGI mount point: a prefix the path lacks was a 500, one it has
# moved every route. The service is never mounted under a prefix, so no header may set one (with
# header_map "drop", Gunicorn's default, such headers are then dropped). Scheme headers stay: the
# proxy's X-Forwarded-Proto is read by carbon_optimizer/web/headers.py.
forwarder_headers = ""

# Metrics from every worker go to one directory that any worker's /metrics reads. It must exist
# before a worker imports prometheus_client, so it is settled here, in the master.
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
    prefix="carbon-optimizer-metrics-")
os.makedirs(_metrics_dir, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


# The libraries every worker imports, imported once here so each forked worker starts with them in
# (shared) memory: a new or recycled worker then boots in about 0.1 s of CPU instead of 0.5 s. Imports
# only, after PROMETHEUS_MULTIPROC_DIR is set (prometheus_client reads it on import): the app, its
# connections and its threads are still built in each worker (NumPy's BLAS threads are fork-aware).
import flask  # noqa: E402,F401
import numpy  # noqa: E402,F401
import prometheus_flask_exporter  # noqa: E402,F401
import pydantic  # noqa: E402,F401
import redis  # noqa: E402,F401
import requests  # noqa: E402,F401


def on_starting(server):
    server.log.info("%d workers (%s)", workers, _workers_reason)
    # Counts left from an earlier run would be added to this one's: start from an empty directory.
    for path in glob.glob(os.path.join(_metrics_dir, "*.db")):
        os.remove(path)


def post_fork(server, worker):
    worker.read_timeout = _read_timeout
    worker.write_timeout = _write_timeout
    worker.ready_grace = _ready_grace


# A worker still above this resident size after a request is recycled (it finishes the requests it
# holds, then a fresh one takes its place): requests reserve their memory from a pool of 40 MiB per
# worker and hand it back (ops/memory.py), so only a leak or fragmentation the trim did not undo
# gets here. 0 turns it off. DEPLOYMENT.md, "Scaling".
_max_worker_rss = _int("GUNICORN_MAX_WORKER_RSS_MB", 200) * 2 ** 20


def post_request(worker, req, environ, resp):
    if _max_worker_rss and worker.alive:
        from carbon_optimizer.ops.memory import rss_bytes
        resident = rss_bytes()
        if resident > _max_worker_rss:
            worker.log.warning("worker %s holds %d MiB after a request, over GUNICORN_MAX_WORKER_RSS_MB "
                               "(%d): recycling it", worker.pid, resident // 2 ** 20,
                               _max_worker_rss // 2 ** 20)
            worker.alive = False


def worker_exit(server, worker):
    # In the worker, after its last request (a graceful stop, a recycle): the app's plan ledger
    # writes what it still holds, within a few seconds of the graceful timeout.
    from carbon_optimizer.web.app import close_apps
    try:
        close_apps()
    except Exception:  # noqa: BLE001 - an exit hook that raises would hide the worker's own exit
        worker.log.exception("closing the plan ledger failed")


def child_exit(server, worker):
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics
    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


def on_exit(server):
    # A directory made here for this run is removed with it; one given by the operator is kept.
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
