"""The service's own Prometheus metrics (request metrics come from prometheus-flask-exporter).

prometheus_client writes these to PROMETHEUS_MULTIPROC_DIR when it is set (gunicorn.conf.py sets it
before any worker imports this), so one scrape of any worker sees every worker's counts.
"""

import functools

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

UPSTREAM_CALLS = Counter(
    "carbon_upstream_calls_total", "Calls to the carbon-intensity provider, by endpoint and outcome",
    ["provider", "endpoint", "outcome"])
UPSTREAM_LATENCY = Histogram(
    "carbon_upstream_call_seconds", "Latency of calls to the carbon-intensity provider",
    ["provider", "endpoint"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
CACHE_EVENTS = Counter(
    "carbon_forecast_cache_total",
    "Forecast cache lookups by result (hit, miss, stale) and backend (redis; memory, the in-process "
    "store; process, a worker's own decoded copy of a fresh entry)",
    ["result", "backend"])
STALE_SERVES = Counter(
    "carbon_stale_forecasts_served_total", "Forecasts served past their TTL because the provider failed",
    ["zone"])
REDIS_UP = Gauge(
    "carbon_redis_up", "1 while Redis answers, 0 while the in-process fallback is in use",
    multiprocess_mode="livemin")
GRAMS_AVOIDED = Counter(
    "carbon_grams_co2eq_avoided_total",
    "Grams CO2eq avoided by returned schedules against starting now in the first zone")
WORKLOADS_SCHEDULED = Counter(
    "carbon_workloads_total", "Workloads answered, by outcome", ["outcome"])
REQUESTS_ABANDONED = Counter(
    "carbon_requests_abandoned_total",
    "Requests whose client went away before the answer; their work stopped at its next check")

SECRET_REFRESHES = Counter(
    "carbon_secret_refreshes_total",
    "Loads of the secret store (start-up and interval refreshes), by backend and outcome (ok, error)",
    ["backend", "outcome"])
RATE_LIMITED = Counter(
    "carbon_rate_limited_total", "Requests refused with 429 by the rate limiter")
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "carbon_rate_limit_storage_errors_total",
    "Rate-limit storage (Redis) errors; the request was then checked against the in-process "
    "fallback, or served without that check (fail open)")
AUTH_FAILURES = Counter(
    "carbon_auth_failures_total", "Requests refused for a missing or wrong credential, by area",
    ["area"])

LEDGER_DROPPED = Counter(
    "carbon_ledger_records_dropped_total",
    "Ledger records (plans, run reports) not kept, by reason: queue_full (the worker's queue), "
    "spool_full (LEDGER_SPOOL_MAX reached while the database was unreachable), spool_error (the "
    "spool itself failed), rejected (the database refused the record itself)",
    ["reason"])
LEDGER_QUEUED = Gauge(
    "carbon_ledger_queued_records", "Ledger records waiting in the workers' queues to be written",
    multiprocess_mode="livesum")
LEDGER_SPOOLED = Gauge(
    "carbon_ledger_spooled_records",
    "Ledger records waiting in the spool (Redis or the file) for the database to return; the spool "
    "is shared, so workers report the same count", multiprocess_mode="livemax")


def observe_upstream(provider: str):
    """An observer for a provider client: counts each call and its latency."""
    def observe(endpoint: str, outcome: str, seconds: float) -> None:
        UPSTREAM_CALLS.labels(provider, endpoint, outcome).inc()
        UPSTREAM_LATENCY.labels(provider, endpoint).observe(seconds)
    return observe


@functools.cache
def labelled(metric, *values: str):
    """`metric.labels(*values)`, looked up once: labels() validates and locks on every call, and
    the request path counts the same few series on every request. Nothing here removes a series,
    so a child once made stays the one the registry exports."""
    return metric.labels(*values)


# Every metric defined above, in order, for an app's own registry (web/app.py): gathered here, so
# that a metric is named once, where it is defined, and a new one is exported without a second list.
SERVICE_METRICS: tuple[MetricWrapperBase, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, MetricWrapperBase))
