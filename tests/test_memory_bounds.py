"""What bounds a worker's memory (issue 23): the exact fleet model's size counted before it is
built and only the rows that bind, the answer saying when a capacity plan is not proven optimal,
the per-worker pool a request reserves its estimate from, and the recycling of a worker left big.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import scipy.optimize
import pytest
import requests
from scipy.sparse import csr_matrix

from carbon_optimizer.ops.memory import MemoryPool
from carbon_optimizer.scheduling import fleet, fleet_exact
from carbon_optimizer.scheduling.fleet import exact_size
from carbon_optimizer.scheduling.fleet_model import Capacity, FleetJob
from carbon_optimizer.web.app_state import app_state
from devkit.service_process import GunicornProcess

JOBS = [FleetJob(length=7, earliest=0, latest=11, zones=(0, 2)),
        FleetJob(length=13, earliest=3, latest=5, zones=(1,), power_kw=2.0),
        FleetJob(length=1, earliest=0, latest=30, zones=(0, 1, 2))]


def _built(capacity: Capacity, monkeypatch):
    """The constraint matrix fleet_exact hands HiGHS in its last phase (the larger: two more rows),
    captured, then solved as usual; and the runs it was built over."""
    seen = []
    real = scipy.optimize.LinearConstraint

    def capture(matrix, *args, **kwargs):
        seen.append(matrix)
        return real(matrix, *args, **kwargs)
    monkeypatch.setattr(scipy.optimize, "LinearConstraint", capture)  # solve imports it when called
    intensity = np.ones((3, 40))
    intensity[:, 17:23] = 2.0  # a step, so that its edges anchor starts too
    prefix = np.concatenate((np.zeros((3, 1)), np.cumsum(intensity, axis=1)), axis=1)
    runs = fleet_exact.anchored_starts(intensity, JOBS, [0, 1, 2], capacity)
    assert fleet_exact.solve(prefix, JOBS, [0, 1, 2], runs, capacity, 5.0) is not None
    return seen[-1], runs


@pytest.mark.parametrize("capacity, families, limited_zones", [
    (Capacity(max_concurrent=1), 1, 0),
    (Capacity(max_concurrent=1, zone_concurrent=[None, None, None],
              zone_power_kw=[None, None, None]), 1, 0),  # no zone limited: no per-zone rows
    (Capacity(zone_concurrent=[1, None, None]), 1, 1),
    (Capacity(max_concurrent=2, zone_concurrent=[None, 1, 2], zone_power_kw=[5.0, None, None]), 3, 3),
])
def test_the_exact_model_has_the_nonzeros_counted_before_it_is_built(capacity, families,
                                                                       limited_zones, monkeypatch):
    matrix, runs = _built(capacity, monkeypatch)
    size = fleet_exact.size(runs, JOBS, [0, 1, 2], capacity)
    assert (matrix.nnz, matrix.shape[1]) == (size.nonzeros, size.columns)
    # Rows by hand: one per job; one per step of a (job, zone)'s starts (its running count never
    # falls); a limit's row at each unit where a run it reaches starts, in the zones it limits
    # only; phase 2's two (count and energy placed).
    pairs = {(int(j), int(z)) for j, z in zip(runs.job, runs.zone)}
    limit_rows = 0
    if capacity.max_concurrent is not None:
        limit_rows += len(set(runs.start.tolist()))
    for caps in (capacity.zone_concurrent, capacity.zone_power_kw):
        for zone, cap in enumerate(caps or []):
            if cap is not None:
                limit_rows += len(set(runs.start[runs.zone == zone].tolist()))
    assert matrix.shape[0] == len(JOBS) + len(runs.job) - len(pairs) + limit_rows + 2
    # Fewer than every start: the anchored ones (window edges, the step's edges, chains).
    every = sum(len(j.zones) * (j.latest - j.earliest + 1) for j in JOBS)
    assert len(runs.job) < every
    # cost.py's count from the jobs alone is an upper bound of the built model.
    bound = exact_size(JOBS, [0, 1, 2], capacity, 3)
    assert matrix.nnz <= bound.nonzeros and size.columns <= bound.columns
    assert bound.nonzeros <= 2 * (every + len(JOBS)) + families * sum(
        len(j.zones) * (j.latest - j.earliest + 1) * j.length for j in JOBS)


def test_a_capacity_batch_too_large_for_the_exact_model_says_its_plan_is_not_proven(make_app, monkeypatch):
    """Issue 23, point 1's form (once 3.8 GB): ten 4,001-minute workloads now make a small exact
    model (their anchored starts only) and are proven optimal; eleven are more than the batch
    solved exactly: the heuristic plan, and the answer says why and its gap to a lower bound."""
    # The size caps decide here, not the clock: a generous solving deadline, so that a loaded
    # machine cannot turn "proven" into "out of time".
    monkeypatch.setattr(fleet, "EXACT_SECONDS", 30.0)
    client = make_app({"SOLVE_TIMEOUT_SECONDS": "30"}).test_client()
    workload = {"duration": 4001, "zones": ["DE"], "max_delay": "PT5H", "power_kw": 1}
    ten = client.post("/api/v1/optimize", json={"workloads": [workload] * 10,
                                                "capacity": {"max_concurrent": 1}}).get_json()
    assert ten["summary"]["scheduled"] == 1  # one 4,001-minute run fits in a 5-hour window at once
    assert ten["capacity_plan"] == {"proven_optimal": True}
    big = client.post("/api/v1/optimize", json={"workloads": [workload] * (fleet.SMALL_BATCH + 1),
                                                "capacity": {"max_concurrent": 1}})
    assert big.status_code == 200
    body = big.get_json()
    assert body["summary"]["scheduled"] == 1
    plan = body["capacity_plan"]
    assert plan["proven_optimal"] is False and "solved exactly" in plan["note"]
    assert 0 <= plan["optimality_gap"] < 1
    small = client.post("/api/v1/optimize", json={
        "workloads": [{"duration": 61, "zones": ["DE", "FR"], "max_delay": "PT2H"},
                      {"duration": 121, "zones": ["DE"], "max_delay": "PT2H", "power_kw": 2}],
        "capacity": {"max_concurrent": 1}})
    assert small.get_json()["capacity_plan"] == {"proven_optimal": True}
    plain = client.post("/api/v1/optimize", json={"workloads": [{"duration": 61, "zones": ["DE"]}]})
    assert "capacity_plan" not in plain.get_json()


def test_the_openapi_document_shows_the_capacity_plan(client):
    document = client.get("/api/v1/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    assert "capacity_plan" in schemas["BatchResponse"]["properties"]
    assert "proven_optimal" in str(schemas)


def test_a_request_that_cannot_have_its_memory_share_is_answered_busy(make_app):
    """The worker's pool is held (by a request of another thread): this one waits, then gets 503
    with Retry-After; once the share is back, the same request is answered."""
    app = make_app()
    engine = app_state(app).engine
    engine.memory_pool = pool = MemoryPool(8 * 2 ** 20, wait_seconds=0.2)
    body = {"duration": 1441, "zones": ["DE"], "interruptible": True, "min_chunk": 60,
            "max_chunks": 4, "max_delay": "PT9H"}  # an exact chunk search of ~8 MiB
    held, release = threading.Event(), threading.Event()

    def other_request():
        with pool.reserve(pool.capacity):
            held.set()
            release.wait(10)
    thread = threading.Thread(target=other_request)
    thread.start()
    try:
        assert held.wait(5)
        busy = app.test_client().post("/api/v1/optimize", json=body)
    finally:
        release.set()
        thread.join()
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
    assert busy.get_json()["error"]["code"] == "service_unavailable"
    assert "MiB" in busy.get_json()["error"]["message"]
    assert pool.free == pool.capacity
    answered = app.test_client().post("/api/v1/optimize", json=body)
    assert answered.status_code == 200 and len(answered.get_json()["chunks"]) >= 1
    assert pool.free == pool.capacity  # handed back


def test_the_pool_lends_what_it_has_and_takes_it_back():
    pool = MemoryPool(10, wait_seconds=0.0)
    with pool.reserve(6):
        with pool.reserve(4):
            assert pool.free == 0
            with pytest.raises(Exception) as refused, pool.reserve(1):
                pass
            assert refused.value.code.status == 503
        assert pool.free == 4
    assert pool.free == 10


@pytest.mark.slow
def test_a_worker_left_above_the_resident_ceiling_is_recycled(tmp_path):
    """GUNICORN_MAX_WORKER_RSS_MB below any worker's size: the worker that served a request is
    replaced, and the service keeps answering."""
    env = {"GUNICORN_MAX_WORKER_RSS_MB": "1", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m")}
    with GunicornProcess(env, workers=1, threads=2, log_path=tmp_path / "g.log") as service:
        first = service.worker_pids()
        answer = requests.post(f"{service.url}/api/v1/optimize", json={"duration": 60}, timeout=30)
        assert answer.status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and service.worker_pids() in ([], first):
            time.sleep(0.1)
        assert service.worker_pids() and service.worker_pids() != first
        assert requests.get(f"{service.url}/health", timeout=10).status_code == 200
    assert "recycling it" in (tmp_path / "g.log").read_text()
