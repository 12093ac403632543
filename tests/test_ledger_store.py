"""The ledger's database: migrations from an empty database (again, and from two processes at
once), batch writes idempotent by plan id, the report's read and retention, on the machine's real
PostgreSQL (a schema of each test's own) and on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from carbon_optimizer.ledger.migrate import migrate
from carbon_optimizer.ledger.records import RunStarted
from carbon_optimizer.ledger.store import ALL_CLIENTS, LedgerStore
from carbon_optimizer.ledger.tables import VERSION_TABLE, metadata, plans
from devkit.paths import ROOT
from tests.support import plan_record


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(ledger_url):
    migrate(ledger_url)
    store = LedgerStore(ledger_url)
    yield store
    store.close()


def count(store: LedgerStore, table=plans) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def test_migrations_build_the_tables_from_an_empty_database_and_run_again_as_no_op(ledger_url):
    migrate(ledger_url)
    store = LedgerStore(ledger_url)
    store.write([plan_record(1)])
    migrate(ledger_url)  # every start runs it: nothing changes, nothing is lost
    try:
        with store.engine.connect() as connection:
            assert connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == ["0001"]
            # The migrated schema is what tables.py says (columns, types, indexes): a change to one
            # without the other fails here.
            differences = compare_metadata(
                MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}), metadata)
            assert differences == []
            indexes = {ix["name"]: ix["column_names"] for ix in inspect(connection).get_indexes("plans")}
        assert indexes["ix_plans_client_created_at"] == ["client", "created_at"]
        assert indexes["ix_plans_zone"] == ["zone"]
        assert indexes["ix_plans_replan_of"] == ["replan_of"]
        assert count(store) == 1
    finally:
        store.close()


def test_the_documented_command_migrates_from_several_processes_at_once(ledger_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": ledger_url, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen([sys.executable, "-m", "carbon_optimizer.ledger.migrate"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(3)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    store = LedgerStore(ledger_url)
    try:
        with store.engine.connect() as connection:
            assert connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == ["0001"]
            assert set(inspect(connection).get_table_names()) >= {"plans", "runs_started"}
    finally:
        store.close()


def test_a_batch_written_twice_is_kept_once_and_reads_back_as_written(store):
    batch = [plan_record(i) for i in range(5)]
    batch[1] = replace(batch[1], client=None, workload_id=None, power_kw=None, energy_kwh=12.5,
                       baseline_zone=None, baseline_start=None, baseline_mean_intensity=None,
                       emissions_grams=None, baseline_emissions_grams=None, estimated=True,
                       interruptible=False, replan_of=batch[0].plan_id)
    store.write(batch)
    # A retried batch (the commit's acknowledgement lost) and one overlapping it.
    store.write(batch)
    store.write(batch[3:] + [plan_record(9)])
    assert count(store) == 6
    back = store.plans(ALL_CLIENTS, 0, 2**40)
    by_id = {record.plan_id: record for record in back}
    for record in batch:
        assert by_id[record.plan_id] == record
    assert by_id[batch[1].plan_id].replan_of == batch[0].plan_id


def test_a_run_report_written_twice_keeps_the_first(store):
    record = plan_record(0)
    store.write([record], [RunStarted(record.plan_id, "ci-pipeline", record.created_at + 3700, 1)])
    store.write([], [RunStarted(record.plan_id, "ci-pipeline", record.created_at + 9999, 2)])
    assert store.started([record.plan_id]) == {
        record.plan_id: RunStarted(record.plan_id, "ci-pipeline", record.created_at + 3700, 1)}


def test_plans_are_read_by_client_and_period(store):
    mine = [plan_record(i, client="team-a") for i in (10, 20, 30)]
    theirs = [plan_record(i, client="team-b") for i in (15, 25)]
    open_api = [plan_record(22, client=None)]
    store.write(mine + theirs + open_api)
    start = mine[0].created_at
    assert [r.plan_id for r in store.plans("team-a", start, start + 20)] == [mine[0].plan_id,
                                                                             mine[1].plan_id]
    assert [r.plan_id for r in store.plans("team-b", 0, 2**40)] == [t.plan_id for t in theirs]
    assert [r.plan_id for r in store.plans(None, 0, 2**40)] == [open_api[0].plan_id]
    # [10, 30): every client's 10, 15, 20, 22 and 25; not 30
    assert len(store.plans(ALL_CLIENTS, start, start + 20)) == 5
    assert store.plans("team-c", 0, 2**40) == []


def test_retention_deletes_only_plans_older_than_the_days_kept(store):
    now = 1_795_000_000 + 30 * 86_400
    old = plan_record(0)                      # 30 days before `now`
    recent = plan_record(20 * 86_400)         # 10 days before
    store.write([old, recent], [RunStarted(old.plan_id, None, old.created_at, old.created_at),
                                RunStarted(recent.plan_id, None, recent.created_at, recent.created_at)])
    assert store.retention(20, now=now) == 1
    assert [r.plan_id for r in store.plans(ALL_CLIENTS, 0, 2**40)] == [recent.plan_id]
    assert list(store.started([old.plan_id, recent.plan_id])) == [recent.plan_id]


def test_text_longer_than_its_column_is_cut_rather_than_failing_the_batch(store):
    record = plan_record(0, location="x" * 500, zone="Z" * 100)
    store.write([record, plan_record(1)])
    back = {r.plan_id: r for r in store.plans(ALL_CLIENTS, 0, 2**40)}
    assert len(back) == 2
    assert back[record.plan_id].location == "x" * 128
    assert back[record.plan_id].zone == "Z" * 64


def test_the_engine_keeps_the_urls_options_and_adds_a_statement_timeout(postgres_url):
    """The test's schema comes as the URL's `options` (search_path); the statement timeout is added
    beside it, not in its place. A plain postgresql:// URL gets psycopg 3."""
    store = LedgerStore(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert store.engine.dialect.driver == "psycopg"
        with store.engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar_one() == "10s"
            schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        assert schema.startswith("ledger_") and schema in postgres_url
    finally:
        store.close()


def test_a_password_in_the_url_is_not_shown(tmp_path):
    url = "postgresql+psycopg://ledger:s3cret-Pa55@127.0.0.1:1/ledger"
    assert "s3cret-Pa55" not in repr(LedgerStore(url))
    run = subprocess.run([sys.executable, "-m", "carbon_optimizer.ledger.migrate"],
                         env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "ledger migration of postgresql+psycopg://ledger:***@127.0.0.1:1/ledger failed" in run.stderr
    assert "s3cret-Pa55" not in run.stdout + run.stderr
