"""Sending tasks one at a time and many at once: what a broker stores is what kombu would have
stored, a bulk send reaches every broker whole and in order with a task-sent event per task,
a Celery worker runs what ``send_many`` and a group sent, and a batch that fails part way names
the tasks sent, in doubt and not sent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import redis

from qtui.core import App, sending
from qtui.core.brokers.redis.channel import Channel as RedisChannel
from qtui.core.brokers.sqlite.transport import Channel as SqliteChannel
from qtui.core.canvas import chunks, group, signature
from qtui.core.events import EventReceiver
from qtui.core.exceptions import SendFailed
from qtui.core.protocol import TaskMessage, build
from qtui.core.sending import Outgoing
from qtui.core.task import new_task_id

from .processes import celery_worker, write_module
from .services import REDIS_HOST, REDIS_PORT
from .tcp_proxy import SilentProxy
from .worker_helpers import broker_urls

BROKERS = ("redis", "rabbitmq", "sqlite")


def client(tmp_path: Path, broker: str, queue: str, **settings: Any) -> App:
    url, _ = broker_urls(broker, tmp_path)
    app = App("client", broker=url, backend=None, task_default_queue=queue, **settings)

    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    return app


def drain_ids(app: App, queue: str, count: int) -> list[str]:
    """The task ids waiting in ``queue``, oldest first (taken off the queue)."""
    ids = []
    with app.connection_for_read() as conn, conn.SimpleQueue(queue) as simple:
        for _ in range(count):
            message = simple.get(timeout=5)
            ids.append(message.headers["id"])
            message.ack()
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.2)
    return ids


@pytest.fixture
def fixed_wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every delivery tag and publish time fixed, so two sends of one message compare."""
    monkeypatch.setattr("qtui.core.brokers.envelope.new_id", lambda: "tag-1")
    monkeypatch.setattr("kombu.transport.virtual.base.uuid", lambda: "tag-1")
    monkeypatch.setattr("qtui.core.protocol.time.time", lambda: 1796046924.531227)
    yield


@pytest.mark.parametrize("broker", ["redis", "sqlite"])
@pytest.mark.parametrize("fields", [
    {},
    {"kwargs": {"y": "é\n"}, "priority": 5, "headers": {"h": 1}, "reply_to": "r",
     "eta": datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "callbacks": [{"task": "t"}]},
    {"kwargs": {"when": datetime(2030, 1, 2, tzinfo=timezone.utc), "amount": Decimal("1.5"),
                "id": UUID(int=7)}, "headers": {"at": datetime(2031, 1, 1)}},
    # Every option a template keeps or leaves open, and values that need escaping.
    {"kwargs": {"y": "é\n"}, "priority": 5, "reply_to": "r\"1", "shadow": "add 'é'",
     "eta": datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
     "expires": datetime(2030, 1, 3, 0, 0, 0, 500, tzinfo=timezone.utc), "retries": 2,
     "time_limit": 30, "soft_time_limit": 20.5, "root_id": "root\x01", "parent_id": "parent",
     "group": "g%s{0}", "group_index": 3, "ignore_result": True, "origin": "w@h %(x)s",
     "argsrepr": "(1, 'a\\b')", "replaced_task_nesting": 1},
])
def test_the_stored_envelope_is_byte_for_byte_what_kombu_stores(
        broker, fields, tmp_path, unique, fixed_wire):
    queue = f"env-{unique}"
    app = client(tmp_path, broker, queue)
    message = TaskMessage(id=new_task_id(), task="tasks.add", args=(1,), **fields)
    try:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_declare(queue)
            ours, kombus = ours_and_kombus(app, conn, queue, message)
        assert len(ours) == 1 and json.loads(ours[0])["headers"]["id"] == message.id
        assert ours == kombus
    finally:
        app.close()


def test_a_template_is_cut_for_each_kind_of_message(tmp_path, unique, fixed_wire):
    """Messages that differ only in what a template keeps (equal values written differently
    included: 1 and 1.0, 0.0 and -0.0, Decimal 1.5 and 1.50) each store what kombu stores,
    sent one after another on one channel."""
    queue = f"kinds-{unique}"
    app = client(tmp_path, "redis", queue)
    kinds: list[dict[str, Any]] = [
        {"time_limit": 1}, {"time_limit": 1.0}, {"time_limit": True}, {},
        {"priority": 3}, {"priority": 0}, {"retries": 1}, {"ignore_result": True},
        {"ignore_result": 1}, {"shadow": "s"}, {"reply_to": "r"}, {"origin": "o"},
        {"replaced_task_nesting": 2}, {"task": "tasks.other"},
        {"time_limit": 0.0}, {"time_limit": -0.0},
        {"soft_time_limit": Decimal("1.5")}, {"soft_time_limit": Decimal("1.50")},
    ]
    try:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_declare(queue)
            for fields in [*kinds, *kinds]:
                message = TaskMessage(**{"id": new_task_id(), "task": "tasks.add",
                                         "args": (1,), **fields})
                ours, kombus = ours_and_kombus(app, conn, queue, message)
                assert ours == kombus, fields
    finally:
        app.close()


@pytest.mark.parametrize("broker", ["redis", "sqlite"])
def test_a_batch_of_mixed_priorities_and_queues_stores_what_kombu_stores(
        broker, tmp_path, unique, fixed_wire):
    """One batch whose messages change queue and priority from one to the next: each queue
    (each of its priority lists on Redis) holds what kombu's publish of each stores."""
    queues = [f"mixa-{unique}", f"mixb-{unique}"]
    app = client(tmp_path, broker, queues[0])
    sends = [(0, None), (0, 6), (0, 6), (1, 9), (0, 3), (1, None), (0, 0), (0, 6), (1, 9)]
    messages = [(queues[q], TaskMessage(id=new_task_id(), task="tasks.add", args=(i,),
                                        priority=priority))
                for i, (q, priority) in enumerate(sends)]
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in queues:
                channel.queue_declare(queue)
            sending.send(app, [Outgoing(message, "", queue, None, "json")
                               for queue, message in messages])
            ours = [stored(channel, queue) for queue in queues]
            for queue in queues:
                channel.queue_purge(queue)
            for queue, message in messages:
                wire = build(message)
                conn.Producer().publish(
                    wire.body, exchange="", routing_key=queue, serializer="json",
                    headers=wire.headers, delivery_mode=2, **wire.properties)
            kombus = [stored(channel, queue) for queue in queues]
            for queue in queues:
                channel.queue_purge(queue)
        assert [len(texts) for texts in ours] == [6, 3]
        assert ours == kombus
    finally:
        app.close()


def ours_and_kombus(app: App, conn: Any, queue: str, message: TaskMessage
                    ) -> tuple[list[str], list[str]]:
    """What ``queue`` stores for ``message`` sent by qtui, then sent through kombu's own
    ``Producer.publish`` (as qtui sent it before); the queue is left empty."""
    channel = conn.default_channel
    sending.send(app, [Outgoing(message, "", queue, None, "json")])
    ours = stored(channel, queue)
    channel.queue_purge(queue)
    return ours, kombus_store(conn, queue, [message])


def kombus_store(conn: Any, queue: str, messages: list[TaskMessage]) -> list[str]:
    """What ``queue`` stores for ``messages`` sent through kombu's own ``Producer.publish``
    (as qtui sent them before); the queue is left empty."""
    for message in messages:
        wire = build(message)
        conn.Producer().publish(
            wire.body, exchange="", routing_key=queue, serializer="json",
            headers=wire.headers, delivery_mode=2, **wire.properties)
    kombus = stored(conn.default_channel, queue)
    conn.default_channel.queue_purge(queue)
    return kombus


@pytest.mark.parametrize("broker", ["redis", "sqlite"])
def test_a_task_whose_options_change_is_sent_with_the_new_ones(broker, tmp_path, unique):
    queue, other = f"first-{unique}", f"second-{unique}"
    app = client(tmp_path, broker, queue)
    add = app.tasks["tasks.add"]
    try:
        add.delay(1, 1)
        add.queue, add.time_limit = other, 9
        add.delay(2, 2)
        app.conf.task_routes = {"tasks.add": {"queue": queue}}
        add.queue = None
        add.delay(3, 3)
        with app.connection_for_read() as conn, conn.SimpleQueue(queue) as first, \
                conn.SimpleQueue(other) as second:
            sent = [first.get(timeout=5), second.get(timeout=5), first.get(timeout=5)]
            for message in sent:
                message.ack()
        assert [m.payload[0] for m in sent] == [[1, 1], [2, 2], [3, 3]]
        assert [m.headers["timelimit"] for m in sent] == [[None, None], [9, None], [9, None]]
        assert [m.delivery_info["routing_key"] for m in sent] == [queue, other, queue]
    finally:
        app.close()


def stored(channel: Any, queue: str) -> list[str]:
    """The raw text stored for each message of ``queue`` (every priority level)."""
    if isinstance(channel, RedisChannel):
        return [text.decode() for suffix in ("", *(f"{channel.sep}{p}" for p in (3, 6, 9)))
                for text in channel.client.lrange(queue + suffix, 0, -1)]
    assert isinstance(channel, SqliteChannel)
    rows = channel.db._read(lambda c: c.execute(
        "SELECT payload FROM messages WHERE queue = ? ORDER BY id", (queue,)).fetchall())
    return [row[0] for row in rows]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker", BROKERS)
def test_send_many_sends_every_task_once_and_in_order(broker, tmp_path, unique):
    queue = f"many-{unique}"
    app = client(tmp_path, broker, queue)
    add = app.tasks["tasks.add"]
    try:
        results = app.send_many([add.s(i, i) for i in range(1200)], batch_size=500)
        assert drain_ids(app, queue, 1200) == [r.id for r in results]
    finally:
        app.close()


@pytest.mark.parametrize("broker", ["redis", "sqlite"])
def test_a_batch_is_one_broker_call(broker, tmp_path, unique, monkeypatch):
    """send_many, a group and chunks: one call of the channel per batch."""
    queue = f"calls-{unique}"
    app = client(tmp_path, broker, queue)
    add = app.tasks["tasks.add"]
    channel = RedisChannel if broker == "redis" else SqliteChannel
    calls: list[int] = []
    put = channel.put_envelopes
    monkeypatch.setattr(channel, "put_envelopes",
                        lambda self, envelopes, deadline=None: (
                            calls.append(len(envelopes)), put(self, envelopes, deadline))[1])
    try:
        app.send_many([add.s(i, 1) for i in range(250)], batch_size=100)
        assert calls == [100, 100, 50]
        calls.clear()
        group(add.s(i, 2) for i in range(30)).apply_async()
        assert calls == [30]
        calls.clear()
        chunks(add.s(), [(i, 3) for i in range(40)], 10).apply_async()
        assert calls == [4]
        drain_ids(app, queue, 250 + 30 + 4)
    finally:
        app.close()


def test_a_redis_batch_to_one_queue_is_one_lpush_of_messages_published_at_one_time(
        tmp_path, unique, monkeypatch):
    """A batch to one queue and priority is one LPUSH of every message, in order (no script);
    one that changes priority goes through the script. The messages of a batch carry one
    publish time."""
    queue = f"push-{unique}"
    app = client(tmp_path, "redis", queue)
    add = app.tasks["tasks.add"]
    pushes: list[int] = []
    push = RedisChannel._push
    monkeypatch.setattr(RedisChannel, "_push", lambda self, key, payloads, deadline: (
        pushes.append(len(payloads)), push(self, key, payloads, deadline))[1])
    try:
        results = app.send_many([add.s(i, 1) for i in range(250)], batch_size=100)
        assert pushes == [100, 100, 50]
        with app.connection_for_read() as conn:
            texts = stored(conn.default_channel, queue)
        sent_at = [json.loads(text)["headers"]["x-qtui-sent-at"] for text in texts[::-1]]
        assert [len(set(sent_at[at:at + 100])) for at in (0, 100, 200)] == [1, 1, 1]
        assert drain_ids(app, queue, 250) == [r.id for r in results]
        pushes.clear()
        mixed = app.send_many([add.s(i, 2).set(priority=i % 2 * 9) for i in range(10)])
        assert pushes == []
        assert sorted(drain_ids(app, queue, 10)) == sorted(r.id for r in mixed)
    finally:
        app.close()


def test_nothing_is_sent_when_one_call_cannot_be_serialized(tmp_path, unique):
    queue = f"bad-{unique}"
    app = client(tmp_path, "sqlite", queue)
    add = app.tasks["tasks.add"]
    try:
        with pytest.raises(TypeError, match="cannot be serialized"):
            app.send_many([add.s(1, 1), add.s(object(), 1), add.s(2, 2)])
        drain_ids(app, queue, 0)
    finally:
        app.close()


def test_every_task_of_a_batch_gets_its_task_sent_event(tmp_path, unique):
    queue = f"sent-{unique}"
    app = client(tmp_path, "redis", queue, task_send_sent_event=True)
    add = app.tasks["tasks.add"]
    try:
        with EventReceiver(app, wakeup=False) as receiver:
            results = app.send_many([add.s(i, i) for i in range(120)], batch_size=50)
            events: list[dict[str, Any]] = []
            deadline = time.monotonic() + 10
            while len(events) < 120 and time.monotonic() < deadline:
                events += receiver.events(timeout=0.5)
        ids = {r.id for r in results}  # the event stream is Redis-wide: others' events too
        ours = [e for e in events if e["type"] == "task-sent" and e["uuid"] in ids]
        assert [e["uuid"] for e in ours] == [r.id for r in results]
        assert {e["queue"] for e in ours} == {queue}
        assert ours[7]["args"] == "(7, 7)"
        drain_ids(app, queue, 120)
    finally:
        app.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("retry", [True, False])
def test_a_broker_lost_mid_send_names_the_tasks_sent_in_doubt_and_unsent(
        retry, tmp_path, unique, monkeypatch):
    """The connection is cut as the second of three batches goes out: the first batch is in
    the queue, the error lists it as sent, the second as in doubt, the third as not sent
    (after the retries, or at once with retries off)."""
    queue = f"cut-{unique}"
    proxy = SilentProxy((REDIS_HOST, REDIS_PORT))
    app = App("client", broker=f"redis://127.0.0.1:{proxy.port}/0", backend=None,
              task_default_queue=queue, broker_connection_timeout=1,
              task_publish_retry=retry,
              task_publish_retry_policy={"max_retries": 1, "interval_start": 0,
                                         "interval_step": 0.1, "interval_max": 0.1})
    calls: list[int] = []
    put = RedisChannel.put_envelopes

    def cut_on_the_second_batch(self: RedisChannel, envelopes: Any,
                                deadline: float | None = None) -> None:
        calls.append(len(envelopes))
        if len(calls) == 2:
            proxy.close()
        put(self, envelopes, deadline)

    monkeypatch.setattr(RedisChannel, "put_envelopes", cut_on_the_second_batch)
    try:
        with pytest.raises(SendFailed) as failed:
            app.send_many([signature("tasks.add", i, i, app=app) for i in range(250)],
                          batch_size=100)
    finally:
        app.close()
        proxy.close()
    error = failed.value
    assert (len(error.sent), len(error.in_doubt), len(error.unsent)) == (100, 100, 50)
    assert error.unsent[0] in str(error) and error.in_doubt[0] in str(error)
    direct = redis.Redis(REDIS_HOST, REDIS_PORT)
    try:
        stored = [json.loads(m)["headers"]["id"] for m in direct.lrange(queue, 0, -1)]
    finally:
        direct.delete(queue)
    assert stored[::-1] == error.sent


CELERY_TASKS = """
import os

import redis
from celery import Celery

app = Celery("tasks", broker={broker!r})
app.conf.task_default_queue = {queue!r}
_records = redis.Redis.from_url({broker!r})

@app.task(name="tasks.add")
def add(x, y):
    _records.rpush({queue!r} + ":ran", x + y)
"""


@pytest.mark.timeout(180)
def test_a_celery_worker_runs_what_send_many_and_a_group_sent(tmp_path, unique):
    pytest.importorskip("celery")
    queue = f"celery-many-{unique}"
    broker, _ = broker_urls("redis", tmp_path)
    write_module(tmp_path, "tasks", CELERY_TASKS.format(broker=broker, queue=queue))
    app = client(tmp_path, "redis", queue)
    add = app.tasks["tasks.add"]
    records = redis.Redis.from_url(broker)
    try:
        app.send_many([add.s(i, 1000) for i in range(40)])
        group(add.s(i, 2000) for i in range(20)).apply_async()
        with celery_worker(tmp_path, "tasks", queue):
            deadline = time.monotonic() + 60
            while records.llen(f"{queue}:ran") < 60 and time.monotonic() < deadline:
                time.sleep(0.1)
        ran = sorted(int(v) for v in records.lrange(f"{queue}:ran", 0, -1))
        assert ran == sorted([i + 1000 for i in range(40)] + [i + 2000 for i in range(20)])
    finally:
        records.delete(f"{queue}:ran")
        app.close()


def test_arguments_that_do_not_fit_are_refused_after_ones_that_did(unique):
    """The check of a call's arguments remembers shapes that fit, never ones that do not."""
    app = App("client", broker="memory://", task_default_queue=f"fit-{unique}")

    @app.task(name="tasks.pair")
    def pair(x: int, y: int = 0) -> int:
        return x + y

    try:
        pair.delay(1, 2)
        pair.delay(1, y=2)
        for args, kwargs in (((1, 2, 3), {}), ((), {}), ((1,), {"z": 2}), ((1, 2), {"y": 3})):
            with pytest.raises(TypeError, match=r"tasks\.pair"):
                pair.apply_async(args, kwargs)
        pair.delay(3, 4)
    finally:
        app.close()


def test_a_batch_on_rabbitmq_is_confirmed_once(tmp_path, unique, monkeypatch):
    """Publisher confirms on (the default): each batch is published, then confirmed in one
    wait, rather than one wait per task."""
    from qtui.core.brokers import amqp

    queue = f"confirm-{unique}"
    app = client(tmp_path, "rabbitmq", queue)
    add = app.tasks["tasks.add"]
    batches: list[int] = []
    publish_confirmed = amqp.publish_confirmed

    def counted(connection: Any, batch: Any, timeout: float, confirmed: Any) -> list[int]:
        batches.append(len(batch))
        return publish_confirmed(connection, batch, timeout, confirmed)

    monkeypatch.setattr(amqp, "publish_confirmed", counted)
    try:
        results = app.send_many([add.s(i, i) for i in range(250)], batch_size=100)
        assert batches == [100, 100, 50]
        assert drain_ids(app, queue, 250) == [r.id for r in results]
    finally:
        app.close()


def test_publish_declares_every_entity_and_task_sent_names_the_queue(tmp_path, unique):
    """``App.publish(declare=[exchange, queue])``: both are declared (the task reaches the queue
    through the exchange), and task-sent names the queue, not the exchange listed first."""
    from kombu import Exchange, Queue

    queue = f"declared-{unique}"
    exchange = Exchange(f"x-{unique}", "direct")
    app = client(tmp_path, "redis", queue, task_send_sent_event=True)
    message = TaskMessage(id=new_task_id(), task="tasks.add", args=(1, 2))
    try:
        with EventReceiver(app, wakeup=False) as receiver:
            app.publish(message, exchange.name, "k",
                        declare=[exchange, Queue(queue, exchange, routing_key="k")])
            sent: list[dict[str, Any]] = []
            deadline = time.monotonic() + 10
            while not sent and time.monotonic() < deadline:
                sent = [e for e in receiver.events(timeout=0.5)
                        if e["type"] == "task-sent" and e["uuid"] == message.id]
        assert sent[0]["queue"] == queue and sent[0]["exchange"] == exchange.name
        assert drain_ids(app, queue, 1) == [message.id]
    finally:
        app.close()


def test_one_by_one_a_failure_leaves_only_the_message_being_sent_in_doubt(monkeypatch):
    """Where a batch goes message by message (here kombu's memory transport; Redis with a key
    prefix, topic exchanges, RabbitMQ without confirms), the ones published before the failure
    are sent, only the one being published is in doubt, the rest are not sent."""
    from kombu import Producer
    from kombu.exceptions import OperationalError

    app = App("client", broker="memory://", backend=None, task_default_queue="one-by-one")
    publish = Producer.publish
    published: list[str] = []

    def fail_on_the_fifth(self: Producer, body: Any, **options: Any) -> None:
        if len(published) == 4:
            raise OperationalError("connection lost")
        published.append(options["headers"]["id"])
        publish(self, body, **options)

    monkeypatch.setattr(Producer, "publish", fail_on_the_fifth)
    try:
        with pytest.raises(SendFailed) as failed:
            app.send_many([signature("tasks.add", i, i, app=app) for i in range(12)],
                          batch_size=8)
    finally:
        app.close()
    error = failed.value
    assert error.sent == published and len(error.sent) == 4
    assert len(error.in_doubt) == 1 and len(error.unsent) == 7
    assert "in doubt (the broker may have any of them): 1" in str(error)
    assert "all or none" not in str(error)


def test_a_drop_while_awaiting_confirms_counts_what_rabbitmq_confirmed_as_sent(
        tmp_path, unique, monkeypatch):
    """The connection fails after the first confirms came: those tasks are sent, the rest of
    the batch is in doubt (published, unconfirmed), the next batch is not sent."""
    from amqp import spec
    from amqp.channel import Channel

    queue = f"confirm-cut-{unique}"
    app = client(tmp_path, "rabbitmq", queue)
    add = app.tasks["tasks.add"]
    wait = Channel.wait

    def lost_after_the_first_confirm(self: Channel, method: Any = None, *args: Any,
                                     **kwargs: Any) -> Any:
        result = wait(self, method, *args, **kwargs)
        if method == [spec.Basic.Ack, spec.Basic.Nack]:
            raise ConnectionResetError("connection lost while awaiting confirms")
        return result

    monkeypatch.setattr(Channel, "wait", lost_after_the_first_confirm)
    calls = [add.s(i, i).set(task_id=new_task_id()) for i in range(150)]
    ids = [call["options"]["task_id"] for call in calls]
    try:
        with pytest.raises(SendFailed) as failed:
            app.send_many(calls, batch_size=100)
        monkeypatch.setattr(Channel, "wait", wait)
        error = failed.value
        assert error.sent and error.sent + error.in_doubt == ids[:100]
        assert error.unsent == ids[100:]
        assert "all or none" not in str(error)
        assert drain_ids(app, queue, 100) == ids[:100]  # the connection was fine after all
    finally:
        app.close()


@pytest.mark.timeout(60)
def test_an_out_of_memory_redis_part_way_names_what_it_stored_and_what_it_did_not(tmp_path):
    """Redis refuses a script out of memory before its first write: the batches before are
    sent, the refused one and the rest are not sent, nothing is in doubt."""
    from .redis_server import redis_server, spare_port

    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        direct = redis.Redis(port=port)
        direct.config_set("maxmemory", direct.info("memory")["used_memory"] + 2_000_000)
        app = App("client", broker=f"redis://127.0.0.1:{port}/0", backend=None,
                  task_default_queue="oom")
        try:
            with pytest.raises(SendFailed) as failed:
                app.send_many([signature("tasks.add", "x" * 4000, i, app=app)
                               for i in range(1000)], batch_size=50)
        finally:
            app.close()
        error = failed.value
        assert error.in_doubt == [] and error.sent and len(error.sent) % 50 == 0
        assert len(error.sent) + len(error.unsent) == 1000
        assert "maxmemory" in str(error) and "stored none of them" in str(error)
        stored = [json.loads(m)["headers"]["id"] for m in direct.lrange("oom", 0, -1)]
        assert stored[::-1] == error.sent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("queues", [1, 2])
def test_a_batch_whose_reply_was_lost_is_not_sent_again(queues, tmp_path, unique, monkeypatch):
    """Redis ran the batch's push (one LPUSH for a batch to one queue, the script for one to
    two) but its reply was lost with the connection: with retries on, the batch is not pushed
    a second time; it is named in doubt and every task is stored once."""
    from .test_worker_lost_fetch import LPUSH_MARKER, ReplyCutter

    queue = f"lost-reply-{unique}"
    names = [queue, f"{queue}-b"][:queues]
    cutter = ReplyCutter(REDIS_PORT, marker=LPUSH_MARKER if queues == 1 else b"EVALSHA",
                         empty_too=True)
    app = App("client", broker=f"redis://127.0.0.1:{cutter.port}/0", backend=None,
              task_default_queue=queue, task_publish_retry=True,
              task_publish_retry_policy={"max_retries": 3, "interval_start": 0,
                                         "interval_step": 0.1, "interval_max": 0.1})
    put = RedisChannel.put_envelopes
    calls: list[int] = []

    def arm_on_the_second_batch(self: RedisChannel, envelopes: Any,
                                deadline: float | None = None) -> None:
        calls.append(len(envelopes))
        if len(calls) == 2:
            cutter.armed.set()
        put(self, envelopes, deadline)

    monkeypatch.setattr(RedisChannel, "put_envelopes", arm_on_the_second_batch)
    direct = redis.Redis(REDIS_HOST, REDIS_PORT)
    try:
        with pytest.raises(SendFailed) as failed:
            # small batches: each script call reaches the proxy in one read
            app.send_many([signature("tasks.add", i, i, app=app).set(queue=names[i % queues])
                           for i in range(7)], batch_size=3)
        error = failed.value
        assert cutter.cut.is_set() and calls == [3, 3]
        assert (len(error.sent), len(error.in_doubt), len(error.unsent)) == (3, 3, 1)
        assert error.in_doubt[0] in str(error) and "all or none" in str(error)
        stored = [json.loads(m)["headers"]["id"] for name in names
                  for m in direct.lrange(name, 0, -1)]
        assert sorted(stored) == sorted(error.sent + error.in_doubt)  # each once
    finally:
        app.close()
        cutter.close()
        direct.delete(*names)


def test_a_rabbitmq_channel_error_part_way_is_a_send_failed_naming_what_was_sent(
        tmp_path, unique):
    """The second batch goes to an exchange that does not exist (RabbitMQ closes the channel,
    404): the error is a SendFailed, the first batch sent, the second not counted as sent."""
    queue = f"channel-error-{unique}"
    app = client(tmp_path, "rabbitmq", queue)
    add = app.tasks["tasks.add"]
    calls = [add.s(i, i) for i in range(5)] + [
        add.s(i, i).set(exchange=f"missing-{unique}", routing_key="x") for i in range(5)]
    try:
        with pytest.raises(SendFailed, match="NOT_FOUND") as failed:
            app.send_many(calls, batch_size=5)
        error = failed.value
        assert len(error.sent) == 5 and len(error.in_doubt) + len(error.unsent) == 5
        assert drain_ids(app, queue, 5) == error.sent
    finally:
        app.close()


# What a bulk send works out once per task and options (core/plans.py), and what stays each
# call's own: a plan kept too broadly would send one call with another's route or options.

def sent(app: App, queues: list[str], count: int) -> dict[str, dict[str, Any]]:
    """Every message waiting in ``queues`` (taken off them) by task id: its queue, headers,
    properties and raw stored text."""
    found: dict[str, dict[str, Any]] = {}
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in queues:
            for text in stored(channel, queue):
                payload = json.loads(text)
                found[payload["headers"]["id"]] = {"queue": queue, "text": text, **payload}
            channel.queue_purge(queue)
    assert len(found) == count
    return found


def test_a_batch_mixing_tasks_and_options_sends_each_call_with_its_own(tmp_path, unique):
    queue, other = f"mixed-{unique}", f"mixed-other-{unique}"
    app = client(tmp_path, "sqlite", queue)
    add = app.tasks["tasks.add"]

    @app.task(name="tasks.mul", time_limit=30, priority=2)
    def mul(x: int, y: int) -> int:
        return x * y

    calls = [add.s(1, 1), mul.s(2, 2), add.s(3, 3).set(queue=other, priority=7),
             add.s(4, 4).set(countdown=600), mul.s(5, 5).set(expires=60), add.s(6, 6),
             mul.s(7, 7).set(priority=0), add.s(8, 8).set(time_limit=5)]
    try:
        results = app.send_many(calls)
        by_id = sent(app, [queue, other], len(calls))
    finally:
        app.close()
    messages = [by_id[r.id] for r in results]
    assert [m["headers"]["task"] for m in messages] == [
        "tasks.add", "tasks.mul", "tasks.add", "tasks.add", "tasks.mul", "tasks.add",
        "tasks.mul", "tasks.add"]
    assert [m["queue"] for m in messages] == [queue, queue, other] + [queue] * 5
    assert [m["properties"]["priority"] for m in messages] == [0, 2, 7, 0, 2, 0, 0, 0]
    assert [m["headers"]["argsrepr"] for m in messages] == [
        f"({i}, {i})" for i in range(1, 9)]
    assert [m["headers"]["eta"] is not None for m in messages] == [
        False, False, False, True, False, False, False, False]
    assert [m["headers"]["expires"] is not None for m in messages] == [
        False, False, False, False, True, False, False, False]
    assert [m["headers"]["timelimit"] for m in messages] == [
        [None, None], [30, None], [None, None], [None, None], [30, None], [None, None],
        [30, None], [5, None]]
    assert len({r.id for r in results}) == len(calls)
    assert all(m["headers"]["root_id"] == m["headers"]["id"] for m in messages)


def test_options_equal_in_value_but_not_in_type_are_each_sent_as_given(tmp_path, unique):
    """``1``, ``1.0`` and ``True`` compare equal (as do ``0.0`` and ``-0.0``): each call's
    message still carries its own, as kombu would write it."""
    queue = f"types-{unique}"
    app = client(tmp_path, "sqlite", queue)
    limits: list[Any] = [1, 1.0, True, 1, 0.0, -0.0, 1.0]
    try:
        with app.sending_batch():
            results = [app.send_task("tasks.add", (i, i), time_limit=limit, priority=limit
                                     if type(limit) is int else None)
                       for i, limit in enumerate(limits)]
        by_id = sent(app, [queue], len(limits))
    finally:
        app.close()
    texts = [by_id[r.id]["text"] for r in results]
    assert ['"timelimit": [1, null]' in texts[0], '"timelimit": [1.0, null]' in texts[1],
            '"timelimit": [true, null]' in texts[2], '"timelimit": [1, null]' in texts[3],
            '"timelimit": [0.0, null]' in texts[4], '"timelimit": [-0.0, null]' in texts[5],
            '"timelimit": [1.0, null]' in texts[6]] == [True] * len(limits)


def test_a_router_that_reads_the_arguments_routes_each_call_of_a_batch(tmp_path, unique):
    even, odd = f"even-{unique}", f"odd-{unique}"

    def by_parity(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> Any:
        return {"queue": even if args[0] % 2 == 0 else odd}

    app = client(tmp_path, "sqlite", even, task_routes=[by_parity])
    add = app.tasks["tasks.add"]
    try:
        results = app.send_many([add.s(i, 0) for i in range(6)])
        grouped = group(add.s(i, 1) for i in range(6, 10)).apply_async()
        by_id = sent(app, [even, odd], 10)
    finally:
        app.close()
    ids = [r.id for r in results] + [r.id for r in grouped.results]
    assert [by_id[i]["queue"] for i in ids] == [even, odd] * 5


def test_a_change_of_configuration_or_task_options_mid_batch_reaches_the_next_call(
        tmp_path, unique):
    first, second, third = (f"{n}-{unique}" for n in ("first", "second", "third"))
    app = client(tmp_path, "sqlite", first)
    add = app.tasks["tasks.add"]
    try:
        with app.sending_batch():
            results = [add.delay(1, 1)]
            add.queue = second
            results.append(add.delay(2, 2))
            add.queue = None
            app.conf.task_routes = {"tasks.add": {"queue": third, "priority": 4}}
            results.append(add.delay(3, 3))
            results.append(app.send_task("tasks.add", (4, 4)))
            app.conf.task_routes = None
            results.append(add.delay(5, 5))
        by_id = sent(app, [first, second, third], 5)
    finally:
        app.close()
    messages = [by_id[r.id] for r in results]
    assert [m["queue"] for m in messages] == [first, second, third, third, first]
    assert [m["properties"]["priority"] for m in messages] == [0, 0, 4, 4, 0]


def test_a_task_s_own_expiry_and_limits_reach_every_call_that_gives_none(tmp_path, unique):
    """A task's ``expires`` is worked out per call (seconds from the send), not planned."""
    queue = f"own-{unique}"
    app = client(tmp_path, "sqlite", queue)

    @app.task(name="tasks.brief", expires=60, time_limit=7)
    def brief(x: int) -> int:
        return x

    try:
        results = [brief.delay(1), *app.send_many([brief.s(2), brief.s(3)]),
                   brief.apply_async((4,), countdown=1)]
        by_id = sent(app, [queue], 4)
    finally:
        app.close()
    messages = [by_id[r.id] for r in results]
    assert all(m["headers"]["expires"] is not None for m in messages)
    assert [m["headers"]["timelimit"] for m in messages] == [[7, None]] * 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", ["redis", "sqlite"])
def test_a_bulk_send_fills_each_call_into_its_template_without_building_its_message(
        broker, tmp_path, unique, fixed_wire, monkeypatch):
    """``send_many`` stores for each call what kombu stores for that call's message, and
    builds a message only to cut each kind's template (once per plan), not one per call."""
    queue = f"calls-{unique}"
    app = client(tmp_path, broker, queue)
    add = app.tasks["tasks.add"]
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    ids = [new_task_id() for _ in range(60)]
    calls = [add.s(i, "é\n\"%s").set(task_id=ids[i]) for i in range(30)] + [
        add.s(i, {"k": [i]}).set(task_id=ids[i], eta=eta, priority=3) for i in range(30, 60)]
    built: list[TaskMessage] = []
    for_call = TaskMessage.for_call
    monkeypatch.setattr(TaskMessage, "for_call",
                        lambda self, *call: built.append(self) or for_call(self, *call))
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            channel.queue_declare(queue)
            app.send_many(calls)
            assert len(built) == 2  # one per kind of message: no eta, and eta + priority
            ours = stored(channel, queue)
            channel.queue_purge(queue)
            kombus = kombus_store(conn, queue, [TaskMessage(
                id=sig.options["task_id"], task="tasks.add", args=tuple(sig.args),
                ignore_result=True, eta=sig.options.get("eta"),
                priority=sig.options.get("priority")) for sig in calls])
    finally:
        app.close()
    assert len(ours) == 60 and ours == kombus


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", ["redis", "sqlite"])
def test_delay_builds_a_message_only_for_the_first_call_of_each_kind(
        broker, tmp_path, unique, fixed_wire, monkeypatch):
    """Calls sent one at a time find their template on the send plan: a message is built for
    the first call of each priority (to cut its template), not for every call, and each call
    stores what kombu stores for its message, with the origin of the process sending it."""
    from qtui.core import protocol

    queue = f"delays-{unique}"
    app = client(tmp_path, broker, queue)
    add = app.tasks["tasks.add"]
    built: list[TaskMessage] = []
    for_call = TaskMessage.for_call
    monkeypatch.setattr(TaskMessage, "for_call",
                        lambda self, *call: built.append(self) or for_call(self, *call))
    origin = protocol.default_origin()
    sent: list[TaskMessage] = []  # what each call sent, as a message kombu is given below
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            channel.queue_declare(queue)
            for i in range(10):
                sent.append(TaskMessage(id=add.delay(i, "é\n\"%s").id, task="tasks.add",
                                        args=(i, "é\n\"%s"), origin=origin))
                sent.append(TaskMessage(id=add.apply_async((i, "x"), priority=3).id,
                                        task="tasks.add", args=(i, "x"), priority=3,
                                        origin=origin))
            assert len(built) == 2  # one per kind of message: no priority, and priority 3
            monkeypatch.setattr(protocol, "_origin", "gen1@forked")  # as in a forked child
            sent.append(TaskMessage(id=add.delay(20, "y").id, task="tasks.add", args=(20, "y"),
                                    origin="gen1@forked"))
            ours = stored(channel, queue)
            channel.queue_purge(queue)
            for message in sent:
                message.ignore_result = True
            kombus = kombus_store(conn, queue, sent)
    finally:
        app.close()
    assert len(ours) == 21 and sorted(ours) == sorted(kombus)


def test_sending_a_group_copies_no_member_signature(monkeypatch):
    """A group's ``apply_async`` sends each one-task member as it is, under the id the send
    gives it, without copying it to freeze the copy: the caller's group stays unfrozen."""
    from qtui.core import canvas

    app = App("client", broker="memory://", backend=None, task_default_queue="copies")

    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    members = group(add.s(i, i) for i in range(20))
    copied: list[str] = []  # the task of each signature copied

    def init(self: Any, task: Any, *args: Any, **kwargs: Any) -> None:
        copied.append(task if isinstance(task, str) else task.name)
        make(self, task, *args, **kwargs)

    make, signature_of = canvas.Signature.__init__, canvas.signature_of
    monkeypatch.setattr(canvas.Signature, "__init__", init)
    monkeypatch.setattr(canvas, "signature_of",
                        lambda value: copied.append(value["task"]) or signature_of(value))
    try:
        result = members.apply_async()
    finally:
        app.close()
    assert len(result.results) == 20
    assert members.id is None and all(m.id is None for m in members.tasks)
    assert copied.count("tasks.add") == 0


@pytest.mark.timeout(30)
def test_a_backend_that_overrides_on_task_call_hears_of_every_call(tmp_path: Path) -> None:
    from qtui.core.backends.sqlite import SQLiteBackend

    heard: list[str] = []

    class Listening(SQLiteBackend):
        def on_task_call(self, message: Any) -> None:
            heard.append(message.id)

    url = f"sqlite:///{tmp_path / 'results.db'}"
    app = App("hears-calls", broker="memory://", backend=url)

    @app.task(name="hears.add")
    def add(x: int) -> int:
        return x

    app._backends[url] = Listening(app, url)
    one = add.delay(1)
    many = app.send_many([add.s(2), add.s(3)])

    assert heard == [one.id, *(result.id for result in many)]


@pytest.mark.timeout(60)
def test_celerys_argsrepr_kwargsrepr_and_shadow_options_set_the_headers_of_every_send(
        tmp_path: Path) -> None:
    queue = f"send-many-reprs-{new_task_id()[:8]}"
    app = client(tmp_path, "sqlite", queue)
    add = app.tasks["tasks.add"]
    masked = {"argsrepr": "(<secret>,)", "kwargsrepr": "{'y': <secret>}", "shadow": "add-masked"}

    add.apply_async((1,), {"y": 2}, **masked)
    app.send_task("tasks.add", (1,), {"y": 2}, **masked)
    app.send_many([add.s(1, y=2).set(**masked), add.s(1, y=2)])
    app.send_many([add.s(1, y=2).set(**masked)])

    with app.connection_for_read() as conn, conn.SimpleQueue(queue) as simple:
        headers = []
        for _ in range(5):
            message = simple.get(timeout=5)
            headers.append({key: message.headers[key] for key in masked})
            message.ack()
    plain = {"argsrepr": "(1,)", "kwargsrepr": "{'y': 2}", "shadow": None}
    assert headers == [masked, masked, masked, plain, masked]


def test_a_group_sends_each_member_under_its_result_id_group_and_index(monkeypatch):
    """Each member goes out under the id its result has (a member frozen before keeps its
    own), with the group's id and its index and its own options; each send makes new ids."""
    app = App("client", broker="memory://", backend=None, task_default_queue="ids")

    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    sent: list[Any] = []
    monkeypatch.setattr(sending, "send", lambda _app, outgoing, *_: sent.extend(outgoing))
    frozen = add.s(1, 1)
    frozen.freeze()
    members = group([frozen, add.s(2, 2).set(countdown=60)])
    try:
        first, second = members.apply_async(queue="elsewhere"), members.apply_async()
    finally:
        app.close()
    messages = [outgoing.message for outgoing in sent]
    assert [m.id for m in messages] == [r.id for r in (*first.results, *second.results)]
    assert messages[0].id == messages[2].id == frozen.id
    assert messages[1].id != messages[3].id and first.id != second.id
    assert [(m.group, m.group_index) for m in messages] == [
        (first.id, 0), (first.id, 1), (second.id, 0), (second.id, 1)]
    assert [m.eta is not None for m in messages] == [False, True, False, True]
    assert [o.routing_key for o in sent] == ["elsewhere", "elsewhere", "ids", "ids"]


def test_a_call_giving_none_of_the_planned_options_is_kept_under_the_all_none_key():
    """A group member's options are its ids and index alone: its plan is the one kept for a
    call that gives every planned option as None."""
    from qtui.core.plans import PLANNED, plan_key

    own = {"task_id": "t", "group_id": "g", "group_index": 3, "countdown": None}
    assert plan_key("tasks.add", None, own) == plan_key(
        "tasks.add", None, {**dict.fromkeys(PLANNED), "group_index": 4})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", ["redis", "sqlite"])
def test_a_batch_whose_publish_timeout_is_spent_before_it_goes_out_is_not_sent(
        broker: str, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connecting and declaring took all of broker_publish_timeout: the batch is not pushed
    (to be given a moment for its reply and called in doubt though the broker stored it);
    every task is named not sent, none in doubt, and the queue holds none of them."""
    queue = f"spent-{unique}"
    app = client(tmp_path, broker, queue, broker_publish_timeout=0.2)
    try:
        app.send_many([signature("tasks.add", 0, 0, app=app)] * 2)
        declare = sending._declare

        def slow(*args: Any, **kwargs: Any) -> None:
            declare(*args, **kwargs)
            time.sleep(0.3)
        monkeypatch.setattr(sending, "_declare", slow)
        calls = [signature("tasks.add", i, i, app=app) for i in range(5)]
        with pytest.raises(SendFailed, match="was spent connecting") as failed:
            app.send_many(calls)
        assert (failed.value.sent, failed.value.in_doubt, len(failed.value.unsent)) == ([], [], 5)
        monkeypatch.setattr(sending, "_declare", declare)
        assert len(drain_ids(app, queue, 2)) == 2
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        app.close()
