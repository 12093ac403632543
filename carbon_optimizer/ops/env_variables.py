"""Environment variables read outside `Settings` (whose fields describe themselves): the type of
one documented variable, and the list of those gunicorn.conf.py reads. DEPLOYMENT.md's
configuration table is generated from these and from `Settings` (`make docs`); a test checks that
every variable the code reads is listed and that the literal defaults here are gunicorn.conf.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from carbon_optimizer.ops.cpu_budget import MAX_WORKERS


@dataclass(frozen=True)
class EnvVariable:
    """One environment variable as operators read about it."""

    name: str
    # The value used when the variable is unset, as written in the environment; None: unset.
    default: Optional[str]
    description: str
    # When the default is worked out at start-up rather than a fixed value: says how.
    computed_default: str = ""


GUNICORN_VARIABLES: tuple[EnvVariable, ...] = (
    EnvVariable("GUNICORN_BIND", "0.0.0.0:5000", "listen address"),
    EnvVariable("GUNICORN_WORKERS", None,
                "worker processes; usable CPUs are the affinity mask lowered by the cgroup CPU quota "
                "(`--cpus`, a Kubernetes CPU limit, the ECS task CPU), not the host's count; the "
                "start-up log line `N workers (...)` says which applied",
                computed_default=f"2 × usable CPUs + 1, at most {MAX_WORKERS}"),
    EnvVariable("GUNICORN_THREADS", "4", "threads per worker"),
    EnvVariable("GUNICORN_TIMEOUT", "60", "seconds before a silent worker is restarted"),
    EnvVariable("GUNICORN_GRACEFUL_TIMEOUT", "30", "seconds workers get to finish on shutdown"),
    EnvVariable("GUNICORN_KEEPALIVE", "75", "seconds to keep an idle connection (above the ALB's 60)"),
    EnvVariable("GUNICORN_READ_TIMEOUT", "5",
                "seconds a client has to send a complete request head, then as many for its body; "
                "else 408 (JSON) and disconnect ([Slow clients](#slow-clients))"),
    EnvVariable("GUNICORN_WRITE_TIMEOUT", "10",
                "seconds a client has to take a whole response, first byte to last (sendfile "
                "included); else the connection is closed and its thread freed"),
    EnvVariable("GUNICORN_WORKER_CONNECTIONS", "900",
                "connections one worker holds; when full, idle ones are closed oldest first to make "
                "room (keep it under `ulimit -n`)"),
    EnvVariable("GUNICORN_READY_GRACE", "3",
                "seconds a worker's application threads may all stay busy before `/health` answers "
                "503 (not ready); `/health/live` stays 200"),
    EnvVariable("GUNICORN_MAX_REQUESTS", "20000", "requests before a worker is recycled"),
    EnvVariable("GUNICORN_MAX_REQUESTS_JITTER", "2000",
                "random spread of that, so workers do not recycle together"),
    EnvVariable("GUNICORN_MAX_WORKER_RSS_MB", "200",
                "a worker still above this resident size after a request is recycled (0: off; "
                "[Scaling](#scaling))"),
    EnvVariable("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1",
                "proxies whose forwarded headers Gunicorn trusts"),
    EnvVariable("PROMETHEUS_MULTIPROC_DIR", None, "where workers write metrics; emptied at start",
                computed_default="a new temporary folder"),
)
