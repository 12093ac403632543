"""The SQLAlchemy engine for a ledger database: short waits, so an unreachable database costs the
writer thread seconds, never a request anything (requests do not touch the database)."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import Engine, create_engine, event

from carbon_optimizer.ledger.urls import parse

CONNECT_TIMEOUT_SECONDS = 2
STATEMENT_TIMEOUT_SECONDS = 10.0


def make_engine(url: str, *, statement_timeout: Optional[float] = STATEMENT_TIMEOUT_SECONDS) -> Engine:
    """An engine for `url` (postgresql+psycopg://... or sqlite:///...). `statement_timeout` None:
    no limit (migrations, which may wait on another worker's lock)."""
    parsed = parse(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not the psycopg2 default
    if parsed.get_backend_name() == "postgresql":
        # Appended to any `options` the URL carries (a search_path, say): connect_args replace
        # the URL's own arguments rather than merge them.
        options = parsed.query.get("options", "")
        if statement_timeout is not None:
            options = f"{options} -c statement_timeout={int(statement_timeout * 1000)}".strip()
        args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        if options:
            args["options"] = options
        return create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2,
                             connect_args=args)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, pool_pre_ping=True, connect_args={
            "timeout": statement_timeout or 30.0, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # noqa: ANN001 - the DBAPI's own connection
            # WAL: readers (the report) never wait on the writer; several processes may write.
            cursor = dbapi_connection.cursor()
            if parsed.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
        return engine
    raise ValueError(f"DATABASE_URL: {parsed.get_backend_name()!r} is not supported "
                     "(postgresql+psycopg://... or sqlite:///...)")
