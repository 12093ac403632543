"""What an app holds for its requests, in one object under `app.extensions`: its settings, secret
store, engine, plan ledger, OpenAPI document, clock and error writer, and the rate limiting `limits.init_app` sets up. Read
through `app_state()`, typed; the tests build many apps, each with its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Optional, Protocol

from flask import Flask, current_app
from flask_limiter import Limiter

from carbon_optimizer.engine import CarbonEngine
from carbon_optimizer.errors import ErrorWriter
from carbon_optimizer.ledger.records import Ledger, NullLedger
from carbon_optimizer.secret_store import BaseSecretStore
from carbon_optimizer.settings import Settings

EXTENSION = "carbon_optimizer"


class TokenFailures(Protocol):
    """Wrong /metrics tokens counted per client address (limits.py keeps them, auth.py asks)."""

    def refused_for(self, address: str) -> Optional[int]: ...

    def failed(self, address: str) -> None: ...


@dataclass(frozen=True)
class RateLimiting:
    limiter: Optional[Limiter]  # None: RATE_LIMIT_ENABLED=false
    metrics_token_failures: TokenFailures


@dataclass
class AppState:
    settings: Settings
    secrets: BaseSecretStore
    engine: CarbonEngine
    openapi: dict
    clock: Callable[[], datetime]
    errors: ErrorWriter  # with the configured upstream back-off, for every error answer
    ledger: Ledger = field(default_factory=NullLedger)  # where each answer's plans are handed
    # Set by limits.init_app; None before it, and a limited view then refuses to run.
    rate_limiting: Optional[RateLimiting] = None


def app_state(app: Optional[Flask] = None) -> AppState:
    """The state of `app`, by default the app serving the current request."""
    return (app or current_app).extensions[EXTENSION]
