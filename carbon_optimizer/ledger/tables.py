"""The ledger's tables, in SQLAlchemy Core (no ORM): the same definitions on PostgreSQL and SQLite.

Times are epoch seconds (BigInteger), as in records.py. A plan's intervals are JSON text
(`[[start, end], ...]`): they are read back whole, never queried inside. The columns after
`replan_of` are left empty (status `pending`) when a plan is written; reconciliation fills them
once the measured series for its window is published.

migrations/versions/ holds the DDL that builds these tables; tests/test_ledger_store.py checks that
a migrated database matches this metadata, so a change here needs a new migration.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Column, Float, Index, Integer, MetaData,
                        String, Table, Text)

from carbon_optimizer.ledger.records import MAX_TEXT

# Deterministic constraint and index names: a later migration can name what it alters.
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
})

VERSION_TABLE = "ledger_alembic_version"  # Alembic's, not its default name: the database may be shared
PLAN_ID = 32          # new_plan_id(): 32 hex digits
ZONE = 64             # zone keys and signal/provider names are short
STATUSES = ("pending", "reconciled", "no_data")

plans = Table(
    "plans", metadata,
    Column("plan_id", String(PLAN_ID), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("client", String(MAX_TEXT)),
    Column("workload_id", String(MAX_TEXT)),
    Column("zone", String(ZONE), nullable=False),
    Column("location", String(MAX_TEXT), nullable=False),
    Column("intervals", Text, nullable=False),
    Column("earliest_start", BigInteger, nullable=False),
    Column("latest_end", BigInteger, nullable=False),
    Column("duration", Integer, nullable=False),
    Column("interruptible", Boolean, nullable=False),
    Column("power_kw", Float),
    Column("energy_kwh", Float),
    Column("mean_intensity", Float, nullable=False),
    Column("baseline_zone", String(ZONE)),
    Column("baseline_start", BigInteger),
    Column("baseline_mean_intensity", Float),
    Column("emissions_grams", Float),
    Column("baseline_emissions_grams", Float),
    Column("provider", String(ZONE), nullable=False),
    Column("signal", String(ZONE), nullable=False),
    Column("units", String(ZONE), nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("replan_of", String(PLAN_ID)),
    # Filled by reconciliation.
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("reconciled_at", BigInteger),
    Column("realised_grams", Float),
    Column("realised_mean", Float),
    Column("hindsight_mean", Float),
    Column("hindsight_grams", Float),
    Column("baseline_realised_mean", Float),
    Column("forecast_error", Float),
    CheckConstraint("status IN ('pending', 'reconciled', 'no_data')", name="status"),
    # The report: a client's plans over a period; per zone; a re-ask's chain (one job counts once).
    Index(None, "client", "created_at"),
    Index(None, "zone"),
    Index(None, "replan_of"),
    # Retention deletes by age; reconciliation finds pending plans whose window has ended.
    Index(None, "created_at"),
    Index(None, "status", "latest_end"),
)

# A client's report that a plan's run started. No foreign key to plans: another worker's queue may
# write the report before the plan itself. The first report of a plan is kept.
runs_started = Table(
    "runs_started", metadata,
    Column("plan_id", String(PLAN_ID), primary_key=True),
    Column("client", String(MAX_TEXT)),
    Column("started_at", BigInteger, nullable=False),
    Column("reported_at", BigInteger, nullable=False),
)
