"""Peeking into a queue and acting on one message, per broker family: Redis and the embedded
SQLite broker read without taking (the queue is byte-identical after), RabbitMQ takes and
requeues; delete and move one message; the dead letters of a real worker requeued to run again
with the same id and arguments and a fresh delivery count; messages sent by Celery's client.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from kombu import Connection, Queue

from qtui.core import App
from qtui.core import deadletters as dead
from qtui.core.brokers.amqp import queues as amqp_queues
from qtui.core.brokers.amqp.queues import (
    GET_PEEK,
    MANAGEMENT_PEEK,
    parse_management_messages,
)
from qtui.core.peek import PeekError
from qtui.core.protocol import (
    DEAD_QUEUE_HEADER,
    DEAD_REASON_HEADER,
    DELIVERIES_HEADER,
    SENT_AT_HEADER,
    sent_at_of,
)
from qtui.core.queues import inspector_for

from .processes import write_module
from .test_control import delete_queues
from .worker_helpers import TASKS, Setup, make_setup, wait_for

#: Redis database of this module's tests (allotted to it; flushed by nobody else).
REDIS_DB = 2


def send(app: App, queue: str, priorities: list[int]) -> list[str]:
    """One tasks.add a priority, args [i, i]; their ids in sending order."""
    return [app.send_task("tasks.add", args=[i, i], kwargs={"n": i}, queue=queue,
                          priority=priority).id
            for i, priority in enumerate(priorities)]


@pytest.fixture(params=["redis", "redis-prefixed", "sqlite", "rabbitmq"])
def family(request, tmp_path, unique) -> Iterator[tuple[str, App, str]]:
    """(family, client app, its queue) on each broker; ``redis-prefixed`` is Redis with the
    transport's ``global_keyprefix``, which kombu adds to some commands and not others."""
    options = {}
    if request.param.startswith("redis"):
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + f"/{REDIS_DB}"
        if request.param == "redis-prefixed":
            options = {"global_keyprefix": f"pfx-{unique}:"}
    elif request.param == "sqlite":
        url = f"sqlite://{tmp_path}/broker.sqlite"
    else:
        url = request.getfixturevalue("amqp_url")
    queue = f"pk-{unique}"
    names = (queue, f"{queue}.other")
    if request.param == "rabbitmq":  # declared, as a worker would: RabbitMQ drops the unrouted
        with Connection(url) as conn:
            for name in names:
                Queue(name, routing_key=name, durable=True)(conn.default_channel).declare()
    app = App("client", broker=url, task_default_queue=queue,
              broker_transport_options=options)
    yield request.param, app, queue
    app.close()
    if request.param != "sqlite":
        delete_queues(url, *names)
    if options:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"pfx-{unique}:*"):
            client.delete(key)


def snapshot(kind: str, app: App, queue: str) -> object:
    """The queue exactly as the broker stores it: every byte of every priority list (Redis),
    every column of every row (SQLite)."""
    url = app.broker_url
    if kind.startswith("redis"):
        client = redis.Redis.from_url(url)
        prefix = app.conf.broker_transport_options.get("global_keyprefix", "")
        return [client.lrange(f"{prefix}{key}", 0, -1) for key in
                [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)]]
    path = Path(url[len("sqlite://"):])
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM messages WHERE queue = ? ORDER BY id",
                          (queue,)).fetchall()


def test_peek_lists_waiting_messages_from_the_head_in_delivery_order(family):
    _kind, app, queue = family
    ids = send(app, queue, [0, 0, 0])
    with inspector_for(app) as inspector:
        page = inspector.peek(queue, 0, 10)
        assert [m.task_id for m in page.messages] == ids
        assert [m.position for m in page.messages] == [0, 1, 2]
        first = page.messages[0]
        assert (first.name, first.task.args, first.task.kwargs) == ("tasks.add", (0, 0), {"n": 0})
        assert [m.task_id for m in inspector.peek(queue, 1, 1).messages] == ids[1:2]


@pytest.mark.parametrize("compression", ["zlib", "bzip2", "lzma"])
def test_peek_reads_compressed_messages(family, compression):
    _kind, app, queue = family
    sent = app.send_task("tasks.add", args=[40, 2], queue=queue, compression=compression)
    with inspector_for(app) as inspector:
        (message,) = inspector.peek(queue).messages
    assert message.problem is None
    assert (message.task_id, message.task.args) == (sent.id, (40, 2))


def test_a_compressed_body_inflating_past_the_cap_is_not_read(family, monkeypatch):
    _kind, app, queue = family
    monkeypatch.setattr("qtui.core.peek.DEFAULT_MAX_BODY_SIZE", 1000)
    app.send_task("tasks.add", args=["x" * 2000, 2], queue=queue, compression="zlib")
    with inspector_for(app) as inspector:
        (message,) = inspector.peek(queue).messages
    assert message.task is None and message.name == "tasks.add"
    assert message.problem == "decompressed body exceeds 1000 bytes (worker_max_body_size)"


def test_peek_follows_priorities_on_redis_and_sqlite(family):
    kind, app, queue = family
    if kind == "rabbitmq":
        pytest.skip("a classic RabbitMQ queue without x-max-priority keeps sending order")
    ids = send(app, queue, [9, 0, 3])
    with inspector_for(app) as inspector:
        assert [m.task_id for m in inspector.peek(queue).messages] == [ids[1], ids[2], ids[0]]
        assert [m.task_id for m in inspector.peek(queue, 1, 5).messages] == [ids[2], ids[0]]


def test_peeking_leaves_redis_and_sqlite_queues_byte_identical(family):
    kind, app, queue = family
    if kind == "rabbitmq":
        pytest.skip("RabbitMQ cannot read a message without taking it")
    send(app, queue, [0, 3, 9, 0])
    before = snapshot(kind, app, queue)
    with inspector_for(app) as inspector:
        assert len(inspector.peek(queue, 0, 100).messages) == 4
        assert inspector.summary(queue).sampled == 4
    assert snapshot(kind, app, queue) == before


def test_peeking_on_rabbitmq_requeues_every_message_in_place(family):
    kind, app, queue = family
    if kind != "rabbitmq":
        pytest.skip("RabbitMQ only")
    ids = send(app, queue, [0, 0, 0])
    with inspector_for(app) as inspector:
        page = inspector.peek(queue, 0, 2)
        assert page.method == GET_PEEK
        assert [m.task_id for m in page.messages] == ids[:2]
        assert [m.task_id for m in inspector.peek(queue, 0, 10).messages] == ids
        assert inspector.queues([queue])[0].messages == 3


def test_the_summary_counts_by_task_name_and_says_when_it_read_the_whole_queue(family):
    _kind, app, queue = family
    send(app, queue, [0, 0])
    app.send_task("tasks.other", queue=queue)
    with inspector_for(app) as inspector:
        summary = inspector.summary(queue)
    assert summary.counts == [("tasks.add", 2), ("tasks.other", 1)]
    assert summary.whole and "all 3 waiting" in summary.words()


def test_delete_one_message_leaves_the_others_in_order(family):
    _kind, app, queue = family
    ids = send(app, queue, [0, 0, 0])
    with inspector_for(app) as inspector:
        middle = inspector.peek(queue).messages[1]
        assert inspector.delete(queue, [middle]) == 1
        assert inspector.delete(queue, [middle]) == 0  # gone already: nothing else removed
        assert [m.task_id for m in inspector.peek(queue).messages] == [ids[0], ids[2]]


def test_move_one_message_to_the_back_of_another_queue(family):
    _kind, app, queue = family
    ids = send(app, queue, [0, 0])
    other = f"{queue}.other"
    (already,) = send(app, other, [0])
    with inspector_for(app) as inspector:
        first = inspector.peek(queue).messages[0]
        assert inspector.move(queue, [first], lambda m: other) == 1
        assert [m.task_id for m in inspector.peek(queue).messages] == [ids[1]]
        moved = inspector.peek(other).messages
    assert [m.task_id for m in moved] == [already, ids[0]]
    assert moved[1].task.args == (0, 0)


def test_a_moved_message_is_dated_from_the_move_not_its_first_publish(family):
    _kind, app, queue = family
    other = f"{queue}.other"
    an_hour_ago = time.time() - 3600
    with app.connection_for_write() as conn:  # a message a qtui client stamped an hour ago
        conn.Producer().publish([[1, 1], {}, {}], exchange="", routing_key=queue,
                                serializer="json", headers={"task": "tasks.add", "id": "old",
                                                            SENT_AT_HEADER: an_hour_ago})
    with inspector_for(app) as inspector:
        (message,) = inspector.peek(queue).messages
        assert sent_at_of(message.headers) == an_hour_ago
        before_the_move = time.time()
        assert inspector.move(queue, [message], lambda m: other) == 1
        (moved,) = inspector.peek(other).messages
    assert moved.task_id == "old"
    assert (sent_at_of(moved.headers) or 0) >= before_the_move


def test_a_moved_message_keeps_the_publish_time_its_producer_gave_it(family):
    """The ``timestamp`` property is the producer's, like the task id: a move keeps it (only
    qtui's ``x-qtui-sent-at``, the queue age, starts again)."""
    _kind, app, queue = family
    other = f"{queue}.other"
    an_hour_ago = int(time.time()) - 3600
    with app.connection_for_write() as conn:
        conn.Producer().publish([[1, 1], {}, {}], exchange="", routing_key=queue,
                                serializer="json", headers={"task": "tasks.add", "id": "old"},
                                timestamp=an_hour_ago)
    with inspector_for(app) as inspector:
        (message,) = inspector.peek(queue).messages
        assert inspector.move(queue, [message], lambda m: other) == 1
        (moved,) = inspector.peek(other).messages
    assert _seconds(moved.properties.get("timestamp")) == an_hour_ago


def test_a_moved_message_with_expires_may_wait_the_time_it_had_left(family):
    """Its ``expiration`` is milliseconds as text; kombu's publish takes seconds: the copy
    RabbitMQ gets carries the time left of ``expires``."""
    _kind, app, queue = family
    other = f"{queue}.other"
    sent = app.send_task("tasks.add", args=[1, 1], queue=queue, expires=60).id
    with inspector_for(app) as inspector:
        (message,) = inspector.peek(queue).messages
        assert inspector.move(queue, [message], lambda m: other) == 1
        (moved,) = inspector.peek(other).messages
    assert moved.task_id == sent
    assert 0 < float(moved.properties["expiration"]) <= 60_000


def _seconds(timestamp: object) -> object:
    """py-amqp reads the AMQP ``timestamp`` property as a datetime; kombu's virtual transports
    keep the number sent."""
    return int(timestamp.timestamp()) if isinstance(timestamp, datetime) else timestamp


def test_moving_to_a_queue_rabbitmq_does_not_have_is_refused_and_loses_nothing(family):
    kind, app, queue = family
    if kind != "rabbitmq":
        pytest.skip("Redis lists and SQLite rows make the queue")
    ids = send(app, queue, [0])
    with inspector_for(app) as inspector:
        message = inspector.peek(queue).messages[0]
        with pytest.raises(PeekError, match="no queue"):
            inspector.move(queue, [message], lambda m: f"{queue}.nowhere")
        assert [m.task_id for m in inspector.peek(queue).messages] == ids


def test_a_rabbitmq_move_to_a_queue_deleted_after_the_check_leaves_the_message(
        family, monkeypatch):
    kind, app, queue = family
    if kind != "rabbitmq":
        pytest.skip("Redis lists and SQLite rows make the queue")
    other = f"{queue}.other"
    ids = send(app, queue, [0])
    exists = amqp_queues.queue_exists

    def exists_then_deleted(connection, name):  # someone deletes it between check and publish
        found = exists(connection, name)
        delete_queues(app.broker_url, name)
        return found
    monkeypatch.setattr(amqp_queues, "queue_exists", exists_then_deleted)
    with inspector_for(app) as inspector:
        message = inspector.peek(queue).messages[0]
        with pytest.raises(PeekError, match="stays in"):
            inspector.move(queue, [message], lambda m: other)
        assert [m.task_id for m in inspector.peek(queue).messages] == ids


def test_a_management_api_get_answer_reads_as_messages():
    body = json.dumps([[1, 2], {}, {}]).encode()
    found = parse_management_messages([{
        "payload": base64.b64encode(body).decode(), "payload_encoding": "base64",
        "redelivered": False, "properties": {
            "content_type": "application/json", "content_encoding": "utf-8",
            "correlation_id": "abc", "headers": {"task": "tasks.add", "id": "abc"}}}])
    assert [(m.task_id, m.name, m.task.args) for m in found] == [("abc", "tasks.add", (1, 2))]


def test_requeueing_forgets_the_results_of_the_dead_letters_moved_and_no_others(
        family, redis_url):
    kind, app, queue = family
    dead_queue = f"{queue}.dead"
    results = App("results", backend=redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}")
    ids = [f"{queue}-requeued", f"{queue}-gone"]
    for task_id in ids:
        results.backend.store_result(task_id, "boom", "FAILURE")
    with app.connection_for_write() as conn:  # what a worker dead-letters
        if kind == "rabbitmq":
            Queue(dead_queue, routing_key=dead_queue, durable=True)(conn.default_channel).declare()
        for task_id in ids:
            conn.Producer().publish([[], {}, {}], exchange="", routing_key=dead_queue,
                                    serializer="json",
                                    headers={"task": "tasks.add", "id": task_id,
                                             DEAD_QUEUE_HEADER: queue})
    try:
        with inspector_for(app) as inspector:
            letters = dead.read(inspector, dead_queue)
            requeued, gone = sorted(letters, key=lambda m: ids.index(m.task_id))
            assert inspector.delete(dead_queue, [gone]) == 1  # someone else took it meanwhile
            assert dead.requeue(inspector, dead_queue, [requeued, gone], results.backend) == 1
        assert results.AsyncResult(ids[0]).state == "PENDING"
        assert results.AsyncResult(ids[1]).state == "FAILURE"
    finally:
        for task_id in ids:
            results.backend.forget(task_id)
        results.close()
        delete_queues(app.broker_url, dead_queue)


# dead letters with a real worker ------------------------------------------------------------
FAIL_ONCE = """

@app.task
def fail_once(tag):
    record("fail_once", tag=tag)
    if _redis.set(f"{KEY}:failed:{tag}", 1, nx=True):
        raise ValueError("the first time")
    return tag
"""


@pytest.fixture(params=["redis", "sqlite", "rabbitmq"])
def dead_setup(request, tmp_path, unique, redis_url) -> Iterator[Setup]:
    if request.param == "redis":
        broker = backend = redis_url
    elif request.param == "sqlite":
        broker, backend = f"sqlite://{tmp_path}/broker.sqlite", f"sqlite://{tmp_path}/r.sqlite"
    else:
        broker, backend = request.getfixturevalue("amqp_url"), redis_url
    # acks late, and a failure is not acked: the worker dead-letters a failed task
    setup = make_setup(tmp_path, f"qd-{unique}", broker, backend, task_acks_late=True,
                       task_acks_on_failure_or_timeout=False)
    write_module(tmp_path, "tasks", TASKS + FAIL_ONCE)
    yield setup
    setup.cleanup()
    redis.Redis.from_url(redis_url).delete(f"{setup.queue}:failed:x")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_a_requeued_dead_letter_runs_again_with_its_id_and_arguments(dead_setup: Setup,
                                                                     compression):
    app = dead_setup.app()
    name = f"{dead_setup.queue}.dead"
    with dead_setup.worker():
        result = app.send_task("tasks.fail_once", args=["x"], compression=compression)
        dead_setup.wait_records("fail_once", 1)
        with inspector_for(app) as inspector:
            letters = _wait_dead(inspector, name)
    (letter,) = letters
    assert letter.task_id == result.id and letter.task.args == ("x",)
    assert "the first time" in (letter.reason or "")
    assert letter.origin_queue == dead_setup.queue and letter.deliveries == 1
    with inspector_for(app) as inspector:
        assert name in dead.dead_queues(inspector, [dead_setup.queue])
        assert dead.requeue(inspector, name, letters, app.backend) == 1
        assert dead.read(inspector, name) == []
        (back,) = inspector.peek(dead_setup.queue).messages  # on RabbitMQ: flagged redelivered
    assert back.task_id == result.id and back.task.args == ("x",)
    for header in (DEAD_REASON_HEADER, DEAD_QUEUE_HEADER, DELIVERIES_HEADER):
        assert header not in back.headers  # its delivery count starts again
    assert app.AsyncResult(result.id).state == "PENDING"  # its failure is forgotten
    with dead_setup.worker():
        assert len(dead_setup.wait_records("fail_once", 2)) == 2
        assert wait_for(lambda: app.AsyncResult(result.id).state == "SUCCESS")
    assert app.AsyncResult(result.id).result == "x"
    app.close()


def _wait_dead(inspector, name: str) -> list:
    assert wait_for(lambda: dead.read(inspector, name), timeout=30)
    return dead.read(inspector, name)


# Celery's client ----------------------------------------------------------------------------
def test_messages_sent_by_celerys_client_peek_correctly(redis_url, unique):
    celery = pytest.importorskip("celery")
    queue = f"pk-celery-{unique}"
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    client = celery.Celery("client", broker=url)
    try:
        sent = client.send_task("reports.build", args=[1, "a"], kwargs={"k": [2]},
                                queue=queue, countdown=60)
        app = App("viewer", broker=url)
        with inspector_for(app) as inspector:
            (message,) = inspector.peek(queue).messages
        app.close()
    finally:
        client.close()
        delete_queues(url, queue)
    assert (message.task_id, message.name) == (sent.id, "reports.build")
    assert (message.task.args, message.task.kwargs) == ((1, "a"), {"k": [2]})
    assert message.task.eta is not None and message.problem is None


# the scripted commands ------------------------------------------------------------------------
def test_qtui_peek_reads_at_80_columns_and_as_json(redis_url, unique, capsys, monkeypatch):
    from qtui.tui.cli import main
    monkeypatch.setenv("COLUMNS", "80")
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    queue = f"pk-cli-{unique}"
    app = App("client", broker=url)
    (task_id,) = [app.send_task("tasks.add", args=[1, "x" * 100], queue=queue).id]
    try:
        assert main(["-b", url, "peek", queue]) == 0
        out = capsys.readouterr().out
        assert max(len(line) for line in out.splitlines()) <= 80
        assert task_id in out and "By task name (all 1 waiting): tasks.add 1" in out
        assert main(["-b", url, "peek", queue, "--json", "--filter", "name:tasks.add"]) == 0
        found = json.loads(capsys.readouterr().out)
        assert [m["id"] for m in found["messages"]] == [task_id]
        assert found["messages"][0]["args"] == [1, "x" * 100]
    finally:
        app.close()
        delete_queues(url, queue)


class FakeManagementGet:
    """A local HTTP server answering ``POST /api/queues/<vhost>/<queue>/get`` as RabbitMQ's
    management API does (the plugin is not enabled on the test machine)."""

    def __init__(self, messages: list[dict]) -> None:
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                payload = json.dumps(messages[:body["count"]]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://guest:guest@127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_with_the_management_api_a_peek_asks_for_a_get_that_requeues(amqp_url):
    messages = [{"payload": base64.b64encode(json.dumps([[i], {}, {}]).encode()).decode(),
                 "payload_encoding": "base64", "properties": {
                     "content_type": "application/json", "content_encoding": "utf-8",
                     "headers": {"task": "tasks.add", "id": f"id-{i}"}}} for i in range(5)]
    server = FakeManagementGet(messages)
    app = App("client", broker=amqp_url, broker_management_url=server.url)
    try:
        with inspector_for(app) as inspector:
            page = inspector.peek("reports", 2, 2)
    finally:
        app.close()
        server.close()
    assert page.method == MANAGEMENT_PEEK and "ack_requeue_true" in page.method
    assert [(m.position, m.task_id) for m in page.messages] == [(2, "id-2"), (3, "id-3")]
    path, body = server.requests[0]
    assert path == "/api/queues/%2F/reports/get"
    assert body == {"count": 4, "ackmode": "ack_requeue_true", "encoding": "base64"}


@pytest.mark.parametrize("unreadable", ["routing key", "content header"])
def test_a_rabbitmq_message_that_is_not_utf8_is_peeked_and_left_in_place(family, unreadable):
    """Another client's routing key or ``content_type`` that is not UTF-8 (a worker dead-letters
    such a message): a peek lists it among the others and requeues it, where py-amqp's decode
    raised out of the peek."""
    from .test_worker_hostile_amqp import content_header, publish_raw
    kind, app, queue = family
    if kind != "rabbitmq":
        pytest.skip("RabbitMQ only")
    first = send(app, queue, [0])
    odd = str(uuid.uuid4())
    if unreadable == "routing key":
        publish_raw(queue, content_header(odd), ["x"], routing_key=b"\xff\xfe")
    else:
        publish_raw(queue, content_header(odd, content_type=b"\xff\xfe"), ["x"])
    last = send(app, queue, [0])
    with inspector_for(app) as inspector:
        ids = [m.task_id for m in inspector.peek(queue, 0, 10).messages]
        assert ids == [*first, odd if unreadable == "routing key" else "", *last]
        assert inspector.queues([queue])[0].messages == 3


def test_deleting_a_rabbitmq_message_without_a_task_id_takes_that_one_not_another(family):
    """Two messages whose content headers cannot be read both peek with an empty task id:
    deleting the second must take the second (found by id and body), where finding it by task
    id alone took the first message with no id."""
    from .test_worker_hostile_amqp import content_header, publish_raw
    kind, app, queue = family
    if kind != "rabbitmq":
        pytest.skip("RabbitMQ only")
    for args in (["first"], ["second"]):
        publish_raw(queue, content_header(str(uuid.uuid4()), content_type=b"\xff\xfe"), args)
    last = send(app, queue, [0])
    with inspector_for(app) as inspector:
        messages = inspector.peek(queue, 0, 10).messages
        assert [m.task_id for m in messages] == ["", "", *last]
        assert inspector.delete(queue, [messages[1]]) == 1
        left = inspector.peek(queue, 0, 10).messages
    assert [json.loads(m.body)[0] for m in left] == [["first"], [0, 0]]


def test_a_rabbitmq_move_leaves_out_the_user_id_rabbitmq_checks_against_its_connection(family):
    """RabbitMQ refuses a publish whose ``user_id`` is not the connection's user, and the
    console may connect as another user than the sender: the moved copy carries none."""
    kind, app, queue = family
    if kind != "rabbitmq":
        pytest.skip("only RabbitMQ checks user_id")
    other = f"{queue}.other"

    def publish(conn: Connection, user_id: str) -> None:
        conn.Producer().publish([[1, 1], {}, {}], exchange="", routing_key=queue,
                                serializer="json", user_id=user_id,
                                headers={"task": "tasks.add", "id": user_id})
        conn.default_channel.queue_declare(queue, passive=True)  # a reply: any refusal comes

    with Connection(app.broker_url) as conn:  # the fixture connects as guest
        publish(conn, "guest")
    with Connection(app.broker_url) as conn, \
            pytest.raises(conn.channel_errors, match="PRECONDITION_FAILED"):
        publish(conn, "not-the-connections-user")
    with inspector_for(app) as inspector:
        (message,) = inspector.peek(queue).messages
        assert message.properties.get("user_id") == "guest"
        assert inspector.move(queue, [message], lambda m: other) == 1
        (moved,) = inspector.peek(other).messages
    assert moved.task_id == "guest" and "user_id" not in moved.properties
