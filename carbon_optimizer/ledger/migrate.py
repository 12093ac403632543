"""Bring a ledger database's schema up to date: `migrate(url)`, or from a shell

    DATABASE_URL=postgresql+psycopg://user@host/db python -m carbon_optimizer.ledger.migrate

Safe at every start and from several workers or replicas at once: on PostgreSQL the upgrade runs
under a transaction-level advisory lock (DDL is transactional there, so a second worker waits, then
finds the schema current); on SQLite under an exclusive lock on a file beside the database.
Alembic's Config is built here: no alembic.ini is needed at run time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import sys
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from carbon_optimizer.ledger.connect import make_engine
from carbon_optimizer.ledger.urls import parse, scrub, shown

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock's key: any constant the service alone uses ("ledger" in ASCII).
ADVISORY_LOCK_KEY = 0x6C6564676572


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _sqlite_file_lock(database: str | None) -> Iterator[None]:
    if database in (None, "", ":memory:"):
        yield
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision`. Raises what the database raised."""
    parsed = parse(url)
    engine = make_engine(url, statement_timeout=None)
    try:
        if engine.dialect.name == "postgresql":
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": ADVISORY_LOCK_KEY})
                command.upgrade(alembic_config(connection), revision)
                connection.commit()
        else:
            with _sqlite_file_lock(parsed.database), engine.connect() as connection:
                command.upgrade(alembic_config(connection), revision)
                connection.commit()
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from carbon_optimizer.settings import load_settings
    url = load_settings().ledger_database_url
    try:
        migrate(url)
    except Exception as exc:  # noqa: BLE001 - said once, without the password, then exit 1
        log.error("ledger migration of %s failed: %s", shown(url),
                  scrub(f"{type(exc).__name__}: {exc}", url))
        return 1
    log.info("ledger schema of %s is current", shown(url))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
