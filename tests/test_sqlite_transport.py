"""qtui's SQLite broker as a kombu transport, exercised through kombu's public API with real
separate processes, each test on its own database file."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import OperationalError
from kombu.transport import TRANSPORT_ALIASES

from qtui.core import brokers
from qtui.core.brokers import broker_path
from qtui.core.brokers.sqlite import database
from qtui.core.brokers.sqlite.database import VERSION_REUSE
from qtui.core.brokers.sqlite.transport import Transport
from qtui.core.delayed import DUE_QUEUE
from qtui.core.ledger import StartRecord

brokers.register()

SPAWN = multiprocessing.get_context("spawn")


# -- helpers run in child processes (top-level so that spawn can find them) -----------------------

def produce(url: str, queue: str, producer: int, count: int) -> None:
    brokers.register()
    with Connection(url) as conn:
        q = conn.SimpleQueue(queue)
        for i in range(count):
            q.put({"id": f"{producer}-{i}"})
        q.close()


def consume_until_done(url: str, queue: str, out: str, done: str) -> None:
    """Ack everything from ``queue``; once ``done`` exists and the queue stays empty for a
    second, write the received ids to ``out``."""
    brokers.register()
    received: list[str] = []
    with Connection(url) as conn:
        def on_message(body: dict[str, Any], message: Any) -> None:
            received.append(body["id"])
            message.ack()
        with Consumer(conn, [Queue(queue)], callbacks=[on_message]):
            while True:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    if os.path.exists(done):
                        break
    Path(out).write_text(json.dumps(received))


def hold_without_ack(url: str, queue: str, count: int, out: str,
                     options: dict[str, Any] | None = None) -> None:
    """Take ``count`` messages, never ack them, report their ids, then wait to be killed."""
    brokers.register()
    held: list[Any] = []
    with Connection(url, transport_options=options or {}) as conn, \
            Consumer(conn, [Queue(queue)], callbacks=[lambda body, m: held.append(m)],
                     prefetch_count=count):
        while len(held) < count:
            conn.drain_events(timeout=30)
        Path(out).write_text(json.dumps([m.payload["id"] for m in held]))
        time.sleep(3600)


def subscribe(url: str, exchange: str, count: int, ready: str, out: str) -> None:
    """Bind an auto-delete queue of this process to a fanout exchange; collect ``count``."""
    brokers.register()
    received: list[int] = []
    with Connection(url) as conn:
        queue = Queue(f"sub-{os.getpid()}", Exchange(exchange, type="fanout"),
                      auto_delete=True)
        def on_message(body: dict[str, Any], message: Any) -> None:
            received.append(body["n"])
            message.ack()
        with Consumer(conn, [queue], callbacks=[on_message]):
            Path(ready).touch()
            while len(received) < count:
                conn.drain_events(timeout=30)
    Path(out).write_text(json.dumps(received))


def subscribe_and_wait(url: str, exchange: str, queue: str, ready: str) -> None:
    """Bind an auto-delete queue to a fanout exchange, then wait to be killed."""
    brokers.register()
    with Connection(url) as conn:
        q = Queue(queue, Exchange(exchange, type="fanout"), auto_delete=True)
        with Consumer(conn, [q], callbacks=[]):
            Path(ready).touch()
            time.sleep(3600)


def publish_by_name(url: str, exchange: str, routing_key: str) -> None:
    """Publish to an exchange this process never declared."""
    brokers.register()
    with Connection(url) as conn:
        Producer(conn, exchange=Exchange(exchange), auto_declare=False).publish(
            {"id": "routed"}, routing_key=routing_key)


# -- harness ------------------------------------------------------------------------------------

@contextmanager
def started(*targets: tuple[Callable[..., None], tuple[Any, ...]]
            ) -> Iterator[list[BaseProcess]]:
    """Start one spawned process per (function, args); always kill and join them all."""
    procs: list[BaseProcess] = [SPAWN.Process(target=fn, args=args, daemon=True)
                                for fn, args in targets]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for proc in procs:
            proc.join(10)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait (generously) until ``condition()``; fail with ``what`` if it never holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'broker.sqlite'}"


def queue_row(url: str, name: str) -> tuple[str, int, int] | None:
    return next((row for row in database.list_queues(url) if row[0] == name), None)


# -- delivery -----------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_four_producers_and_four_consumers_move_20000_messages_none_lost_none_twice(
        url: str, tmp_path: Path) -> None:
    per_producer, producers, consumers = 5000, 4, 4
    done = tmp_path / "done"
    outs = [tmp_path / f"consumer-{n}.json" for n in range(consumers)]
    with Connection(url) as conn:
        conn.SimpleQueue("work").close()
    with started(*[(consume_until_done, (url, "work", str(out), str(done))) for out in outs],
                 *[(produce, (url, "work", p, per_producer)) for p in range(producers)]) as procs:
        for proc in procs[consumers:]:
            proc.join(150)
            assert proc.exitcode == 0
        wait_for(lambda: queue_row(url, "work") == ("work", 0, 0), "the queue to drain", 150)
        done.touch()
        for proc in procs[:consumers]:
            proc.join(60)
            assert proc.exitcode == 0
    received = Counter(i for out in outs for i in json.loads(out.read_text()))
    expected = {f"{p}-{i}" for p in range(producers) for i in range(per_producer)}
    assert set(received) == expected
    assert [i for i, n in received.items() if n > 1] == []


@pytest.mark.timeout(120)
def test_messages_held_by_a_killed_consumer_are_redelivered_to_a_survivor(
        url: str, tmp_path: Path) -> None:
    with Connection(url) as conn:
        q = conn.SimpleQueue("jobs")
        for i in range(10):
            q.put({"id": i})
        held_file = tmp_path / "held.json"
        with started((hold_without_ack, (url, "jobs", 10, str(held_file)))) as (holder,):
            wait_for(held_file.exists, "the holder to take every message")
            assert queue_row(url, "jobs") == ("jobs", 0, 10)
            holder.kill()  # not reaped yet: a zombie must count as dead
            redelivered = []
            for _ in range(10):
                message = q.get(timeout=60)
                redelivered.append((message.payload["id"], message.delivery_info["redelivered"],
                                    message.headers["redelivered"]))
                message.ack()
        q.close()
    assert sorted(redelivered) == [(i, True, True) for i in json.loads(held_file.read_text())]


@pytest.mark.timeout(120)
def test_a_message_whose_visibility_timeout_passes_is_redelivered(url: str,
                                                                  tmp_path: Path) -> None:
    with Connection(url) as conn:
        q = conn.SimpleQueue("slow")
        q.put({"id": "late"})
        held_file = tmp_path / "held.json"
        # The holder stays alive: only the timeout (the claimer's) can bring the message back.
        short = {"visibility_timeout": 1}
        with started((hold_without_ack, (url, "slow", 1, str(held_file), short))) as (holder,):
            wait_for(held_file.exists, "the holder to take the message")
            message = q.get(timeout=60)
            assert holder.is_alive()
        assert (message.payload, message.delivery_info["redelivered"]) == ({"id": "late"}, True)
        message.ack()
        q.close()


@pytest.mark.timeout(60)
def test_a_rejected_message_with_requeue_is_the_next_one_delivered(url: str) -> None:
    with Connection(url) as conn:
        q = conn.SimpleQueue("retry")
        for i in range(3):
            q.put({"id": i})
        first = q.get(timeout=10)
        first.reject(requeue=True)
        assert queue_row(url, "retry") == ("retry", 3, 0)
        again = q.get(timeout=10)
        assert (again.payload, again.delivery_info["redelivered"]) == ({"id": 0}, True)
        assert [q.get(timeout=10).payload["id"] for _ in range(2)] == [1, 2]
        q.close()


@pytest.mark.timeout(60)
def test_an_acked_message_is_gone_and_a_rejected_one_without_requeue_too(url: str) -> None:
    with Connection(url) as conn:
        q = conn.SimpleQueue("once")
        q.put({"id": 1})
        q.put({"id": 2})
        q.get(timeout=10).ack()
        q.get(timeout=10).reject()
        assert queue_row(url, "once") == ("once", 0, 0)
        q.close()


@pytest.mark.timeout(60)
def test_a_no_ack_consumer_removes_messages_as_it_receives_them(url: str) -> None:
    with Connection(url) as conn:
        q = conn.SimpleQueue("fire-and-forget", no_ack=True)
        for i in range(3):
            q.put({"id": i})
        assert [q.get(timeout=10).payload["id"] for _ in range(2)] == [0, 1]
        assert queue_row(url, "fire-and-forget") == ("fire-and-forget", 1, 0)
        assert q.get_nowait().payload == {"id": 2}
        assert queue_row(url, "fire-and-forget") == ("fire-and-forget", 0, 0)
        q.close()


@pytest.mark.timeout(60)
def test_closing_a_channel_makes_its_unacked_messages_visible_again(url: str) -> None:
    with Connection(url) as conn:
        channel = conn.channel()
        q = conn.SimpleQueue("closing", channel=channel)
        for i in range(3):
            q.put({"id": i})
        q.get(timeout=10)
        channel.close()
        assert queue_row(url, "closing") == ("closing", 3, 0)
        q = conn.SimpleQueue("closing")
        message = q.get(timeout=10)
        assert (message.payload, message.delivery_info["redelivered"]) == ({"id": 0}, True)
        # Claimed ahead but never delivered: not flagged.
        assert q.get(timeout=10).delivery_info.get("redelivered") is None
        q.close()


@pytest.mark.timeout(60)
def test_cancelling_a_consumer_gives_back_what_it_claimed_ahead_but_not_its_unacked(
        url: str) -> None:
    with Connection(url) as conn:
        q = conn.SimpleQueue("cancel")
        for i in range(3):
            q.put({"id": i})
        q.get(timeout=10)
        q.close()
        assert queue_row(url, "cancel") == ("cancel", 2, 1)


@pytest.mark.timeout(60)
def test_basic_recover_requeues_unacked_messages(url: str) -> None:
    with Connection(url) as conn:
        q = conn.SimpleQueue("recover")
        q.put({"id": 1})
        q.get(timeout=10)
        q.channel.basic_recover(requeue=True)
        assert queue_row(url, "recover") == ("recover", 1, 0)
        q.close()


@pytest.mark.timeout(60)
def test_priority_0_is_served_first_and_9_last_as_on_redis(url: str) -> None:
    with Connection(url) as conn:
        queue = Queue("ranked", Exchange("ranked"), routing_key="ranked")
        producer = Producer(conn, exchange=queue.exchange, routing_key="ranked")
        queue(conn.default_channel).declare()
        sent = [(9, "a"), (0, "b"), (5, "c"), (9, "d"), (0, "e"), (3, "f")]
        for priority, name in sent:
            producer.publish({"name": name}, priority=priority)
        q = conn.SimpleQueue(queue)
        got = [q.get(timeout=10).payload["name"] for _ in sent]
        q.close()
    assert got == ["b", "e", "f", "c", "a", "d"]


# -- exchanges ----------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_fanout_reaches_every_bound_queue_in_three_processes(url: str, tmp_path: Path) -> None:
    count = 20
    ready = [tmp_path / f"ready-{n}" for n in range(3)]
    outs = [tmp_path / f"out-{n}.json" for n in range(3)]
    with started(*[(subscribe, (url, "news", count, str(r), str(o)))
                   for r, o in zip(ready, outs, strict=True)]) as procs:
        wait_for(lambda: all(r.exists() for r in ready), "three subscribers")
        with Connection(url) as conn:
            producer = Producer(conn, exchange=Exchange("news", type="fanout"))
            for n in range(count):
                producer.publish({"n": n})
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
    assert [json.loads(o.read_text()) for o in outs] == [list(range(count))] * 3
    # Each subscriber's auto-delete queue went with its consumer.
    assert [row for row in database.list_queues(url) if row[0].startswith("sub-")] == []


@pytest.mark.timeout(120)
def test_an_auto_delete_queue_of_a_killed_process_is_dropped(url: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    with started((subscribe_and_wait, (url, "events", "listener", str(ready)))) as (proc,):
        wait_for(ready.exists, "the listener")
        with Connection(url) as conn:
            Producer(conn, exchange=Exchange("events", type="fanout")).publish({"n": 1})
            # Looking at the queue from here does not make it this process's.
            assert Queue("listener")(conn.default_channel).queue_declare(passive=True) \
                == ("listener", 1, 0)
            proc.kill()
            proc.join(10)
            wait_for(lambda: queue_row(url, "listener") is None, "the dead listener's queue to go")
            # And the fanout no longer copies messages into it.
            Producer(conn, exchange=Exchange("events", type="fanout")).publish({"n": 2})
    assert queue_row(url, "listener") is None


@pytest.mark.timeout(60)
def test_a_process_that_never_declared_the_exchange_routes_by_its_recorded_type(
        url: str, tmp_path: Path) -> None:
    with Connection(url) as conn:
        queue = Queue("task-events", Exchange("evts", type="topic"), routing_key="task.#")
        q = conn.SimpleQueue(queue)
        with started((publish_by_name, (url, "evts", "task.succeeded"))) as (proc,):
            proc.join(60)
            assert proc.exitcode == 0
        assert q.get(timeout=10).payload == {"id": "routed"}
        q.close()


# -- inspection ---------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_size_counts_ready_messages_and_purge_removes_them_but_not_unacked(url: str) -> None:
    with Connection(url, transport_options={"fetch_batch": 1}) as conn:
        q = conn.SimpleQueue("tidy")
        for i in range(5):
            q.put({"id": i})
        assert q.qsize() == 5
        held = q.get(timeout=10)
        assert q.qsize() == 4
        assert q.channel.queue_purge("tidy") == 4
        assert q.qsize() == 0
        held.reject(requeue=True)
        assert q.qsize() == 1
        q.close()


def test_basic_get_takes_one_message_and_holds_none_ahead_from_others(url: str) -> None:
    with Connection(url) as first, Connection(url) as second:
        queue = Queue("polled")
        producer = Producer(first.default_channel)
        for i in range(20):
            producer.publish({"id": i}, routing_key="polled", declare=[queue])
        message = queue(first.default_channel).get(no_ack=False)
        assert message is not None
        message.ack()
        others = queue(second.default_channel)
        taken = []
        while (got := others.get(no_ack=False)) is not None:
            taken.append(got.payload["id"])
            got.ack()
        assert sorted(taken) == list(range(1, 20))


@pytest.mark.timeout(60)
def test_list_queues_shows_queues_without_consumers_from_another_connection(url: str) -> None:
    with Connection(url) as conn:
        conn.SimpleQueue("lonely").put({"id": 1})
        Queue("empty")(conn.default_channel).declare()
    with Connection(url) as other:
        listed = other.default_channel.list_queues()
    assert ("lonely", 1, 0) in listed
    assert ("empty", 0, 0) in listed
    assert database.list_queues(url) == listed


# -- a busy file --------------------------------------------------------------------------------

class RetryWarnings(logging.Handler):
    """Collects the broker's retry warnings; can end the locking transaction at the first."""

    def __init__(self, locker: sqlite3.Connection, release: bool) -> None:
        super().__init__(logging.WARNING)
        self.locker, self.end_transaction = locker, release
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.warnings.append(record.getMessage())
        if self.end_transaction and self.locker.in_transaction:
            self.locker.execute("ROLLBACK")


@contextmanager
def write_locked(path: Path, release_on_first_retry: bool) -> Iterator[RetryWarnings]:
    """Hold the broker file's write lock from another connection; collect the retries."""
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    handler = RetryWarnings(locker, release_on_first_retry)
    log = logging.getLogger(database.__name__)
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()


@pytest.mark.timeout(60)
def test_a_publish_that_finds_the_file_locked_is_retried_with_a_warning(url: str) -> None:
    with Connection(url, transport_options={"busy_timeout": 0.05}) as conn:
        q = conn.SimpleQueue("busy")
        with write_locked(conn.transport.path, release_on_first_retry=True) as retries:
            q.put({"id": 1})
        assert len(retries.warnings) == 1 and "busy" in retries.warnings[0]
        assert q.get(timeout=10).payload == {"id": 1}
        q.close()


@pytest.mark.timeout(60)
def test_a_publish_that_never_gets_the_lock_fails_loudly_after_bounded_retries(url: str) -> None:
    with Connection(url, transport_options={"busy_timeout": 0.05}) as conn:
        q = conn.SimpleQueue("stuck")
        with write_locked(conn.transport.path, release_on_first_retry=False) as retries, \
                pytest.raises((sqlite3.OperationalError, OperationalError), match="locked"):
            q.put({"id": 1})
        assert len(retries.warnings) == database.BUSY_RETRIES - 1
        assert q.qsize() == 0
        q.close()


# -- files and URLs -----------------------------------------------------------------------------

def test_register_is_idempotent_and_kombu_resolves_sqlite_urls_to_this_transport(
        url: str) -> None:
    brokers.register()
    brokers.register()
    assert TRANSPORT_ALIASES["sqlite"] == "qtui.core.brokers.sqlite.transport:Transport"
    with Connection(url) as conn:
        assert isinstance(conn.transport, Transport)
        assert conn.transport.driver_type == "sqlite"


def test_absolute_urls_with_three_or_four_slashes_and_relative_urls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert broker_path("sqlite:///tmp/x.db") == Path("/tmp/x.db")
    assert broker_path("sqlite:////tmp/x.db") == Path("/tmp/x.db")
    assert broker_path("sqlite://data/Broker.db") == tmp_path / "data/Broker.db"
    assert broker_path("sqlite://~/b.db") == tmp_path / "home/b.db"
    assert broker_path("sqlite://") == brokers.default_broker_path()


def test_default_broker_url_is_absolute_under_xdg_data_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert brokers.default_broker_url() == f"sqlite://{tmp_path}/qtui/broker.sqlite"
    assert broker_path(brokers.default_broker_url()) == brokers.default_broker_path()


@pytest.mark.timeout(60)
def test_a_relative_url_creates_the_file_under_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Connection("sqlite://sub/rel.sqlite") as conn:
        conn.SimpleQueue("q").put({"id": 1})
        assert conn.as_uri() == f"sqlite://{tmp_path}/sub/rel.sqlite"
    assert (tmp_path / "sub" / "rel.sqlite").exists()


def test_a_path_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OperationalError, match="cannot create the directory"):
        Connection(f"sqlite://{tmp_path}/a-file/broker.sqlite").connect()


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a database, " * 100)
    with pytest.raises(OperationalError, match="is not an SQLite database"):
        Connection(f"sqlite://{path}").connect()


def test_a_newer_schema_version_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {database.SCHEMA_VERSION + 1}")
    with pytest.raises(OperationalError, match="newer than this qtui understands"):
        Connection(f"sqlite://{path}").connect()


def test_a_new_file_is_in_wal_mode_at_the_current_schema(url: str) -> None:
    with Connection(url) as conn:
        conn.connect()
        path = conn.transport.path
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == database.SCHEMA_VERSION
        plan = " ".join(row[3] for row in db.execute(
            f"EXPLAIN QUERY PLAN {database.READY} LIMIT 16", ("q", 0)))
    # One index range per priority, bounded by visible_at: future rows are never read.
    assert "COVERING INDEX messages_ready (queue=? AND priority=? AND visible_at<?)" in plan
    assert "TEMP B-TREE" not in plan


def vm_steps(db: database.Database, op: Callable[[], object]) -> int:
    """SQLite virtual-machine instructions ``op`` runs on ``db``'s connection (a measure of the
    rows it reads that does not depend on the machine's speed)."""
    steps = [0]
    conn = db._connect()
    conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 1)
    try:
        op()
    finally:
        conn.set_progress_handler(None, 1)
    return steps[0]


@pytest.mark.timeout(60)
def test_a_fetch_does_not_read_the_future_eta_rows_of_its_queue(tmp_path: Path) -> None:
    db = database.Database(tmp_path / "eta.sqlite")
    try:
        for i in range(40):
            db.put("q", 5, json.dumps({"id": i}))
        claimed: list[database.Claimed] = []
        before = vm_steps(db, lambda: claimed.extend(db.claim("q", 16, 60)))
        db.release([c.id for c in claimed], delivered=False)
        later = time.time() + 3600
        for i in range(5_000):  # due in an hour, and at a better priority than the ready ones
            db.put("q", 0, json.dumps({"eta": i}), not_before=later)
        after = vm_steps(db, lambda: db.claim("q", 16, 60))
        assert after < 2 * before, (before, after)
    finally:
        db.close()


@pytest.mark.timeout(60)
def test_a_version_1_file_is_migrated_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    with Connection(f"sqlite://{path}") as conn:
        conn.SimpleQueue("old").put({"id": "kept"})
    with sqlite3.connect(path, isolation_level=None) as db:  # back to what version 1 made
        db.executescript("DROP INDEX messages_ready; CREATE INDEX messages_fetch ON messages "
                         "(queue, priority, id, visible_at); DROP TABLE paused_queues; "
                         "DROP TABLE paused_consumers; PRAGMA user_version = 1;")
    with Connection(f"sqlite://{path}") as conn:
        q = conn.SimpleQueue("old")
        assert q.get(timeout=10).payload == {"id": "kept"}
        q.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == database.SCHEMA_VERSION
        indexes = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")}
        tables = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "messages_ready" in indexes and "messages_fetch" not in indexes
    assert {"paused_queues", "paused_consumers"} <= tables


def test_a_failed_commit_is_rolled_back_so_the_connection_can_write_again() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript("""
        PRAGMA foreign_keys = ON;
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
    """)
    with pytest.raises(sqlite3.IntegrityError):  # raised by COMMIT (the check is deferred)
        with database.Database._transaction(conn):
            conn.execute("INSERT INTO child VALUES (1)")
    assert not conn.in_transaction
    with database.Database._transaction(conn):
        conn.execute("INSERT INTO parent VALUES (1)")
    assert conn.execute("SELECT count(*) FROM parent").fetchone()[0] == 1
    conn.close()


# -- the worker's fetch (Channel.send_fetch / read_fetch) -----------------------------------------

@contextmanager
def fetching(url: str, *names: str, **options: Any) -> Iterator[tuple[Any, list[Any]]]:
    """A channel consuming ``names`` (in that order) as the worker does, and what it delivers."""
    with Connection(url, transport_options=options) as conn:
        channel = conn.channel()
        delivered: list[Any] = []
        consumer = Consumer(channel, [Queue(name, Exchange(""), routing_key=name)
                                      for name in names],
                            callbacks=[lambda body, message: delivered.append(message)])
        consumer.consume()
        yield channel, delivered
        channel.close()


def publish(url: str, queue: str, count: int) -> None:
    with Connection(url) as conn:
        producer = Producer(conn.channel())
        for i in range(count):
            producer.publish({"id": i}, routing_key=queue, declare=[Queue(queue)])


def held_ahead(channel: Any) -> list[int]:
    return [claimed.id for ahead in channel._ahead.values() for claimed in ahead]


def delivered_counts(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [count for count, in db.execute("SELECT delivered_count FROM messages")]


def break_the_ledger_table(path: Path) -> None:
    """A table of the ledger's name that its write cannot fit: the next start record fails."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE qtui_ledger (only_one_column)")


def a_start() -> StartRecord:
    return StartRecord("qtui.ledger.test", {"delivery": time.time() + 60}, [], None)


@pytest.mark.timeout(60)
def test_a_fetch_whose_ledger_write_fails_acks_records_and_claims_nothing(url: str) -> None:
    publish(url, "fetched", 5)
    with fetching(url, "fetched") as (channel, delivered):
        assert channel.send_fetch(["fetched"], 2) and channel.read_fetch() == 2
        break_the_ledger_table(channel.db.path)
        with pytest.raises(sqlite3.OperationalError):
            channel.send_fetch(["fetched"], 3, [delivered[0].delivery_tag], a_start())
        assert queue_row(url, "fetched") == ("fetched", 3, 2)  # nothing acked, nothing claimed
        assert list(channel.qos._delivered) == [m.delivery_tag for m in delivered]
        with sqlite3.connect(channel.db.path) as db:
            assert db.execute("SELECT COUNT(*) FROM qtui_ledger").fetchone() == (0,)
        assert channel.send_fetch(["fetched"], 3) and channel.read_fetch() == 3  # usable


@pytest.mark.timeout(60)
def test_closing_after_send_fetch_without_read_fetch_gives_every_fetched_row_back(
        url: str) -> None:
    publish(url, "unread", 5)
    with fetching(url, "unread") as (channel, delivered):
        assert channel.send_fetch(["unread"], 3)
        assert queue_row(url, "unread") == ("unread", 2, 3)
        channel.close()
        assert not delivered
        assert queue_row(url, "unread") == ("unread", 5, 0)
        assert delivered_counts(channel.db.path) == [0] * 5  # never delivered: not redelivered


@pytest.mark.timeout(60)
def test_rows_claimed_ahead_stay_held_ahead_in_order_when_a_fetch_fails(url: str) -> None:
    publish(url, "ahead", 20)
    with fetching(url, "ahead", busy_timeout=0.02) as (channel, delivered):
        channel.connection.client.drain_events(timeout=10)  # kombu's get: 1 delivered, 15 ahead
        ahead = held_ahead(channel)
        assert len(delivered) == 1 and len(ahead) == 15
        with write_locked(channel.db.path, release_on_first_retry=False):
            with pytest.raises(database.BrokerLocked):
                channel.send_fetch(["ahead"], 8, [delivered[0].delivery_tag])
        assert held_ahead(channel) == ahead
        channel.close()
        assert queue_row(url, "ahead") == ("ahead", 20, 0)  # none stranded until the timeout


@pytest.mark.timeout(60)
def test_a_queue_found_empty_is_fetched_from_again_once_a_message_is_put(url: str) -> None:
    due = DUE_QUEUE.format(queue="main")
    with fetching(url, "main", due) as (channel, _):
        assert channel.send_fetch(["main"], 4) and channel.read_fetch() == 0  # both empty
        publish(url, "main", 1)
        time.sleep(VERSION_REUSE * 5)  # past the reuse of the last file version read
        assert channel.send_fetch(["main"], 4) and channel.read_fetch() == 1
        assert channel.send_fetch(["main"], 4) and channel.read_fetch() == 0
        publish(url, due, 1)
        time.sleep(VERSION_REUSE * 5)
        assert channel.send_fetch(["main"], 4) and channel.read_fetch() == 1


@pytest.mark.timeout(60)
def test_a_queue_a_full_fetch_did_not_reach_is_not_taken_for_empty(url: str) -> None:
    due = DUE_QUEUE.format(queue="first")
    publish(url, "first", 2)
    publish(url, due, 1)
    with fetching(url, "first", due) as (channel, _):
        assert channel.send_fetch(["first"], 2) and channel.read_fetch() == 2  # first only
        assert channel.send_fetch(["first"], 2) and channel.read_fetch() == 1  # then the due


@pytest.mark.timeout(60)
def test_a_fetch_claims_only_from_the_queues_it_names_and_their_due_queues(url: str) -> None:
    publish(url, "named", 1)
    publish(url, DUE_QUEUE.format(queue="named"), 1)
    publish(url, "other", 1)
    with fetching(url, "other", "named", DUE_QUEUE.format(queue="named")) as (channel, _):
        assert channel.send_fetch(["named"], 4) and channel.read_fetch() == 2
        assert queue_row(url, "other") == ("other", 1, 0)


# -- leases of what the channel claimed and has not delivered yet ---------------------------------

#: A lease short enough to run out within a test, long enough that the renewal below (made
#: half-way) lands well before it does on a loaded machine.
LEASE = 2.0


def past_the_first_lease(renew: Callable[[], None]) -> None:
    """Renew half-way through the first lease, then wait until that lease has run out."""
    time.sleep(LEASE * 0.6)
    renew()
    time.sleep(LEASE * 0.6)


@pytest.mark.timeout(60)
def test_the_lease_renewal_covers_what_a_fetch_claimed_and_has_not_delivered_yet(
        url: str) -> None:
    """A solo worker reads its fetch after the task that call rode with: the rows it claimed
    stay under this channel's lease meanwhile (on main they became visible to other workers,
    which ran them too), and are delivered once read."""
    publish(url, "unread", 3)
    with fetching(url, "unread", visibility_timeout=LEASE) as (channel, delivered):
        assert channel.send_fetch(["unread"], 3)
        past_the_first_lease(lambda: channel.renew([]))  # the worker holds nothing else
        assert queue_row(url, "unread") == ("unread", 0, 3)
        assert channel.read_fetch() == 3
        assert [m.payload["id"] for m in delivered] == [0, 1, 2]


@pytest.mark.timeout(60)
def test_the_lease_renewal_covers_rows_claimed_ahead_and_they_are_still_delivered(
        url: str) -> None:
    publish(url, "ahead", 4)
    with fetching(url, "ahead", visibility_timeout=LEASE) as (channel, delivered):
        channel.connection.client.drain_events(timeout=10)  # kombu's get: 1 delivered, 3 ahead
        assert len(delivered) == 1 and len(held_ahead(channel)) == 3
        past_the_first_lease(lambda: channel.renew([delivered[0].delivery_tag]))
        assert queue_row(url, "ahead") == ("ahead", 0, 4)
        assert channel.send_fetch(["ahead"], 3) and channel.read_fetch() == 3
        assert [m.payload["id"] for m in delivered] == [0, 1, 2, 3]


@pytest.mark.timeout(60)
def test_a_fetched_row_whose_lease_ran_out_is_left_to_whoever_claimed_it_since(
        url: str) -> None:
    publish(url, "lapsed", 2)
    with fetching(url, "lapsed", visibility_timeout=LEASE) as (channel, delivered):
        assert channel.send_fetch(["lapsed"], 2)
        time.sleep(LEASE * 1.2)  # no renewal: the rows are anyone's again
        with Connection(url) as other:
            q = other.SimpleQueue("lapsed")
            assert [q.get(timeout=10).payload["id"] for _ in range(2)] == [0, 1]
            assert channel.read_fetch() == 0 and not delivered
            q.close()


@pytest.mark.timeout(60)
def test_a_renewal_leaves_alone_a_row_claimed_again_since_its_lease_ran_out(url: str) -> None:
    """The claim is renewed, not the row: a row whose lease ran out and that was claimed again
    (here by a channel of the same process, whose holder is the same) keeps its new holder's
    lease, and the first channel does not deliver its stale copy."""
    publish(url, "again", 2)
    with fetching(url, "again", visibility_timeout=LEASE) as (channel, delivered):
        channel.connection.client.drain_events(timeout=10)  # 1 delivered, 1 ahead
        assert len(delivered) == 1 and len(held_ahead(channel)) == 1
        channel.qos.ack(delivered[0].delivery_tag)
        time.sleep(LEASE * 1.2)
        with Connection(url, transport_options={"visibility_timeout": 3600}) as other:
            q = other.SimpleQueue("again")
            assert q.get(timeout=10).payload["id"] == 1
            channel.renew([])
            assert channel.send_fetch(["again"], 1) and channel.read_fetch() == 0
            with sqlite3.connect(channel.db.path) as db:
                (until,), = db.execute("SELECT visible_at FROM messages").fetchall()
            assert until > time.time() + 3000  # still the second claim's lease
            q.close()


class InterruptedAfterCommit:
    """A connection on which Ctrl+C lands just after the migration's COMMIT went through (the
    signal is handled at the next bytecode, after the call returned)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        cursor = self.conn.execute(sql, *args)
        if sql == "COMMIT":
            raise KeyboardInterrupt
        return cursor


def test_ctrl_c_after_the_schema_migration_commits_is_not_turned_into_a_broker_error(tmp_path):
    # The ROLLBACK of a committed migration failed ("no transaction is active"); that error
    # replaced the KeyboardInterrupt and kombu retried the connection: Ctrl+C was lost.
    db = database.Database(tmp_path / "opened.sqlite")
    fresh = sqlite3.connect(tmp_path / "fresh.sqlite", isolation_level=None)
    try:
        with pytest.raises(KeyboardInterrupt):
            db._prepare(InterruptedAfterCommit(fresh))  # type: ignore[arg-type]
    finally:
        fresh.close()
        db.close()
