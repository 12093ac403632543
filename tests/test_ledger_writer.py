"""The ledger's writer: records queued by requests, written in batches by its thread, kept in a
bounded spool while the database is unreachable and written when it returns. On the machine's real
PostgreSQL (a schema per test), SQLite, a private PostgreSQL stopped and started under load, and
the machine's Redis for the shared spool."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from carbon_optimizer.errors import ConfigError
from carbon_optimizer.ledger.factory import build_ledger
from carbon_optimizer.ledger.migrate import migrate
from carbon_optimizer.ledger.records import NullLedger, RunStarted
from carbon_optimizer.ledger.spool import FileSpool, RedisSpool
from carbon_optimizer.ledger.store import LedgerStore
from carbon_optimizer.ledger.tables import plans, runs_started
from carbon_optimizer.ledger.writer import LedgerWriter
from carbon_optimizer.settings import load_settings
from devkit.paths import ROOT
from devkit.ports import free_port
from devkit.postgres_server import PrivatePostgres
from devkit.waiting import wait_for
from tests.support import TEST_REDIS_URL, plan_record

PASSWORD = "s3cret-Pa55"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


def unreachable_url() -> str:
    """A PostgreSQL URL with a password, on a loopback port nothing listens on (refused at once)."""
    return f"postgresql+psycopg://ledger:{PASSWORD}@127.0.0.1:{free_port()}/ledger"


def plan_ids(url: str) -> list[str]:
    store = LedgerStore(url)
    try:
        with store.engine.connect() as connection:
            return list(connection.execute(select(plans.c.plan_id)).scalars())
    finally:
        store.close()


def numbered(source: int, index: int) -> str:
    return f"{source:04d}{index:028d}"


def dropped_metric(reason: str) -> float:
    return REGISTRY.get_sample_value("carbon_ledger_records_dropped_total", {"reason": reason}) or 0.0


# The same writer in another process: submits `count` records numbered by `source`, each twice (a
# client's retry asks again with the same plan), then closes.
CHILD = """
import sys
from carbon_optimizer.ledger.spool import FileSpool
from carbon_optimizer.ledger.store import LedgerStore
from carbon_optimizer.ledger.writer import LedgerWriter
from tests.support import plan_record
url, spool, source, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
writer = LedgerWriter(LedgerStore(url), FileSpool(spool, 100_000))
for index in range(count):
    record = plan_record(index, plan_id=f"{source:04d}{index:028d}")
    writer.submit([record])
    writer.submit([record])
writer.close(timeout=60)
"""


def test_records_from_threads_and_two_processes_arrive_exactly_once(ledger_url, tmp_path):
    migrate(ledger_url)
    spool = tmp_path / "spool.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, ledger_url, str(spool), str(source),
                                  "400"], env=env, stderr=subprocess.PIPE, text=True)
                for source in (1, 2)]
    writer = LedgerWriter(LedgerStore(ledger_url), FileSpool(spool, 100_000))

    def submit(source: int) -> None:
        for index in range(400):
            writer.submit([plan_record(index, plan_id=numbered(source, index))])
        writer.submit([plan_record(0, plan_id=numbered(source, 0))])  # a duplicate, late

    threads = [threading.Thread(target=submit, args=(source,)) for source in (3, 4, 5, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close(timeout=60)
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [child.returncode for child in children] == [0, 0], errors
    ids = plan_ids(ledger_url)
    assert len(ids) == len(set(ids))
    assert set(ids) == {numbered(s, i) for s in range(1, 7) for i in range(400)}
    assert writer.health() == {"status": "ok", "queued": 0, "spooled": 0, "dropped": 0,
                               "last_error": None}


def test_close_writes_what_is_queued(ledger_url, tmp_path):
    migrate(ledger_url)
    # A long interval and a large batch: the thread would not write before close() asks it to.
    writer = LedgerWriter(LedgerStore(ledger_url), FileSpool(tmp_path / "spool.jsonl", 1000),
                          interval=3600, batch=100_000)
    records = [plan_record(i) for i in range(1200)]
    for record in records:
        writer.submit([record])
    writer.started(RunStarted(records[0].plan_id, "ci-pipeline", records[0].created_at + 60, 1))
    assert writer.health()["queued"] == 1201
    writer.close(timeout=60)
    assert sorted(plan_ids(ledger_url)) == sorted(r.plan_id for r in records)
    assert list(LedgerStore(ledger_url).started([records[0].plan_id])) == [records[0].plan_id]


def test_with_the_database_down_records_wait_in_the_spool_up_to_its_bound(tmp_path, caplog):
    """A database down (connection refused), a spool of 100: 250 records keep 100 and drop 150,
    counted by the metric and health(), logged once, the URL's password nowhere."""
    before = dropped_metric("spool_full")
    spool = FileSpool(tmp_path / "spool.jsonl", 100)
    writer = LedgerWriter(LedgerStore(unreachable_url()), spool, batch=50)
    caplog.set_level(logging.INFO, logger="carbon_optimizer.ledger")
    for index in range(250):
        writer.submit([plan_record(index, plan_id=numbered(7, index))])
    assert wait_for(lambda: writer.health()["dropped"] == 150 and writer.health()["queued"] == 0)
    health = writer.health()
    writer.close(timeout=30)
    assert health["status"] == "degraded"
    assert health["spooled"] == 100
    assert "OperationalError" in health["last_error"]
    assert PASSWORD not in str(health)
    assert dropped_metric("spool_full") - before == 150
    assert spool.size() == 100
    # The first 100 are kept, in order (the oldest first).
    assert [r.plan_id for r in spool.take(1000)] == [numbered(7, i) for i in range(100)]
    dropping = [r for r in caplog.records if "dropping records" in r.getMessage()]
    assert len(dropping) == 1
    assert PASSWORD not in caplog.text
    assert "unreachable" in caplog.text


def test_close_spools_what_is_queued_when_the_database_is_down(tmp_path):
    spool = FileSpool(tmp_path / "spool.jsonl", 10_000)
    writer = LedgerWriter(LedgerStore(unreachable_url()), spool, interval=3600, batch=100_000)
    for index in range(300):
        writer.submit([plan_record(index, plan_id=numbered(8, index))])
    writer.close(timeout=30)
    assert [r.plan_id for r in spool.take(1000)] == [numbered(8, i) for i in range(300)]


def test_the_spool_is_written_to_the_database_when_it_returns(ledger_url, tmp_path):
    """What an earlier process spooled (some of it already written: a replay cut short) is written
    once, and the spool emptied."""
    migrate(ledger_url)
    spool = FileSpool(tmp_path / "spool.jsonl", 10_000)
    records = [plan_record(i, plan_id=numbered(9, i)) for i in range(1300)]
    assert spool.push(records) == 1300
    LedgerStore(ledger_url).write(records[:200])
    writer = LedgerWriter(LedgerStore(ledger_url), spool)
    writer.submit([plan_record(0, plan_id=numbered(10, 0))])
    assert wait_for(lambda: writer.health()["spooled"] == 0 and len(plan_ids(ledger_url)) == 1301)
    writer.close(timeout=30)
    ids = plan_ids(ledger_url)
    assert sorted(ids) == sorted([r.plan_id for r in records] + [numbered(10, 0)])
    assert spool.size() == 0 and spool.take(10) == []


def test_with_redis_down_too_records_wait_in_the_local_file(tmp_path):
    """The database and Redis both unreachable: the file behind the Redis spool keeps the records;
    nothing is dropped."""
    broken = redis.Redis(port=free_port(), socket_timeout=0.2, socket_connect_timeout=0.2)
    local = FileSpool(tmp_path / "spool.jsonl", 1000)
    writer = LedgerWriter(LedgerStore(unreachable_url()), RedisSpool(broken, "x:", 1000),
                          fallback=local)
    writer.submit([plan_record(i, plan_id=numbered(11, i)) for i in range(120)])
    assert wait_for(lambda: writer.health()["spooled"] == 120)
    writer.close(timeout=30)
    assert writer.health()["dropped"] == 0
    assert [r.plan_id for r in local.take(1000)] == [numbered(11, i) for i in range(120)]


def test_the_local_file_behind_redis_is_written_when_the_database_returns(ledger_url, tmp_path,
                                                                          redis_client, redis_prefix):
    """Records a Redis outage left in the file, and records in the Redis spool: both written once
    the database answers, both spools emptied."""
    migrate(ledger_url)
    local = FileSpool(tmp_path / "spool.jsonl", 1000)
    shared = RedisSpool(redis_client, redis_prefix, 1000)
    in_file = [plan_record(i, plan_id=numbered(12, i)) for i in range(700)]
    in_redis = [plan_record(i, plan_id=numbered(13, i)) for i in range(600)]
    local.push(in_file)
    shared.push(in_redis)
    writer = LedgerWriter(LedgerStore(ledger_url), shared, fallback=local)
    writer.submit([plan_record(0, plan_id=numbered(14, 0))])
    assert wait_for(lambda: len(plan_ids(ledger_url)) == 1301 and writer.health()["spooled"] == 0)
    writer.close(timeout=30)
    assert sorted(plan_ids(ledger_url)) == sorted([r.plan_id for r in in_file + in_redis]
                                                  + [numbered(14, 0)])
    assert local.size() == 0 and shared.size() == 0


def test_the_queue_is_bounded_and_what_it_drops_is_counted(tmp_path):
    before = dropped_metric("queue_full")
    writer = LedgerWriter(LedgerStore(f"sqlite:///{tmp_path / 'ledger.db'}"),
                          FileSpool(tmp_path / "spool.jsonl", 100), queue_max=10, interval=3600,
                          batch=100_000)
    writer.submit([plan_record(i) for i in range(15)])
    assert writer.health()["queued"] == 10
    assert writer.health()["dropped"] == 5
    assert dropped_metric("queue_full") - before == 5
    writer.close(timeout=30)
    assert len(plan_ids(f"sqlite:///{tmp_path / 'ledger.db'}")) == 10


def test_a_record_the_database_refuses_is_dropped_and_the_rest_of_its_batch_written(ledger_url, tmp_path):
    migrate(ledger_url)
    before = dropped_metric("rejected")
    writer = LedgerWriter(LedgerStore(ledger_url), FileSpool(tmp_path / "spool.jsonl", 100))
    good = [plan_record(i) for i in range(5)]
    bad = plan_record(99, created_at=2**70)  # past a 64-bit integer: no database takes it
    writer.submit(good[:2] + [bad] + good[2:])
    writer.close(timeout=30)
    assert sorted(plan_ids(ledger_url)) == sorted(r.plan_id for r in good)
    assert writer.health()["dropped"] == 1
    assert dropped_metric("rejected") - before == 1
    assert writer.health()["spooled"] == 0


def test_the_spool_file_counts_what_other_processes_append_and_replay(tmp_path):
    """Two handles on one file (two workers): each one's count follows the other's pushes and a
    replay that emptied the file and started a new one."""
    mine, theirs = FileSpool(tmp_path / "spool.jsonl", 1000), FileSpool(tmp_path / "spool.jsonl", 1000)
    assert mine.push([plan_record(i) for i in range(3)]) == 3
    assert theirs.push([plan_record(i) for i in range(4)]) == 4
    assert mine.size() == theirs.size() == 7
    with theirs.replaying():
        assert len(theirs.take(5)) == 5
        theirs.commit()
    assert mine.size() == 2
    with theirs.replaying():
        assert len(theirs.take(5)) == 2
        theirs.commit()
    assert mine.size() == theirs.size() == 0
    newer = [plan_record(i) for i in range(9)]  # a new file, longer than the last one counted
    assert theirs.push(newer) == 9
    assert mine.size() == 9
    with mine.replaying():
        assert [r.plan_id for r in mine.take(100)] == [r.plan_id for r in newer]
    assert mine.push([plan_record(0)] * 1000) == 991  # the bound counts the other's records


def test_a_torn_line_in_the_spool_file_is_skipped(tmp_path):
    """A process killed while appending leaves part of a line: the records around it still read."""
    spool = FileSpool(tmp_path / "spool.jsonl", 100)
    first, second = plan_record(1), plan_record(2)
    spool.push([first])
    with open(tmp_path / "spool.jsonl", "ab") as torn:
        torn.write(b'{"kind":"plan","plan_id":"12')
    spool.push([second])
    with spool.replaying():
        assert [r.plan_id for r in spool.take(10)] == [first.plan_id]
        spool.commit()
        assert spool.take(10) == []  # the torn line and the record glued to it are lost
        spool.commit()
    assert spool.size() == 0


@pytest.mark.slow
@pytest.mark.parametrize("spool_kind", ["file", "redis"])
def test_nothing_is_lost_across_a_postgres_stop_and_start_under_load(spool_kind, tmp_path,
                                                                     redis_client, redis_prefix):
    """Threads submit records without pause; the database stops for ~2.5 s (the issue's 60 s outage
    is the benchmark's: the same path, longer), starts again; after close() every plan is there
    exactly once. The writer really saw the outage: its health said degraded with records spooled."""
    server = PrivatePostgres(free_port())
    try:
        server.start()
        migrate(server.url)
        spool = (FileSpool(tmp_path / "spool.jsonl", 1_000_000) if spool_kind == "file"
                 else RedisSpool(redis_client, redis_prefix, 1_000_000))
        writer = LedgerWriter(LedgerStore(server.url), spool)
        stop = threading.Event()
        submitted: list[list[str]] = [[] for _ in range(3)]
        seen = []

        def load(source: int) -> None:
            index = 0
            while not stop.is_set():
                record = plan_record(index, plan_id=numbered(20 + source, index))
                writer.submit([record])
                submitted[source].append(record.plan_id)
                index += 1
                if index % 10 == 0:
                    time.sleep(0.01)  # about 1,000 plans a second from each thread

        def watch() -> None:
            while not stop.is_set():
                seen.append(writer.health())
                time.sleep(0.05)

        threads = [threading.Thread(target=load, args=(s,)) for s in range(3)]
        threads.append(threading.Thread(target=watch))
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        server.stop()
        time.sleep(2.5)
        server.start()
        assert wait_for(lambda: writer.health()["spooled"] == 0 and writer.health()["status"] == "ok")
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        writer.close(timeout=60)
        ids = plan_ids(server.url)
        everything = [plan_id for source in submitted for plan_id in source]
        assert len(ids) == len(set(ids))
        assert set(ids) == set(everything)
        assert any(h["status"] == "degraded" and h["spooled"] > 0 for h in seen)
        assert writer.health()["dropped"] == 0
    finally:
        server.remove()


def test_build_ledger_from_settings(tmp_path, redis_prefix):
    assert isinstance(build_ledger(load_settings({"LEDGER_ENABLED": "false"})), NullLedger)
    assert build_ledger(load_settings({"LEDGER_ENABLED": "false"})).health() == {"status": "off"}
    plain = build_ledger(load_settings({"LEDGER_DIR": str(tmp_path / "data")}))
    assert isinstance(plain, LedgerWriter) and isinstance(plain.spool, FileSpool)
    assert plain.store.url == f"sqlite:///{tmp_path / 'data' / 'ledger.db'}"
    assert plain.spool.path == tmp_path / "data" / "ledger-spool.jsonl"
    record = plan_record(0)
    plain.submit([record])
    plain.close(timeout=30)
    assert plan_ids(plain.store.url) == [record.plan_id]  # migrated by its thread, then written
    shared = build_ledger(load_settings({"LEDGER_DIR": str(tmp_path), "REDIS_URL": TEST_REDIS_URL,
                                         "CACHE_KEY_PREFIX": redis_prefix,
                                         "DATABASE_URL": unreachable_url(),
                                         "LEDGER_SPOOL_MAX": "7"}))
    assert isinstance(shared.spool, RedisSpool) and isinstance(shared.fallback, FileSpool)
    assert shared.spool.key == f"{redis_prefix}ledger:spool" and shared.spool.limit == 7
    assert shared.fallback.path == tmp_path / "ledger-spool.jsonl"
    assert PASSWORD not in repr(shared.store)
    shared.close(timeout=5)


@pytest.mark.parametrize("url", [f"postgresql+psycopg://ledger:{PASSWORD}@db:port/ledger",
                                 f"mysql://ledger:{PASSWORD}@db/ledger", f"not a url {PASSWORD}"])
def test_a_database_url_that_cannot_be_used_stops_the_start_without_showing_it(url, tmp_path):
    with pytest.raises(ConfigError, match="DATABASE_URL is not a URL such as") as refused:
        build_ledger(load_settings({"DATABASE_URL": url, "LEDGER_DIR": str(tmp_path)}))
    assert PASSWORD not in str(refused.value)
