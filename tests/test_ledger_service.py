"""The ledger in the running service: Gunicorn with two workers writing one PostgreSQL schema of
the test's own (or the default SQLite file), every scheduled workload's plan recorded exactly once
with the plan_id its answer carried, a reported start kept, and a graceful stop draining what the
workers held."""

from __future__ import annotations

import concurrent.futures
import json

import pytest
import requests
import sqlalchemy as sa

from devkit.service_process import GunicornProcess

pytestmark = pytest.mark.slow


def _ask(url: str, index: int) -> list[str]:
    body = {"workloads": [{"id": f"job-{index}-{k}", "duration": 37 + k, "zones": ["DE", "FR"],
                           "max_delay": "PT9H", "power_kw": 1.5} for k in range(3)]}
    answer = requests.post(f"{url}/api/v1/optimize", json=body, timeout=30)
    answer.raise_for_status()
    return [r["plan_id"] for r in answer.json()["results"]]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_two_workers_record_every_plan_once_and_a_stop_drains_them(backend, postgres_url, tmp_path):
    url = postgres_url if backend == "postgresql" else f"sqlite:///{tmp_path}/ledger.db"
    env = {"CARBON_PROVIDER": "demo", "DATABASE_URL": url, "GUNICORN_WORKERS": "2"}
    with GunicornProcess(env, workers=2, threads=4) as service:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            plan_ids = [p for ids in pool.map(lambda i: _ask(service.url, i), range(40)) for p in ids]
        started = requests.post(f"{service.url}/api/v1/plans/{plan_ids[0]}/started", json={}, timeout=10)
        assert started.status_code == 202
        health = requests.get(f"{service.url}/health", timeout=10).json()
        assert health["checks"]["ledger"]["status"] in ("ok", "degraded")
        assert "password" not in json.dumps(health["checks"]["ledger"]).lower()
    # The service stopped gracefully: each worker's writer drained what it held.
    assert len(plan_ids) == 120 and len(set(plan_ids)) == 120
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT plan_id, workload_id, zone, signal FROM plans")).all()
            runs = connection.execute(sa.text("SELECT plan_id FROM runs_started")).all()
    finally:
        engine.dispose()
    assert sorted(r.plan_id for r in rows) == sorted(plan_ids)
    assert {r.workload_id for r in rows} == {f"job-{i}-{k}" for i in range(40) for k in range(3)}
    assert {r.signal for r in rows} == {"average"} and {r.zone for r in rows} <= {"DE", "FR"}
    assert [r.plan_id for r in runs] == [plan_ids[0]]
