"""The app factory: create_app() wires settings, secrets, the engine, routes, auth, limits, headers,
the error envelope and metrics into one Flask app; wsgi_app() is what `app:app` serves.

Run with `gunicorn -c gunicorn.conf.py app:app`; tests call `create_app(...)` directly.
"""

from __future__ import annotations

import logging
import os
import weakref
from datetime import datetime, timezone
from typing import Callable, Optional

from flask import Flask

from carbon_optimizer import VERSION
from carbon_optimizer.engine import build_engine
from carbon_optimizer.errors import ConfigError, ErrorWriter
from carbon_optimizer.ledger.factory import build_ledger
from carbon_optimizer.ledger.records import Ledger
from carbon_optimizer.ops import metrics
from carbon_optimizer.ops.log_format import configure_logging
from carbon_optimizer.secret_store import BaseSecretStore, build_secret_store
from carbon_optimizer.settings import Settings, load_settings
from carbon_optimizer.web import auth, headers, limits, openapi
from carbon_optimizer.web.app_state import EXTENSION, AppState
from carbon_optimizer.web.casdk_routes import casdk
from carbon_optimizer.web.pages import pages
from carbon_optimizer.web.errors import register_error_handlers
from carbon_optimizer.web.routes import api, ops

log = logging.getLogger(__name__)


def _wire_metrics(app: Flask) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics
        exporter = GunicornInternalPrometheusMetrics(app, group_by="endpoint")
    else:
        from prometheus_client import CollectorRegistry
        from prometheus_flask_exporter import PrometheusMetrics
        registry = CollectorRegistry()  # one per app, so tests can build many apps
        for metric in metrics.SERVICE_METRICS:
            registry.register(metric)
        exporter = PrometheusMetrics(app, registry=registry, group_by="endpoint")
    exporter.info("carbon_optimizer_info", "Service version", version=VERSION)


def create_app(settings: Optional[Settings] = None, *,
               secret_store: Optional[BaseSecretStore] = None,
               clock: Optional[Callable[[], datetime]] = None,
               ledger: Optional[Ledger] = None) -> Flask:
    """`ledger`: where each answer's plans and each reported start go (tests pass a recording
    one); by default the one configuration asks for (LEDGER_ENABLED, DATABASE_URL)."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    secret_store = secret_store or build_secret_store(settings)
    engine = build_engine(settings, secret_store)
    ledger = ledger or build_ledger(settings)

    app = Flask(__name__, static_folder=None)  # pages.py serves the static files, with cache headers
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False
    app.extensions[EXTENSION] = AppState(
        settings=settings, secrets=secret_store, engine=engine,
        openapi=openapi.build_document(VERSION, settings.max_batch_size),
        clock=clock or (lambda: datetime.now(timezone.utc)),
        errors=ErrorWriter(settings.upstream_failure_backoff_seconds), ledger=ledger)

    register_error_handlers(app)
    app.register_blueprint(api)
    app.register_blueprint(ops)
    app.register_blueprint(casdk)  # the Carbon Aware SDK's WebAPI, at its own paths
    app.register_blueprint(pages)
    _wire_metrics(app)
    headers.init_app(app, settings)  # debug off, ProxyFix, CORS, headers
    limits.init_app(app)             # after the blueprints: finds declared limits
    auth.Auth(app)                   # after the limiter: wrong keys count too

    log.info("carbon-optimizer ready", extra={"provider": engine.provider.name, "version": VERSION,
                                              "redis": bool(settings.redis_url)})
    _BUILT.add(app)
    return app


# The apps this process built: Gunicorn's worker holds its app wrapped (middleware, metrics), so
# its exit hook closes them from here rather than unwrapping what it holds.
_BUILT: "weakref.WeakSet[Flask]" = weakref.WeakSet()


def close_apps(timeout: float = 5.0) -> None:
    """Close every app this process built (close_app), e.g. at a Gunicorn worker's exit."""
    for app in list(_BUILT):
        close_app(app, timeout)


def close_app(app: Flask, timeout: float = 5.0) -> None:
    """At a worker's graceful exit (gunicorn.conf.py worker_exit): the ledger writes what it holds
    queued, within `timeout` seconds."""
    state = app.extensions.get(EXTENSION)
    if state is not None:
        state.ledger.close(timeout)


def wsgi_app() -> Flask:
    """The production app from the environment; a configuration error exits with its reason."""
    try:
        return create_app()
    except ConfigError as exc:
        # A clear one-line reason, then a non-zero exit that Gunicorn reports as a boot failure.
        logging.basicConfig()
        log.critical(str(exc))
        raise SystemExit(3) from None
