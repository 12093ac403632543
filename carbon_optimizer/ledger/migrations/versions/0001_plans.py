"""The plans and runs_started tables (issue 29).

Written out here rather than taken from tables.py: a migration stays what it was when it shipped,
while tables.py moves on with later ones.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("plan_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("client", sa.String(128)),
        sa.Column("workload_id", sa.String(128)),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("location", sa.String(128), nullable=False),
        sa.Column("intervals", sa.Text, nullable=False),
        sa.Column("earliest_start", sa.BigInteger, nullable=False),
        sa.Column("latest_end", sa.BigInteger, nullable=False),
        sa.Column("duration", sa.Integer, nullable=False),
        sa.Column("interruptible", sa.Boolean, nullable=False),
        sa.Column("power_kw", sa.Float),
        sa.Column("energy_kwh", sa.Float),
        sa.Column("mean_intensity", sa.Float, nullable=False),
        sa.Column("baseline_zone", sa.String(64)),
        sa.Column("baseline_start", sa.BigInteger),
        sa.Column("baseline_mean_intensity", sa.Float),
        sa.Column("emissions_grams", sa.Float),
        sa.Column("baseline_emissions_grams", sa.Float),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("units", sa.String(64), nullable=False),
        sa.Column("estimated", sa.Boolean, nullable=False),
        sa.Column("replan_of", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("reconciled_at", sa.BigInteger),
        sa.Column("realised_grams", sa.Float),
        sa.Column("realised_mean", sa.Float),
        sa.Column("hindsight_mean", sa.Float),
        sa.Column("hindsight_grams", sa.Float),
        sa.Column("baseline_realised_mean", sa.Float),
        sa.Column("forecast_error", sa.Float),
        sa.PrimaryKeyConstraint("plan_id", name="pk_plans"),
        sa.CheckConstraint("status IN ('pending', 'reconciled', 'no_data')", name="ck_plans_status"),
    )
    op.create_index("ix_plans_client_created_at", "plans", ["client", "created_at"])
    op.create_index("ix_plans_zone", "plans", ["zone"])
    op.create_index("ix_plans_replan_of", "plans", ["replan_of"])
    op.create_index("ix_plans_created_at", "plans", ["created_at"])
    op.create_index("ix_plans_status_latest_end", "plans", ["status", "latest_end"])
    op.create_table(
        "runs_started",
        sa.Column("plan_id", sa.String(32), nullable=False),
        sa.Column("client", sa.String(128)),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("reported_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("plan_id", name="pk_runs_started"),
    )


def downgrade() -> None:
    op.drop_table("runs_started")
    op.drop_table("plans")
