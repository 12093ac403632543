"""Alembic's environment and the ledger's schema versions (run by ledger/migrate.py)."""
