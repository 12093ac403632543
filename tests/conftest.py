"""Shared fixtures: an app on the demo provider at a fixed clock, and the real local Redis."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import datetime, timezone

import pytest
import redis

from carbon_optimizer.web.app import create_app
from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.settings import load_settings
from carbon_optimizer.web.app_state import app_state
from devkit.postgres_server import drop_schema, new_schema, reachable
from devkit.redis_server import delete_keys
from tests.support import LIMIT_REDIS, TEST_REDIS_URL

FIXED_NOW = datetime(2026, 11, 23, 10, 17, 30, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def processes_only_in_slow_tests(request, monkeypatch):
    """`make test-fast` leaves out the tests marked slow: one that starts Gunicorn or redis-server
    without the mark fails here, so the fast loop never starts a process."""
    if request.node.get_closest_marker("slow") is not None:
        return

    class Guarded(subprocess.Popen):
        def __init__(self, args, *more, **options):
            command = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
            if "gunicorn" in command or "redis-server" in command:
                raise AssertionError(f"this test starts `{command}`: mark it @pytest.mark.slow")
            super().__init__(args, *more, **options)

    monkeypatch.setattr(subprocess, "Popen", Guarded)


@pytest.fixture
def make_app():
    """Build an app from environment-style settings, at a fixed clock by default. Its engine's
    background fetches are finished when the test ends, so none outlives it."""
    built = []

    def build(env: dict | None = None, clock=lambda: FIXED_NOW, **kwargs):
        # Rate limits (web/limits.py) are off here: tests/test_security.py tests them on its own apps.
        # The ledger is off unless a test turns it on (tests/test_ledger_service.py): in-process
        # apps would all write the one default SQLite file.
        env = {"RATE_LIMIT_ENABLED": "false", "LEDGER_ENABLED": "false", **(env or {})}
        kwargs.setdefault("secret_store", SecretStore(env))
        app = create_app(settings=load_settings(env), clock=clock, **kwargs)
        built.append(app)
        return app
    yield build
    for app in built:
        app_state(app).engine.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def checked_redis() -> redis.Redis:
    """The tests' Redis database, checked: a test that needs it fails saying why when it is down."""
    client = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError:
        pytest.fail("these tests need Redis on 127.0.0.1:6379 (see README)")
    return client


@pytest.fixture
def redis_client():
    return checked_redis()


@pytest.fixture
def limit_prefix():
    """A CACHE_KEY_PREFIX of the test's own in the rate-limit database; afterwards every key holding
    it is deleted (the limiter writes it inside its keys, not only at the start), and nothing else."""
    prefix = f"limit-{uuid.uuid4().hex[:10]}:"
    store = redis.Redis.from_url(LIMIT_REDIS)
    try:
        store.ping()
    except redis.RedisError:
        pytest.fail("these tests need Redis on 127.0.0.1:6379")
    yield prefix
    for key in store.scan_iter(match=f"*{prefix}*", count=500):
        store.delete(key)


@pytest.fixture
def redis_prefix(redis_client):
    """A key prefix of the test's own; its keys are deleted afterwards, and nothing else."""
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_keys(redis_client, prefix)


def pytest_collection_modifyitems(items):
    """A test marked `last_in_module` checks what its module's other tests did, so it runs after
    them whatever order pytest-randomly chose (that plugin reorders before this hook runs)."""
    for item in [i for i in items if i.get_closest_marker("last_in_module")]:
        items.remove(item)
        same = [k for k, other in enumerate(items) if getattr(other, "module", None) is item.module]
        items.insert(same[-1] + 1 if same else len(items), item)


@pytest.fixture
def postgres_url():
    """A schema of the test's own on the machine's PostgreSQL (127.0.0.1:5432, trust authentication,
    database `test`), as a URL whose connections use it; dropped afterwards with all it holds.
    Without that server the test is skipped, saying so; in CI (which starts it) it fails."""
    if not reachable():
        message = ("no PostgreSQL on 127.0.0.1:5432 (trust authentication, database `test`): "
                   "start one to run the ledger's PostgreSQL tests (.ci/run does)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    name, url = new_schema()
    yield url
    drop_schema(name)
