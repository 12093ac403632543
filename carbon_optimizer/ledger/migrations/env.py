"""Alembic's environment for the ledger: always handed an open connection by ledger/migrate.py
(which holds the lock that lets several workers migrate at once), never a URL from a config file."""

from __future__ import annotations

from alembic import context

from carbon_optimizer.ledger.tables import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
