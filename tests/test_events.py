"""Events: the dispatcher sends what Celery sends, the receiver reads Celery's stream (batches
expanded), and the state model follows a real Celery worker on Redis and RabbitMQ."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from celery import Celery
from celery.events.state import State as CeleryState
from celery.utils.time import adjust_timestamp
from celery.utils.time import utcoffset as celery_utcoffset
from kombu import Connection, Queue
from kombu.exceptions import OperationalError

from qtui.core import App, states
from qtui.core.events import (
    EVENT_QUEUE_EXPIRES,
    EVENT_QUEUE_TTL,
    EventDispatcher,
    EventReceiver,
    event_exchange,
    utcoffset,
)
from qtui.core.state import State

from .processes import running, stop
from .services import REDIS_HOST, REDIS_PORT, need
from .test_control import BROKERS, HOST, delete_queues, need_broker, start_celery


@pytest.fixture
def app(unique):
    app = App("client", broker="memory://", task_default_queue=f"q-{unique}")
    yield app
    app.close()


def raw_queue(conn: Connection, routing_key: str, name: str) -> Queue:
    """A plain queue on the event exchange, to look at what goes over the wire."""
    queue = Queue(name, exchange=event_exchange(conn), routing_key=routing_key)
    queue(conn.default_channel).declare()
    return queue


# the dispatcher -----------------------------------------------------------------------------------
def test_every_event_carries_what_celery_stamps_on_it(app):
    with EventReceiver(app, wakeup=False) as receiver, Connection("memory://") as conn:
        dispatcher = EventDispatcher(conn, hostname="worker@host")
        dispatcher.send("worker-heartbeat", {"freq": 2.0, "active": 0})
        dispatcher.send("worker-heartbeat", {"freq": 2.0, "active": 1})
        first, second = list(receiver.events(timeout=1))
    assert first["type"] == "worker-heartbeat" and first["hostname"] == "worker@host"
    assert {"utcoffset", "pid", "clock", "timestamp", "local_received"} <= set(first)
    assert second["clock"] > first["clock"] and second["active"] == 1


def test_the_routing_key_is_the_type_with_dots(app):
    with Connection("memory://") as conn:
        queue = raw_queue(conn, "worker.heartbeat", f"raw-{app.conf.task_default_queue}")
        EventDispatcher(conn, hostname="w@h").send("worker-heartbeat", {"freq": 2.0})
        message = queue(conn.default_channel).get(no_ack=True)
    assert message.delivery_info["routing_key"] == "worker.heartbeat"
    assert message.headers["hostname"] == "w@h"


def test_task_events_are_batched_as_task_multi(app):
    with Connection("memory://") as conn:
        queue = raw_queue(conn, "task.multi", f"raw-{app.conf.task_default_queue}")
        dispatcher = EventDispatcher(conn, hostname="w@h", buffer_group="task", buffer_limit=3)
        for n in range(3):
            dispatcher.send("task-received", {"uuid": f"t{n}", "name": "tasks.add"})
        message = queue(conn.default_channel).get(no_ack=True)
    assert [event["uuid"] for event in message.decode()] == ["t0", "t1", "t2"]


def test_the_receiver_expands_batches_into_events(app):
    with EventReceiver(app, wakeup=False) as receiver, Connection("memory://") as conn:
        dispatcher = EventDispatcher(conn, hostname="w@h", buffer_group="task", buffer_limit=10)
        dispatcher.send("task-received", {"uuid": "t1", "name": "tasks.add"})
        dispatcher.send("task-succeeded", {"uuid": "t1", "result": "3"})
        dispatcher.send("worker-heartbeat", {"freq": 2.0})  # not batched: arrives first
        dispatcher.flush()
        events = list(receiver.events(timeout=1))
    assert [e["type"] for e in events] == ["worker-heartbeat", "task-received", "task-succeeded"]
    assert all("local_received" in e for e in events)


def test_the_receiver_drops_what_is_not_an_event(app):
    with EventReceiver(app, wakeup=False) as receiver, Connection("memory://") as conn:
        exchange = event_exchange(conn)
        conn.Producer().publish([1, "x", {"no": "type"}, {"type": "worker-heartbeat"}],
                                exchange=exchange, routing_key="task.multi",
                                declare=[exchange], serializer="json")
        events = list(receiver.events(timeout=1))
    assert [e["type"] for e in events] == ["worker-heartbeat"]


@pytest.mark.parametrize("where", ["body", "headers"])
def test_the_receiver_skips_an_event_with_a_typed_value_kombu_cannot_build_and_goes_on(
        unique, where):
    """A crafted ``{"__type__": "bytes", "__value__": 1}`` fails kombu's decoder with an
    AttributeError; on Redis the whole published envelope is decoded by kombu's transport,
    whose loop it ended (the console stopped ingesting). Skipped, the next event comes."""
    need("redis", REDIS_HOST, REDIS_PORT)
    app = App("client", broker=f"redis://{REDIS_HOST}:{REDIS_PORT}/3")
    crafted = {"__type__": "bytes", "__value__": 1}
    with EventReceiver(app, wakeup=False, node_id=unique) as receiver, \
            Connection(app.conf.broker_url) as conn:
        exchange = event_exchange(conn)
        bad = {"type": "worker-heartbeat", "hostname": "bad@x", "x": crafted}
        for event, headers in ((bad, {}) if where == "body" else (bad, {"x": crafted}),
                               ({"type": "worker-heartbeat", "hostname": "good@x"}, {})):
            conn.Producer().publish(event, exchange=exchange, routing_key="worker.heartbeat",
                                    headers=headers, declare=[exchange], serializer="json")
        events = list(receiver.events(timeout=1))
    app.close()
    assert [e["hostname"] for e in events] == ["good@x"]


def test_events_stops_after_its_limit(app):
    with EventReceiver(app, wakeup=False) as receiver, Connection("memory://") as conn:
        dispatcher = EventDispatcher(conn, hostname="w@h")
        for _ in range(5):
            dispatcher.send("worker-heartbeat", {"freq": 2.0})
        assert len(list(receiver.events(limit=2))) == 2
        assert len(list(receiver.events(timeout=1))) == 3


def test_a_client_sends_task_sent_when_asked(app):
    app.conf.task_send_sent_event = True
    with EventReceiver(app, wakeup=False) as receiver:
        result = app.send_task("tasks.add", args=[1, 2], kwargs={"z": 3}, countdown=60)
        (event,) = list(receiver.events(timeout=1))
    assert event["type"] == "task-sent" and event["uuid"] == result.id
    assert (event["name"], event["args"], event["kwargs"]) == ("tasks.add", "(1, 2)", "{'z': 3}")
    assert event["queue"] == app.conf.task_default_queue and event["eta"] is not None
    assert event["hostname"].startswith("gen")


def test_a_task_sent_event_that_fails_does_not_make_a_sent_task_look_unsent(
        app, monkeypatch, caplog):
    app.conf.task_send_sent_event = True

    def broken(*args, **kwargs):
        raise OperationalError("the event exchange is gone")

    monkeypatch.setattr(app.events, "publish", broken)
    result = app.send_task("tasks.add", args=[1, 2])  # no error: the task went out
    with app.connection_for_write() as conn:
        message = conn.SimpleQueue(app.conf.task_default_queue).get(timeout=1)
    assert message.headers["id"] == result.id
    assert "was sent, but its task-sent event was not" in caplog.text


def test_no_task_sent_event_by_default(app):
    with EventReceiver(app, wakeup=False) as receiver:
        app.send_task("tasks.add", args=[1, 2])
        assert list(receiver.events(timeout=0.5)) == []


def test_the_event_exchange_is_fanout_on_redis_and_topic_elsewhere():
    assert event_exchange(Connection("redis://127.0.0.1:1/0")).type == "fanout"
    assert event_exchange(Connection("amqp://127.0.0.1:1//")).type == "topic"
    assert event_exchange(Connection("memory://")).type == "topic"


def test_the_receivers_queue_is_celerys(app):
    with EventReceiver(app, wakeup=False) as receiver:
        queue = receiver.queue
    assert queue.name.startswith("celeryev.") and queue.routing_key == "#"
    assert queue.auto_delete and not queue.durable
    assert (queue.message_ttl, queue.expires) == (EVENT_QUEUE_TTL, EVENT_QUEUE_EXPIRES) == (5, 60)
    assert queue.exchange.name == "celeryev"


# real brokers -------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_the_receivers_queue_goes_away_with_it_on_rabbitmq():
    broker = need_broker("rabbitmq")
    app = App("client", broker=broker)
    with EventReceiver(app, wakeup=False) as receiver:
        with Connection(broker) as conn:
            assert conn.channel().queue_declare(receiver.queue_name, passive=True)
    with Connection(broker) as conn, pytest.raises(conn.channel_errors, match=r"404|NOT_FOUND"):
        conn.channel().queue_declare(receiver.queue_name, passive=True)
    app.close()


def consume_until(receiver: EventReceiver, state: State, done: Callable[[], bool], what: str,
                  timeout: float = 60.0) -> None:
    """Feed the state batches of events until ``done()``."""
    deadline = time.monotonic() + timeout
    for batch in receiver.batches(0.2, reconnect=False):
        state.ingest(batch)
        if done():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("broker_name", sorted(BROKERS))
def test_the_state_follows_a_real_celery_worker(broker_name, tmp_path, unique):
    """Online, a task sent by qtui that succeeds and one that fails, then offline."""
    broker = need_broker(broker_name)
    queue = f"ev-{unique}"
    hostname = f"celery-{queue}@{HOST}"
    app = App("client", broker=broker, task_default_queue=queue, task_send_sent_event=True)
    state = State()
    try:
        with EventReceiver(app) as receiver:
            with start_celery(tmp_path, broker, queue) as proc:
                consume_until(receiver, state,
                              lambda: any(w.hostname == hostname for w in state.alive_workers()),
                              "the worker online")
                assert state.workers[hostname].sw_ident == "py-celery"
                ok = app.send_task("tasks.add", args=[2, 3])
                bad = app.send_task("tasks.fail", args=["boom"])
                consume_until(receiver, state,
                              lambda: all(state.task(t.id) is not None and state.task(t.id).ready
                                          for t in (ok, bad)), "both tasks finished")
                stop(proc)
                consume_until(receiver, state, lambda: not state.workers[hostname].alive(),
                              "the worker offline")
    finally:
        app.close()
        delete_queues(broker, queue)
    added, failed = state.task(ok.id), state.task(bad.id)
    assert added.state == states.SUCCESS and added.result == "5"
    assert (added.name, added.args, added.worker, added.queue) == ("tasks.add", "(2, 3)",
                                                                   hostname, queue)
    assert added.client == app.events.hostname
    assert added.sent is not None and added.received is not None and added.started is not None
    assert failed.state == states.FAILURE and failed.exception == "ValueError('boom')"
    assert "ValueError: boom" in failed.traceback
    assert state.workers[hostname].offline
    assert {t.id for t in state.tasks_by_worker(hostname)} == {ok.id, bad.id}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("broker_name", sorted(BROKERS))
def test_a_new_receiver_wakes_the_workers_up(broker_name, tmp_path, unique):
    """Celery answers the receiver's heartbeat command with a heartbeat of freq 5, unlike its
    regular ones (freq 2): seeing it proves the wake-up reached the worker and came back."""
    broker = need_broker(broker_name)
    queue = f"wake-{unique}"
    hostname = f"celery-{queue}@{HOST}"
    app = App("client", broker=broker)
    try:
        with start_celery(tmp_path, broker, queue), EventReceiver(app) as receiver:
            for event in receiver.events(timeout=30):
                if event["hostname"] == hostname and event["type"] == "worker-heartbeat" \
                        and event["freq"] == 5:
                    break
            else:
                pytest.fail("no heartbeat answered the wake-up")
    finally:
        app.close()
        delete_queues(broker, queue)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server(directory, port: int) -> Iterator:
    return running(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no"], directory, ready="Ready to accept connections")


@pytest.mark.timeout(120)
def test_the_receiver_comes_back_after_the_broker_restarts(tmp_path):
    need("Redis", REDIS_HOST, REDIS_PORT)  # the redis-server binary comes with the service
    port = free_port()
    app = App("client", broker=f"redis://127.0.0.1:{port}/0", broker_connection_timeout=1)
    receiver = EventReceiver(app, wakeup=False)
    batches = receiver.batches(0.2)
    try:
        with redis_server(tmp_path, port) as server:
            next(batches)
            assert receiver.connected
            stop(server)
            while receiver.connected:
                assert next(batches) == []
            assert receiver.error
        with redis_server(tmp_path, port):
            while not receiver.connected:
                next(batches)
            assert receiver.error == ""
            with Connection(app.broker_url) as conn:
                EventDispatcher(conn, hostname="w@h").send("worker-online", {"freq": 2.0})
            for batch in batches:
                if batch:
                    break
            assert [e["type"] for e in batch] == ["worker-online"]
    finally:
        receiver.close()
        app.close()


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
def test_utcoffset_is_what_celery_sends_so_its_receivers_place_our_events_right(
        zone, monkeypatch):
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert utcoffset() == celery_utcoffset()
        now = time.time()
        # A Celery receiver on the same host leaves our timestamp as it is.
        assert adjust_timestamp(now, utcoffset()) == now
    finally:
        monkeypatch.undo()
        time.tzset()


def test_an_events_utcoffset_is_the_hosts_at_its_time_across_a_dst_change(monkeypatch):
    """The dispatcher keeps the offset for the rest of the minute (a DST change falls on a whole
    minute): Paris went from UTC+1 to UTC+2 at 2026-03-29 01:00 UTC."""
    change = 1774746000.0
    clock = iter([change - 61, change - 0.5, change, change + 30])
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        dispatcher = EventDispatcher(hostname="w@h")
        monkeypatch.setattr(time, "time", lambda: next(clock))
        offsets = [dispatcher.event("worker-heartbeat", {})["utcoffset"] for _ in range(4)]
    finally:
        monkeypatch.undo()
        time.tzset()
    assert offsets == [-1.0, -1.0, -2.0, -2.0]


def test_a_flushed_batch_is_what_celerys_state_reads_as_a_workers_task_events(app):
    """The ``task.multi`` message, decoded as Celery's receiver decodes it, carries Celery's
    fields with their types, and Celery's own State follows the task through it."""
    with Connection("memory://") as conn:
        queue = raw_queue(conn, "task.multi", f"raw-{app.conf.task_default_queue}")
        dispatcher = EventDispatcher(conn, hostname="w@h", buffer_group="task", buffer_limit=10)
        dispatcher.send("task-received", {"uuid": "t1", "name": "tasks.add", "args": "(1, 2)",
                                          "kwargs": "{}", "retries": 0, "eta": None})
        dispatcher.send("task-started", {"uuid": "t1"})
        dispatcher.send("task-succeeded", {"uuid": "t1", "result": "3", "runtime": 0.25})
        dispatcher.flush()
        message = queue(conn.default_channel).get(no_ack=True)
    assert message.content_type == "application/json"
    events = message.decode()
    assert [e["type"] for e in events] == ["task-received", "task-started", "task-succeeded"]
    for event in events:
        assert (type(event["hostname"]), type(event["utcoffset"]), type(event["pid"]),
                type(event["clock"]), type(event["timestamp"])) == (str, float, int, int, float)
        assert event["pid"] == os.getpid() and event["utcoffset"] == utcoffset()
    assert [e["clock"] for e in events] == sorted({e["clock"] for e in events})
    state = CeleryState()
    for event in events:
        state.event({**event, "local_received": time.time()})  # as Celery's receiver adds it
    task = state.tasks["t1"]
    assert (task.state, task.name, task.args, task.result, task.runtime, task.hostname) == (
        "SUCCESS", "tasks.add", "(1, 2)", "3", 0.25, "w@h")


def test_a_forked_child_stamps_its_own_pid():
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, str(EventDispatcher(hostname="w@h").event("x", {})["pid"]).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        assert int(pipe.read()) == child


@pytest.mark.timeout(60)
def test_celerys_own_receiver_reads_a_workers_task_multi_batch_on_redis(unique):
    """What ``celery events`` and Flower run: Celery's EventReceiver, on Redis, reads our batch
    (compact JSON, encoded by the dispatcher) and its State follows the task."""
    need("redis", REDIS_HOST, REDIS_PORT)
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/3"
    celery_app = Celery("monitor", broker=url)
    seen: list[dict] = []

    def until_succeeded(event: dict) -> None:
        seen.append(event)
        receiver.should_stop = event["type"] == "task-succeeded"

    with celery_app.connection_for_read() as read:
        receiver = celery_app.events.Receiver(read, handlers={"*": until_succeeded},
                                              node_id=unique)
        listening = threading.Thread(target=receiver.capture,
                                     kwargs={"timeout": 30, "wakeup": False}, daemon=True)
        listening.start()
        with Connection(url) as conn:
            dispatcher = EventDispatcher(conn, hostname=f"w-{unique}@h", buffer_group="task",
                                         buffer_limit=10)
            deadline = time.monotonic() + 20
            while listening.is_alive() and time.monotonic() < deadline:  # until subscribed
                dispatcher.send("task-received", {"uuid": unique, "name": "tasks.add",
                                                  "args": "(1, 2)", "kwargs": "{}"})
                dispatcher.send("task-started", {"uuid": unique})
                dispatcher.send("task-succeeded", {"uuid": unique, "result": "3",
                                                   "runtime": 0.25})
                dispatcher.flush()
                listening.join(0.2)
        receiver.should_stop = True
        listening.join(5)
    state = celery_app.events.State()
    for event in seen:
        state.event(event)
    task = state.tasks[unique]
    assert (task.state, task.name, task.args, task.result, task.runtime, task.hostname) == (
        "SUCCESS", "tasks.add", "(1, 2)", "3", 0.25, f"w-{unique}@h")
