"""The ledger a service runs with, from its settings: `build_ledger(settings)`."""

from __future__ import annotations

import os
from typing import Optional

import redis

from carbon_optimizer.errors import ConfigError
from carbon_optimizer.ledger.records import Ledger, NullLedger
from carbon_optimizer.ledger.spool import FileSpool, RedisSpool, Spool
from carbon_optimizer.ledger.store import LedgerStore
from carbon_optimizer.ledger.writer import LedgerWriter
from carbon_optimizer.settings import Settings

SPOOL_FILE = "ledger-spool.jsonl"


def build_spools(settings: Settings) -> tuple[Spool, Optional[Spool]]:
    """The spool, and the one behind it: Redis when the deployment has one (shared by its workers
    and replicas), with a file in LEDGER_DIR behind it for when Redis fails too; else that file
    alone (shared by the workers of one machine)."""
    local = FileSpool(os.path.join(settings.ledger_dir, SPOOL_FILE), settings.ledger_spool_max)
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0,
                                      socket_connect_timeout=1.0)
        return RedisSpool(client, settings.cache_key_prefix, settings.ledger_spool_max), local
    return local, None


def build_ledger(settings: Settings) -> Ledger:
    """A LedgerWriter on the configured database (migrated by its thread before the first write,
    so a database down at start delays nothing), or NullLedger when LEDGER_ENABLED is false.
    Connects to nothing here."""
    if not settings.ledger_enabled:
        return NullLedger()
    os.makedirs(settings.ledger_dir, exist_ok=True)
    try:
        store = LedgerStore(settings.ledger_database_url)
    except Exception:  # noqa: BLE001 - the parser's message may quote the URL, password and all
        raise ConfigError("invalid configuration: DATABASE_URL is not a URL such as "
                          "postgresql+psycopg://user:password@host:5432/db or sqlite:///path "
                          "(its value is not shown: it may hold a password)") from None
    spool, fallback = build_spools(settings)
    return LedgerWriter(store, spool, fallback=fallback,
                        retention_days=settings.ledger_retention_days)
