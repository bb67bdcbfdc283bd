"""Results: AsyncResult against each backend, Celery's Redis layout, exceptions that travel
safely."""

from __future__ import annotations

import gc
import json
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from kombu import Producer

from qtui.core import App, states
from qtui.core.backends import exception_from_meta, exception_to_meta
from qtui.core.backends.redis_listener import EXPECTED_UNREAD_MAX
from qtui.core.exceptions import BackendError, RemoteTaskError, TimeoutError
from qtui.core.protocol import TaskMessage

from .test_hostile_published import publish_amqp_raw
from .test_worker_hostile_amqp import DEEP_HEADERS, content_header
from .worker_helpers import wait_for


def test_builtin_exceptions_round_trip_with_their_type():
    exc = exception_from_meta(exception_to_meta(KeyError("missing")))
    assert type(exc) is KeyError and exc.args == ("missing",)


def test_unknown_exception_types_become_named_stand_ins():
    meta = {"exc_type": "PaymentDeclined", "exc_module": "shop.errors", "exc_message": ["card"]}
    exc = exception_from_meta(meta)
    assert isinstance(exc, RemoteTaskError)
    assert type(exc).__name__ == "PaymentDeclined" and exc.args == ("card",)
    assert "shop.errors" not in sys.modules  # nothing was imported


def test_stored_data_never_names_a_callable_into_execution():
    meta = {"exc_type": "system", "exc_module": "os", "exc_message": ["touch /tmp/pwned"]}
    exc = exception_from_meta(meta)
    assert isinstance(exc, RemoteTaskError) and exc.args == ("touch /tmp/pwned",)


def test_garbage_exception_data_is_still_an_exception():
    assert isinstance(exception_from_meta("nonsense"), RemoteTaskError)


@pytest.mark.parametrize("module, name", [
    ("builtins", "SystemExit"), ("builtins", "KeyboardInterrupt"), ("builtins", "GeneratorExit"),
    ("builtins", "BaseException"), ("qtui.workers.worker", "WorkerTerminate")])
def test_a_stored_exception_that_is_not_an_exception_comes_back_as_a_named_error(module, name):
    import qtui.workers.worker  # noqa: F401 - so the last case names a type this process has

    exc = exception_from_meta({"exc_type": name, "exc_module": module, "exc_message": [3]})
    assert type(exc) is RemoteTaskError
    assert f"{module}.{name}" in str(exc) and "not an Exception" in str(exc)


@pytest.fixture
def redis_app(redis_url):
    app = App("results", broker="memory://", backend=redis_url)
    yield app
    app.close()


def test_redis_layout_is_celerys(redis_app, redis_url, unique):
    task_id = f"id-{unique}"
    redis_app.backend.store_result(task_id, {"sum": 8}, states.SUCCESS)
    client = redis.Redis.from_url(redis_url)
    stored = json.loads(client.get(f"celery-task-meta-{task_id}"))
    assert stored["status"] == "SUCCESS" and stored["result"] == {"sum": 8}
    assert stored["task_id"] == task_id and stored["children"] == [] and stored["date_done"]
    assert 0 < client.ttl(f"celery-task-meta-{task_id}") <= 86400
    client.delete(f"celery-task-meta-{task_id}")


def test_get_wakes_on_the_publication(redis_app, unique):
    task_id = f"id-{unique}"
    result = redis_app.AsyncResult(task_id)
    assert result.state == states.PENDING and not result.ready()
    timer = threading.Timer(0.3, redis_app.backend.store_result, (task_id, 42, states.SUCCESS))
    timer.start()
    try:
        assert result.get(timeout=10, interval=60) == 42  # interval=60: a poll would time out
    finally:
        timer.join()
        result.forget()
    assert redis_app.AsyncResult(task_id).state == states.PENDING


def test_failure_propagates_or_is_returned_with_its_traceback(redis_app, unique):
    task_id = f"id-{unique}"
    redis_app.backend.store_result(task_id, ZeroDivisionError("division by zero"),
                                   states.FAILURE, traceback="Traceback (most recent call last):")
    result = redis_app.AsyncResult(task_id)
    assert result.failed() and result.ready() and not result.successful()
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        result.get(timeout=1)
    assert isinstance(result.get(timeout=1, propagate=False), ZeroDivisionError)
    assert result.traceback.startswith("Traceback")
    result.forget()


def test_get_times_out_with_a_clear_error(redis_app, unique):
    with pytest.raises(TimeoutError, match=r"not ready after 0.2s"):
        redis_app.AsyncResult(f"never-{unique}").get(timeout=0.2)


def test_an_unserializable_result_is_stored_as_a_failure_that_says_so(redis_app, unique):
    task_id = f"id-{unique}"
    redis_app.backend.store_result(task_id, object(), states.SUCCESS)
    result = redis_app.AsyncResult(task_id)
    assert result.state == states.FAILURE
    with pytest.raises(BackendError, match="cannot be serialized with 'json'"):
        result.get(timeout=1)
    result.forget()


def test_extended_results_carry_name_and_arguments(redis_url, unique):
    app = App("results", broker="memory://", backend=redis_url, result_extended=True)
    request = TaskMessage(id=f"id-{unique}", task="tasks.add", args=(1, 2), kwargs={"k": 3})
    app.backend.store_result(request.id, 3, states.SUCCESS, request=request)
    result = app.AsyncResult(request.id)
    assert (result.args, result.kwargs, result.retries) == ([1, 2], {"k": 3}, 0)
    result.forget()
    app.close()


def test_sqlite_results_written_by_one_process_are_read_by_another(tmp_path):
    url = f"sqlite://{tmp_path / 'results.sqlite'}"
    code = (f"from qtui.core import App; App('w', broker='memory://', backend={url!r})"
            ".backend.store_result('t-1', [1, 2], 'SUCCESS')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    app = App("r", broker="memory://", backend=url)
    assert app.AsyncResult("t-1").get(timeout=5) == [1, 2]
    app.close()


def test_sqlite_results_expire(tmp_path):
    app = App("r", broker="memory://", backend=f"sqlite://{tmp_path / 'r.sqlite'}",
              result_expires=1)
    app.backend.store_result("t-1", 1, states.SUCCESS)
    assert app.AsyncResult("t-1").state == states.SUCCESS
    time.sleep(1.2)
    assert app.AsyncResult("t-1").state == states.PENDING
    app.backend.cleanup()
    app.close()


def test_sqlite_backend_refuses_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a database" * 100)
    app = App("r", broker="memory://", backend=f"sqlite://{path}")
    with pytest.raises(BackendError, match=r"cannot use .*notes.txt as a result store"):
        app.AsyncResult("x").state


class _LockedAtFirst:
    """A connection whose first switches to WAL meet a lock SQLite reports at once, as when
    another process opens the file at the same instant (seen in a suite run)."""

    def __init__(self, conn: sqlite3.Connection, refusals: list[int]) -> None:
        self.conn, self.refusals = conn, refusals

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "PRAGMA journal_mode=WAL" and self.refusals:
            self.refusals.pop()
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_sqlite_results_open_through_a_lock_met_at_once(tmp_path, monkeypatch):
    from qtui.core.backends import sqlite as backend
    refusals = [1, 1]
    connect = sqlite3.connect
    monkeypatch.setattr(backend.sqlite3, "connect",
                        lambda *a, **k: _LockedAtFirst(connect(*a, **k), refusals))
    app = App("r", broker="memory://", backend=f"sqlite://{tmp_path / 'r.sqlite'}")
    app.backend.store_result("t-1", 1, states.SUCCESS)
    assert (refusals, app.AsyncResult("t-1").get(timeout=5)) == ([], 1)
    app.close()


def test_sqlite_results_say_so_when_the_lock_stays(tmp_path, monkeypatch):
    from qtui.core.backends import sqlite as backend
    from qtui.core.brokers.sqlite import database
    refusals = [1] * 100
    connect = sqlite3.connect
    monkeypatch.setattr(database, "BUSY_BACKOFF", 0.001)
    monkeypatch.setattr(backend.sqlite3, "connect",
                        lambda *a, **k: _LockedAtFirst(connect(*a, **k), refusals))
    app = App("r", broker="memory://", backend=f"sqlite://{tmp_path / 'r.sqlite'}")
    with pytest.raises(BackendError, match=r"cannot use .* as a result store: database is locked"):
        app.backend.store_result("t-1", 1, states.SUCCESS)
    assert len(refusals) == 100 - database.BUSY_RETRIES


def test_unknown_backend_scheme_lists_the_known_ones():
    from qtui.core.exceptions import ImproperlyConfigured
    app = App("r", broker="memory://", backend="mongodb://localhost")
    with pytest.raises(ImproperlyConfigured, match="'mongodb':// is not supported"):
        app.backend


def test_rpc_results_come_back_to_the_sender(amqp_url, unique):
    app = App("rpc", broker=amqp_url, backend="rpc://", task_default_queue=f"rpc-{unique}")
    try:
        result = app.send_task("tasks.add", args=[1, 1])
        worker_side = App("worker", broker=amqp_url, backend="rpc://")
        request = TaskMessage(id=result.id, task="tasks.add", reply_to=app.backend.oid)
        worker_side.backend.store_result(result.id, 2, states.SUCCESS, request=request)
        assert result.get(timeout=10) == 2
        worker_side.close()
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(f"rpc-{unique}")
        app.close()


#: Messages no worker sends, to a client's rpc:// reply queue (its name is in every task's
#: ``reply_to``): (body, content type).
NOT_RESULTS = {"body-nested-5000-deep": ("[" * 5000 + "]" * 5000, "application/json"),
               "unknown-content-type": ("x", "application/x-nobody-knows")}


def result_past(url: str, unique: str, send_hostile: Callable[[App, str], None]) -> Any:
    """What ``get()`` returns for a task whose result (2) reaches the rpc:// reply queue after
    what ``send_hostile(app, task_id)`` sends there."""
    app = App("rpc", broker=url, backend="rpc://", task_default_queue=f"rpc-{unique}")
    try:
        result = app.send_task("tasks.add", args=[1, 1])
        send_hostile(app, result.id)
        worker_side = App("worker", broker=url, backend="rpc://")
        request_message = TaskMessage(id=result.id, task="tasks.add", reply_to=app.backend.oid)
        worker_side.backend.store_result(result.id, 2, states.SUCCESS, request=request_message)
        worker_side.close()
        return result.get(timeout=10)
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(f"rpc-{unique}")
        app.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("body, content_type", NOT_RESULTS.values(), ids=NOT_RESULTS)
@pytest.mark.parametrize("broker_name", ["redis", "rabbitmq"])
def test_an_rpc_reply_that_cannot_be_decoded_is_dropped_and_get_waits_for_the_result(
        broker_name, body, content_type, request, unique, caplog):
    url = request.getfixturevalue("redis_url" if broker_name == "redis" else "amqp_url")

    def send_hostile(app: App, task_id: str) -> None:
        with app.connection_for_write() as conn:
            Producer(conn.default_channel).publish(
                body, exchange="", routing_key=app.backend.oid, content_type=content_type,
                content_encoding="utf-8", correlation_id=task_id)

    assert result_past(url, unique, send_hostile) == 2
    assert any("Dropped a result message that cannot be decoded" in r.getMessage()
               for r in caplog.records)


@pytest.mark.timeout(60)
def test_an_rpc_reply_whose_amqp_headers_nest_thousands_deep_is_dropped(amqp_url, unique,
                                                                        caplog):
    def send_hostile(app: App, task_id: str) -> None:
        publish_amqp_raw(app.backend.oid, content_header(task_id, extra=DEEP_HEADERS),
                         b'{"status": "SUCCESS", "result": 3}')

    assert result_past(amqp_url, unique, send_hostile) == 2
    assert any("RecursionError" in r.getMessage() for r in caplog.records)


def test_a_crafted_result_cannot_make_get_raise_system_exit(redis_app, redis_url, unique):
    """A result anyone with Redis access can write: get() raises an Exception, so ``except
    Exception`` around it still holds (issue 14.15)."""
    task_id = f"id-{unique}"
    client = redis.Redis.from_url(redis_url)
    client.set(f"celery-task-meta-{task_id}", json.dumps({
        "status": "FAILURE", "result": {"exc_type": "SystemExit", "exc_module": "builtins",
                                        "exc_message": [0]},
        "traceback": None, "children": [], "date_done": None, "task_id": task_id}), ex=60)
    with pytest.raises(RemoteTaskError, match=r"builtins.SystemExit"):
        redis_app.AsyncResult(task_id).get(timeout=5)
    client.delete(f"celery-task-meta-{task_id}")


def _subscribers(app: App, channel: str) -> int:
    client = redis.Redis.from_url(app.backend.url)
    return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))


@pytest.fixture
def sending_app(redis_url, unique):
    """An app whose tasks go to a queue of the test's own on Redis (no worker takes them)."""
    app = App("sender", broker=redis_url, backend=redis_url, task_default_queue=f"qr-{unique}")
    yield app
    app.close()
    redis.Redis.from_url(redis_url).delete(f"qr-{unique}")


def _waited_before(app: App) -> None:
    """Make this thread one that has waited for a result (it keeps a subscriber connection)."""
    task_id = f"waited-{uuid.uuid4().hex}"
    app.backend.store_result(task_id, 1, states.SUCCESS)
    try:
        assert app.AsyncResult(task_id).get(timeout=10) == 1
    finally:
        app.AsyncResult(task_id).forget()


def test_a_task_sent_alone_is_subscribed_to_before_its_get(sending_app):
    """In a thread that has waited before, the SUBSCRIBE goes out before the task, without
    waiting: a ``get()`` right after finds it confirmed and reads the key at once (it
    subscribed itself, a round trip later, before)."""
    _waited_before(sending_app)
    result = sending_app.send_task("tasks.add", args=[2, 3])
    channel = f"celery-task-meta-{result.id}"
    assert wait_for(lambda: _subscribers(sending_app, channel) == 1, 5)
    App("worker-side", broker="memory://", backend=sending_app.backend.url).backend \
        .store_result(result.id, 5, states.SUCCESS)
    try:
        assert result.get(timeout=10) == 5
    finally:
        result.forget()


def test_a_get_keeps_its_subscription_until_the_next_send_lets_it_go_in_its_write(sending_app):
    """A ``get()`` that returned sends nothing more: its subscription goes in the write of the
    thread's next subscription (the next task sent, or the next ``get()``), so a round trip
    costs the thread one write fewer (main unsubscribed in a write of its own)."""
    _waited_before(sending_app)
    result = sending_app.send_task("tasks.add", args=[2, 3])
    channel = f"celery-task-meta-{result.id}"
    sending_app.backend.store_result(result.id, 5, states.SUCCESS)
    try:
        assert result.get(timeout=10) == 5
        time.sleep(0.2)
        assert _subscribers(sending_app, channel) == 1
        following = sending_app.send_task("tasks.add", args=[1, 1])
        assert wait_for(lambda: _subscribers(sending_app, channel) == 0, 5)
        assert wait_for(lambda: _subscribers(sending_app, f"celery-task-meta-{following.id}")
                        == 1, 5)
    finally:
        result.forget()


def test_a_client_that_sends_and_never_waits_keeps_one_subscription(sending_app):
    """Each send lets go of the previous send's subscription, and what those leave on the
    subscriber connection is read now and then: nothing piles up for a sender that never waits,
    and a later ``get()`` still works."""
    _waited_before(sending_app)
    results = [sending_app.send_task("tasks.add", args=[i, 1]) for i in range(250)]
    first, last = (f"celery-task-meta-{r.id}" for r in (results[0], results[-1]))
    assert wait_for(lambda: _subscribers(sending_app, last) == 1
                    and _subscribers(sending_app, first) == 0, 5)
    listener = sending_app.backend._listener()
    assert listener.sends <= EXPECTED_UNREAD_MAX  # what they left was read meanwhile
    sending_app.backend.store_result(results[5].id, 6, states.SUCCESS)
    try:
        assert results[5].get(timeout=10) == 6
    finally:
        results[5].forget()


def test_threads_that_only_send_keep_no_subscriber_connection(sending_app):
    """Short-lived threads that each send a task and never wait (a web server's request
    threads) open no pub/sub connection: none is left behind, one per thread, until the
    backend closes."""
    def send() -> None:
        sending_app.send_task("tasks.add", args=[1, 1])

    for _ in range(20):
        thread = threading.Thread(target=send)
        thread.start()
        thread.join(10)
    assert list(sending_app.backend._listeners) == []


def test_a_refused_command_of_the_result_write_raises_after_every_reply_is_read(
        redis_app, redis_url, unique):
    """The result write sends its commands in one go: an error reply is raised once the replies
    after it are read too, so the connection goes back to the pool clean."""
    backend, key = redis_app.backend, f"refused-{unique}"
    try:
        with pytest.raises(redis.ResponseError, match="not an integer"):
            backend._pipeline([("SET", key, "text"), ("INCR", key), ("APPEND", key, "!")])
        # the command after the refused one ran
        assert redis.Redis.from_url(redis_url).get(key) == b"text!"
        backend.store_result(f"id-{unique}", 1, states.SUCCESS)
        assert redis_app.AsyncResult(f"id-{unique}").get(timeout=5) == 1
    finally:
        redis.Redis.from_url(redis_url).delete(key, f"celery-task-meta-id-{unique}")


def test_a_threads_result_writes_keep_one_connection_given_back_when_the_thread_ends(
        redis_app, unique, monkeypatch):
    """Each thread writes its results on a connection of its own, kept from one write to the
    next: no checkout from redis-py's pool per result (a readiness poll, two locked updates and
    its metrics hooks on every task's path; main took one for every write). A thread that ends
    gives its connection back to the pool."""
    backend = redis_app.backend
    pool = backend.client.connection_pool
    checkouts: list[object] = []
    get_connection = pool.get_connection

    def counted() -> object:
        checkouts.append(get_connection())
        return checkouts[-1]

    monkeypatch.setattr(pool, "get_connection", counted)
    ids = [f"id-{unique}-{n}" for n in range(20)]

    def write() -> None:
        for task_id in ids:
            backend.store_result(task_id, 1, states.SUCCESS)

    try:
        thread = threading.Thread(target=write)
        thread.start()
        thread.join(30)
        assert len(checkouts) == 1
        assert wait_for(lambda: gc.collect() is not None
                        and checkouts[0] not in pool._in_use_connections, 5)
        assert redis_app.AsyncResult(ids[-1]).get(timeout=10) == 1
    finally:
        for task_id in ids:
            backend.forget(task_id)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("drop", ["restart", "idle timeout"])
def test_a_threads_kept_result_connection_dropped_by_the_server_still_stores_the_next_result(
        tmp_path, drop):
    """The connection a thread keeps for its result writes can be dropped by the server between
    two writes: Redis restarted, or its ``timeout`` for idle clients passed. The next result is
    stored all the same (a kept connection is not checked the way a pool checkout is: without a
    new connection the write failed and the worker acked a task whose result was lost)."""
    from .redis_server import redis_server, spare_port
    port = spare_port()
    extra = ("--timeout", "1") if drop == "idle timeout" else ()
    url = f"redis://127.0.0.1:{port}/0"
    app = App("kept", broker="memory://", backend=url)
    try:
        with redis_server(tmp_path, port, durable=False, extra=extra):
            app.backend.store_result("before", 1, states.SUCCESS)
            if drop == "idle timeout":
                time.sleep(2.5)  # the server closes the connection, idle for more than 1 s
                app.backend.store_result("after", 2, states.SUCCESS)
                assert redis.Redis.from_url(url).get("celery-task-meta-after") is not None
        if drop == "restart":
            with redis_server(tmp_path, port, durable=False):
                app.backend.store_result("after", 2, states.SUCCESS)
                assert redis.Redis.from_url(url).get("celery-task-meta-after") is not None
    finally:
        app.close()


@pytest.fixture
def private_app(tmp_path):
    """An app on a redis-server of the test's own, whose command counts nobody else moves."""
    from .redis_server import redis_server, spare_port
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        url = f"redis://127.0.0.1:{port}/0"
        app = App("private", broker=url, backend=url)
        yield app
        app.close()


def _gets(app: App) -> int:
    stats = redis.Redis.from_url(app.backend.url).info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def test_a_result_already_published_to_the_subscription_is_taken_without_reading_the_key(
        private_app):
    """Celery's Redis backend publishes the whole meta: a ``get()`` that finds the publication
    on its subscription (made when the task was sent) needs no ``GET`` (main read the key
    every time)."""
    _waited_before(private_app)
    result = private_app.send_task("tasks.add", args=[2, 3])
    private_app.backend.store_result(result.id, 5, states.SUCCESS)  # SET, then PUBLISH
    redis.Redis.from_url(private_app.backend.url).ping()  # the publication has gone out
    gets = _gets(private_app)
    assert result.get(timeout=10) == 5
    assert _gets(private_app) == gets


def test_a_result_stored_without_a_publication_is_still_found(private_app):
    """The key is read after the subscription took effect: a result that was stored but whose
    publication the subscription missed is found without waiting for a wake-up."""
    _waited_before(private_app)
    result = private_app.send_task("tasks.add", args=[2, 3])
    redis.Redis.from_url(private_app.backend.url).set(
        f"celery-task-meta-{result.id}",
        private_app.backend.encode(private_app.backend.make_meta(result.id, 5, states.SUCCESS)))
    assert result.get(timeout=3) == 5  # the wake-up re-read would come after 5 s


def test_get_connects_again_when_its_connection_is_lost_while_it_waits(private_app, unique):
    """The subscriber connection killed while ``get()`` waits: it connects again and
    subscribes again, and returns the result published then (main raised BackendError)."""
    result = private_app.AsyncResult(f"id-{unique}")
    channel = f"celery-task-meta-{result.id}"
    outcome: list[object] = []
    waiter = threading.Thread(target=lambda: outcome.append(_get_or_error(result)), daemon=True)
    waiter.start()
    try:
        assert wait_for(lambda: _subscribers(private_app, channel) == 1, 5)
        client = redis.Redis.from_url(private_app.backend.url)
        waiting = [c["id"] for c in client.client_list() if int(c["sub"]) == 1]
        assert len(waiting) == 1, waiting
        client.client_kill_filter(_id=waiting[0])
        assert wait_for(lambda: _subscribers(private_app, channel) == 1, 5), outcome
        private_app.backend.store_result(result.id, 5, states.SUCCESS)
    finally:
        waiter.join(10)
    assert outcome == [5]


def _get_or_error(result: object, timeout: float | None = 8) -> object:
    try:
        return result.get(timeout=timeout)  # type: ignore[attr-defined]
    except Exception as exc:  # the test compares what came back
        return exc


@dataclass
class _Waiting:
    app: App
    port: int
    channel: str
    waiter: threading.Thread
    outcome: list[object]


@contextmanager
def _get_while_redis_stops(tmp_path, unique: str, timeout: float | None) -> Iterator[_Waiting]:
    """A thread in ``get(timeout)`` on a private redis-server that is then stopped."""
    from .redis_server import redis_server, spare_port
    port = spare_port()
    url = f"redis://127.0.0.1:{port}/0"
    app = App("stopped", broker=url, backend=url)
    result = app.AsyncResult(f"id-{unique}")
    outcome: list[object] = []
    waiting = _Waiting(app, port, f"celery-task-meta-{result.id}", threading.Thread(
        target=lambda: outcome.append(_get_or_error(result, timeout)), daemon=True), outcome)
    try:
        with redis_server(tmp_path, port, durable=False):
            waiting.waiter.start()
            assert wait_for(lambda: _subscribers(app, waiting.channel) == 1, 5)
        yield waiting
    finally:
        app.close()


def test_get_waits_through_a_redis_restart(tmp_path, unique):
    """Redis stopped for about 2 s and started again on the same port while ``get(timeout=30)``
    waits: it keeps reconnecting, with pauses, and returns the result stored afterwards (main
    gave up after three refused connects in a few milliseconds)."""
    from .redis_server import redis_server
    with _get_while_redis_stops(tmp_path, unique, 30) as waiting:
        time.sleep(2)
        assert waiting.waiter.is_alive(), waiting.outcome
        with redis_server(tmp_path, waiting.port, durable=False):
            assert wait_for(lambda: _subscribers(waiting.app, waiting.channel) == 1, 10), \
                waiting.outcome
            waiting.app.backend.store_result(f"id-{unique}", 5, states.SUCCESS)
            waiting.waiter.join(15)
            assert waiting.outcome == [5]


def test_a_get_without_timeout_gives_up_once_redis_stays_away(tmp_path, unique, monkeypatch):
    """With no timeout, ``get()`` reconnects for ``RECONNECT_FOR`` seconds after the last
    connection that answered, then raises BackendError (it does not retry forever)."""
    from qtui.core.backends import redis as redis_backend
    monkeypatch.setattr(redis_backend, "RECONNECT_FOR", 1.5)
    with _get_while_redis_stops(tmp_path, unique, None) as waiting:
        waiting.waiter.join(20)
        assert len(waiting.outcome) == 1 and isinstance(waiting.outcome[0], BackendError), \
            waiting.outcome
        assert "lost Redis" in str(waiting.outcome[0])


def _client_count(app: App) -> int:
    return len(redis.Redis.from_url(app.backend.url).client_list())


def test_a_threads_subscriber_connection_closes_when_the_thread_ends(private_app):
    """50 short-lived threads that each wait for one result leave no connection behind (main
    kept one per thread until the app closed)."""
    import gc
    private_app.backend.store_result("done", 1, states.SUCCESS)
    before = _client_count(private_app)

    def get() -> None:
        assert private_app.AsyncResult("done").get(timeout=10) == 1

    for _ in range(50):
        thread = threading.Thread(target=get)
        thread.start()
        thread.join(10)
    gc.collect()
    assert wait_for(lambda: _client_count(private_app) <= before + 2, 5), \
        _client_count(private_app)


def test_a_get_waiting_when_the_backend_closes_raises_instead_of_reconnecting(private_app):
    """``close()`` while a thread waits: its ``get()`` raises a BackendError that says so, and
    no connection comes back (main reconnected silently)."""
    result = private_app.AsyncResult("never-stored")
    outcome: list[object] = []
    waiter = threading.Thread(target=lambda: outcome.append(_get_or_error(result)), daemon=True)
    waiter.start()
    assert wait_for(lambda: _subscribers(private_app, "celery-task-meta-never-stored") == 1, 5)
    private_app.backend.close()
    waiter.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], BackendError), outcome
    assert "closed" in str(outcome[0])
    assert _subscribers(private_app, "celery-task-meta-never-stored") == 0


def test_a_server_without_hello_is_polled_instead(tmp_path):
    """A Redis that refuses ``HELLO`` (RESP2 only): ``get()`` falls back to reading the key
    (main raised "unknown command 'HELLO'")."""
    from .redis_server import redis_server, spare_port
    port = spare_port()
    with redis_server(tmp_path, port, durable=False, extra=("--rename-command", "HELLO", "")):
        url = f"redis://127.0.0.1:{port}/0?protocol=2"
        app = App("resp2", broker=url, backend=url)
        try:
            app.backend.store_result("before", 1, states.SUCCESS)
            assert app.AsyncResult("before").get(timeout=10) == 1
            threading.Timer(0.3, app.backend.store_result, ("after", 2, states.SUCCESS)).start()
            assert app.AsyncResult("after").get(timeout=10) == 2
        finally:
            app.close()


def _subscriber_ids(app: App) -> list[str]:
    clients = redis.Redis.from_url(app.backend.url).client_list()
    return [c["id"] for c in clients if int(c["sub"]) or int(c.get("psub", 0))]


def test_a_get_that_times_out_keeps_the_threads_connection(private_app):
    """Timed-out ``get()``s unsubscribe and keep the connection (main dropped it and shook
    hands again every time): the same connection, and a later ``get()`` of another task still
    returns that task's result."""
    _waited_before(private_app)
    client = redis.Redis.from_url(private_app.backend.url)
    before = client.info("stats")["total_connections_received"]
    for _ in range(3):
        with pytest.raises(TimeoutError):
            private_app.AsyncResult("never-stored").get(timeout=0.2)
    assert client.info("stats")["total_connections_received"] == before
    private_app.backend.store_result("later", 7, states.SUCCESS)
    assert private_app.AsyncResult("later").get(timeout=10) == 7
    assert _subscribers(private_app, "celery-task-meta-never-stored") == 0
    assert len(_subscriber_ids(private_app)) == 1  # "later"'s, let go with the next one


def test_a_get_lets_go_of_the_subscription_made_when_another_task_was_sent(sending_app):
    """The thread's connection holds one subscription: a ``get()`` of another task unsubscribes
    the one made at send time (main held both while it waited)."""
    _waited_before(sending_app)
    sent = sending_app.send_task("tasks.add", args=[1, 1])
    channel = f"celery-task-meta-{sent.id}"
    assert wait_for(lambda: _subscribers(sending_app, channel) == 1, 5)
    other = sending_app.AsyncResult(f"other-{uuid.uuid4().hex}")
    seen: list[int] = []

    def look_then_store() -> None:  # while this thread's get() waits
        wait_for(lambda: _subscribers(sending_app, f"celery-task-meta-{other.id}") == 1, 5)
        seen.append(_subscribers(sending_app, channel))
        sending_app.backend.store_result(other.id, 3, states.SUCCESS)

    threading.Thread(target=look_then_store, daemon=True).start()
    try:
        assert other.get(timeout=10) == 3
        assert seen == [0]
    finally:
        other.forget()
