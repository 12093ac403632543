"""The ledger database: plans and run reports written in batches, idempotently by plan id, and read
back for the report.

One transaction per batch. A batch written twice (a retry after a lost commit acknowledgement, a
spool replayed by two workers) inserts nothing the second time: ON CONFLICT DO NOTHING on
PostgreSQL, INSERT OR IGNORE (its ON CONFLICT form) on SQLite.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from typing import Optional, Sequence, Union

from sqlalchemy import Engine, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from carbon_optimizer.ledger.connect import make_engine
from carbon_optimizer.ledger.records import PlanRecord, RunStarted
from carbon_optimizer.ledger.tables import plans, runs_started
from carbon_optimizer.ledger.urls import shown


class _AllClients:
    def __repr__(self) -> str:
        return "ALL_CLIENTS"


# plans(ALL_CLIENTS, ...): every client's plans (the admin's report); plans(None, ...) are the plans
# made without an API key.
ALL_CLIENTS = _AllClients()

_PLAN_FIELDS = tuple(f.name for f in fields(PlanRecord))


def _fit(table: Table, row: dict) -> dict:
    """Strings cut to their column's length: one over-long value must not fail the whole batch (it
    would go to the spool and fail there for ever). records.py bounds free text already."""
    for name, value in row.items():
        if isinstance(value, str):
            length = getattr(table.c[name].type, "length", None)
            if length is not None and len(value) > length:
                row[name] = value[:length]
    return row


def plan_row(record: PlanRecord) -> dict:
    row = {name: getattr(record, name) for name in _PLAN_FIELDS}
    row["intervals"] = json.dumps([[int(a), int(b)] for a, b in record.intervals],
                                  separators=(",", ":"))
    return _fit(plans, row)


def plan_from_row(row) -> PlanRecord:  # noqa: ANN001 - a SQLAlchemy Row
    values = {name: getattr(row, name) for name in _PLAN_FIELDS}
    values["intervals"] = tuple((a, b) for a, b in json.loads(values["intervals"]))
    values["interruptible"] = bool(values["interruptible"])
    values["estimated"] = bool(values["estimated"])
    return PlanRecord(**values)


def started_row(report: RunStarted) -> dict:
    return _fit(runs_started, {"plan_id": report.plan_id, "client": report.client,
                               "started_at": report.started_at, "reported_at": report.reported_at})


class LedgerStore:
    """The ledger's database at `url`. Creating one does not connect."""

    def __init__(self, url: str, *, statement_timeout: float = 10.0) -> None:
        self.url = url
        self.engine: Engine = make_engine(url, statement_timeout=statement_timeout)
        self._insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert

    def __repr__(self) -> str:
        return f"LedgerStore({shown(self.url)!r})"

    def migrate(self) -> None:
        # Alembic is imported when first needed (the writer's thread), not by every worker's start.
        from carbon_optimizer.ledger.migrate import migrate
        migrate(self.url)

    def write(self, records: Sequence[PlanRecord], started: Sequence[RunStarted] = ()) -> None:
        """Write plans and run reports in one transaction; rows already there are left as they are."""
        if not records and not started:
            return
        with self.engine.begin() as connection:
            if records:
                connection.execute(self._insert(plans).on_conflict_do_nothing(),
                                   [plan_row(r) for r in records])
            if started:
                connection.execute(self._insert(runs_started).on_conflict_do_nothing(),
                                   [started_row(r) for r in started])

    def retention(self, days: int, now: Optional[float] = None) -> int:
        """Delete plans made more than `days` days ago, and run reports of that age. Returns the
        number of plans deleted."""
        cutoff = int((time.time() if now is None else now) - days * 86_400)
        with self.engine.begin() as connection:
            deleted = connection.execute(delete(plans).where(plans.c.created_at < cutoff)).rowcount
            connection.execute(delete(runs_started).where(runs_started.c.started_at < cutoff))
        return deleted

    def plans(self, client: Union[Optional[str], _AllClients], since: int, until: int) -> list[PlanRecord]:
        """Plans made in [since, until) by `client` (None: without an API key; ALL_CLIENTS: any),
        oldest first."""
        query = select(plans).where(plans.c.created_at >= since, plans.c.created_at < until)
        if client is None:
            query = query.where(plans.c.client.is_(None))
        elif not isinstance(client, _AllClients):
            query = query.where(plans.c.client == client)
        query = query.order_by(plans.c.created_at, plans.c.plan_id)
        with self.engine.connect() as connection:
            return [plan_from_row(row) for row in connection.execute(query)]

    def started(self, plan_ids: Sequence[str]) -> dict[str, RunStarted]:
        """The run reports of these plans, by plan id."""
        if not plan_ids:
            return {}
        query = select(runs_started).where(runs_started.c.plan_id.in_(list(plan_ids)))
        with self.engine.connect() as connection:
            return {row.plan_id: RunStarted(row.plan_id, row.client, row.started_at, row.reported_at)
                    for row in connection.execute(query)}

    def close(self) -> None:
        self.engine.dispose()
