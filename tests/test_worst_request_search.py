"""The search for the worst request: every knob the documented limits allow, each request sent
through the app in-process (the demo provider, as tests/conftest.py builds it), and the cost
model's estimate (cost.estimate, the one the engine checks and reserves memory by) must bound
what the request really took: its peak memory (tracemalloc, and the process's resident peak) and
its CPU time. A request the model underestimates fails here.

Hypothesis steers (`target`) toward the shapes where measured cost is largest against the
estimate, and the costliest it found are kept below as `@example`s, replayed on every run with the
hand-picked worst cases of issue 23.
"""

from __future__ import annotations

import gc
import json
import os
import time
import tracemalloc
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st, target

from carbon_optimizer.data.providers.demo import DemoProvider
from carbon_optimizer.ops import memory
from carbon_optimizer.scheduling import cost
from carbon_optimizer.errors import TooLarge
from carbon_optimizer.scheduling.budget import Budget, RequestCost
from carbon_optimizer.settings import load_settings
from carbon_optimizer.web import request_models
from carbon_optimizer.web.app_state import app_state
from tests.conftest import FIXED_NOW

# The documented limits (web/request_models.py, settings.py), read where they are defined.
MAX_DURATION_MIN = int(request_models.MAX_DURATION / timedelta(minutes=1))
MAX_WINDOW_MIN = int(request_models.MAX_WINDOW / timedelta(minutes=1))
MAX_ZONES = request_models.Workload.model_fields["zones"].metadata[1].max_length
MAX_BATCH = load_settings({}).max_batch_size
ZONES = DemoProvider().zones()  # known zones only: unknown names are another test's concern

# How far the measured cost may go past the estimate. Memory: none for tracemalloc (it counts
# exactly what Python and NumPy allocate); the resident peak also holds what allocators keep
# around and other threads' stacks, so a few MiB. CPU (measured without tracemalloc): a loaded
# machine adds cache misses, so three times the estimate and a quarter second; an underestimate
# of the kind issue 23 found (seconds against milliseconds) is far beyond that.
RSS_SLACK = 6 * 2 ** 20
CPU_TIMES, CPU_PLUS = 3.0, 0.25


def _rss_status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident size


@pytest.fixture(scope="module")
def service():
    """One app for the whole search (the demo's series cache warm, SciPy imported: one-time costs
    of a worker, not of a request), and the estimate each request got."""
    from carbon_optimizer.secret_store import SecretStore
    from carbon_optimizer.web.app import create_app
    env = {"RATE_LIMIT_ENABLED": "false"}
    app = create_app(settings=load_settings(env), secret_store=SecretStore(env),
                     clock=lambda: FIXED_NOW)
    client = app.test_client()
    estimates = []
    real = cost.estimate

    def spy(jobs, zones, *args, **kwargs):  # the real estimate, recorded
        try:
            found = real(jobs, zones, *args, **kwargs)
        except TooLarge:  # refused: what the request held and took up to the refusal
            edges = cost.edge_cost(jobs).beside(cost.series_cost(jobs, zones))
            estimates.append(RequestCost(work=0, edge_work=edges.work, memory=edges.memory))
            raise
        estimates.append(found)
        return found
    cost.estimate = spy
    try:
        for warm in ({"workloads": [{"duration": 61, "zones": ZONES[:3], "max_delay": "PT2H"}] * 3,
                      "capacity": {"max_concurrent": 1}},
                     {"duration": 241, "zones": ZONES, "interruptible": True, "min_chunk": 60,
                      "max_chunks": 3, "max_delay": "P2D"},
                     {"workloads": [{"duration": 60, "zones": ZONES[:50], "max_delay": "P30D"}] * 10}):
            client.post("/api/v1/optimize", json=warm)
        yield client, estimates
    finally:
        cost.estimate = real
        app_state(app).engine.close()


def _iso_minutes(minutes: int) -> str:
    return f"PT{minutes}M"


@st.composite
def workloads(draw, zones_max: int = MAX_ZONES):
    """One workload over the knobs a client has: durations in odd minutes up to 7 days, windows
    given as max_delay, deadline or latest_start (at arbitrary seconds) up to 31 days, 1..50 zones,
    interruptible with min_chunk and max_chunks, power."""
    duration = draw(st.one_of(st.integers(1, 600), st.integers(1, MAX_DURATION_MIN)))
    body: dict = {"duration": duration if draw(st.booleans()) else _iso_minutes(duration)}
    count = draw(st.one_of(st.integers(1, 4), st.integers(1, zones_max)))
    body["zones"] = draw(st.lists(st.sampled_from(ZONES), min_size=count, max_size=count, unique=True))
    offset = draw(st.integers(0, 3 * 86_400))  # earliest start, seconds after now (any second)
    slack = draw(st.one_of(st.integers(0, 600), st.integers(0, MAX_WINDOW_MIN)))
    how = draw(st.sampled_from(["max_delay", "deadline", "latest_start", "default"]))
    if offset and how != "default":
        body["earliest_start"] = (FIXED_NOW + timedelta(seconds=offset)).isoformat()
    earliest = FIXED_NOW + timedelta(seconds=offset)
    if how == "max_delay":
        body["max_delay"] = _iso_minutes(slack)
    elif how == "deadline":
        body["deadline"] = (earliest + timedelta(minutes=duration + slack, seconds=draw(
            st.integers(0, 59)))).isoformat()
    elif how == "latest_start":
        body["latest_start"] = (earliest + timedelta(minutes=slack, seconds=draw(
            st.integers(0, 59)))).isoformat()
    if draw(st.booleans()):
        body["interruptible"] = True
        if draw(st.booleans()):
            body["min_chunk"] = draw(st.one_of(st.integers(1, max(1, duration // 2)),
                                               st.integers(1, duration)))
        if draw(st.booleans()):
            body["max_chunks"] = draw(st.one_of(st.integers(1, 6), st.integers(1, 1000)))
    if draw(st.booleans()):
        body["power_kw"] = draw(st.floats(0.1, 500))
    return body


@st.composite
def requests(draw):
    """A single workload, a batch (1..MAX_BATCH), or a batch under capacity (global or per-zone
    concurrency, per-zone power)."""
    kind = draw(st.sampled_from(["single", "batch", "capacity"]))
    if kind == "single":
        return draw(workloads())
    size = draw(st.one_of(st.integers(1, 8), st.integers(1, 60), st.integers(1, MAX_BATCH)))
    # A batch repeats a few shapes (as clients send them): drawing 500 distinct ones costs the
    # search more than the request.
    shapes = draw(st.lists(workloads(), min_size=1, max_size=3))
    body: dict = {"workloads": [shapes[i % len(shapes)] for i in range(size)]}
    if kind == "capacity":
        named = sorted({z for w in shapes for z in w["zones"]})
        limit = draw(st.sampled_from(["global", "per_zone", "power"]))
        if limit == "global":
            body["capacity"] = {"max_concurrent": draw(st.integers(1, 20))}
        elif limit == "per_zone":
            body["capacity"] = {"max_concurrent": {z: draw(st.integers(0, 5)) for z in named[:8]}}
        else:
            body["capacity"] = {"max_power_kw": {z: draw(st.floats(1, 1000)) for z in named[:8]}}
    return body


def _measure(client, estimates: list, body: dict):
    """(answer, estimate or None, CPU s, tracemalloc peak, resident peak above the start). The
    request is sent twice: under tracemalloc for its peak, then without it (tracemalloc slows
    Python code three to six times) for its CPU time and resident peak; the first send also
    pays what the second finds cached (the demo's series), so each measure is the larger."""
    estimates.clear()
    gc.collect()
    tracemalloc.start()
    answer = client.post("/api/v1/optimize", json=body)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    estimate = estimates[0] if estimates else None
    gc.collect()
    memory.trim()
    _reset_peak_rss()
    resident = _rss_status("VmRSS")
    cpu = time.thread_time()
    again = client.post("/api/v1/optimize", json=body)
    cpu = time.thread_time() - cpu
    grown = _rss_status("VmHWM") - resident
    assert again.status_code == answer.status_code or 503 in (answer.status_code, again.status_code)
    return answer, estimate, cpu, peak, grown


ISSUE_23_POINT_1 = {"workloads": [{"duration": 4001, "zones": ["DE", "FR", "GB", "PL", "SE", "NO",
                                                                 "NL", "IE", "ES", "PT"],
                                   "max_delay": "PT5H", "power_kw": 1}],
                    "capacity": {"max_concurrent": 1}}


@pytest.mark.slow  # not a process, but ~30 s: kept out of `make test-fast`'s edit loop
@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(body=requests())
# Issue 23, point 1: 157 bytes, 18-40 s and ~4 GB (one zone: 2.3 s / 514 MiB; ten workloads of
# one zone: 14 s / 3.8 GB).
@example(body=ISSUE_23_POINT_1)
@example(body={"workloads": [{"duration": 4001, "zones": ["DE"], "max_delay": "PT5H",
                              "power_kw": 1}] * 10, "capacity": {"max_concurrent": 1}})
# Issue 23, point 7: the chunk DP's ring (94 MB a search, not in the cap).
@example(body={"duration": 3899, "zones": ["DE", "FR", "GB", "PL"], "interruptible": True,
               "min_chunk": 1949, "max_delay": "PT3H"})
@example(body={"duration": 3899, "zones": ["DE", "FR", "GB", "PL"], "interruptible": True,
               "min_chunk": 1949, "max_delay": "PT1H"})
# The costliest requests issue 11 found (bench/worst_requests.py).
@example(body={"workloads": [{"duration": 61, "zones": ZONES[:50], "max_delay": "PT71H"}] * 40,
               "capacity": {"max_concurrent": 1}})
@example(body={"duration": 271, "zones": ZONES[:50], "interruptible": True, "min_chunk": 2,
               "max_chunks": 3, "max_delay": "P17D"})
# Found by the search (targeted): the highest measured/estimated memory, 0.78 (an interruptible
# run over 18 zones in a default window, max_chunks 6).
@example(body={"duration": "PT265M", "zones": ["IL", "PT", "US-MIDW-MISO", "ES", "JP-TK",
                                                "US-TEX-ERCO", "NO-NO1", "ID", "US-NW-NEVP", "NL",
                                                "IN-WE", "AU-NSW", "DK-DK2", "QA", "HK", "AU-VIC",
                                                "DK-DK1", "US-SW-AZPS"],
               "interruptible": True, "max_chunks": 6, "power_kw": 138.94689632927256})
# About the largest exact chunk search the memory cap allows (31 MiB of tables and ring).
@example(body={"duration": 1441, "zones": ["DE", "FR", "GB", "PL"], "interruptible": True,
               "min_chunk": 60, "max_chunks": 4, "max_delay": "PT9H"})
def test_the_cost_model_bounds_every_request_the_limits_allow(service, body):
    client, estimates = service
    answer, estimate, cpu, peak, grown = _measure(client, estimates, body)
    assert answer.status_code != 500 and answer.is_json, answer.get_data()[:300]
    if answer.status_code >= 400:
        error = answer.get_json()["error"]
        assert error["code"] and error["message"]
        if answer.status_code == 503:
            assert int(answer.headers["Retry-After"]) >= 1
    if estimate is None:  # refused while parsing: no solving, nothing estimated
        return
    seconds = estimate.seconds(Budget())
    # Steered by the one measure that repeats exactly (tracemalloc's peak): a target on CPU time or
    # resident size climbs on noise, and Hypothesis's optimiser then ran for minutes in CI.
    target(peak / estimate.memory, label="tracemalloc peak / estimate")
    shape = (f"{answer.status_code}: estimated {estimate.memory / 2 ** 20:.1f} MiB, "
             f"{seconds:.3f} s; measured tracemalloc {peak / 2 ** 20:.1f} MiB, resident "
             f"+{grown / 2 ** 20:.1f} MiB, CPU {cpu:.3f} s")
    if os.environ.get("WORST_REQUEST_LOG"):
        with open(os.environ["WORST_REQUEST_LOG"], "a") as log:
            log.write(f"{peak / estimate.memory:.2f} {grown / estimate.memory:.2f} "
                      f"{cpu / (seconds + 0.05):.2f} | {shape} | {json.dumps(body)}\n")
    assert peak <= estimate.memory, shape
    assert grown <= estimate.memory + RSS_SLACK, shape
    assert cpu <= CPU_TIMES * seconds + CPU_PLUS, shape
