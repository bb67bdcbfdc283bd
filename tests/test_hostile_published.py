"""Anyone who can reach the broker can publish to the event and remote-control exchanges: a
message no kombu client would send (JSON nested thousands deep, an envelope of the wrong shape,
a body that is not base64, a content type nobody accepts) is dropped with a warning, and the
receiver -- the console's event feed, ``qtui events``, a worker's pidbox -- hears
the next message. On Redis every test publishes on a private redis-server: a hostile message
on the shared one would reach every receiver of the suite."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue
from kombu.pidbox import Mailbox

from qtui.core import App, control
from qtui.core.brokers import dropped
from qtui.core.control import UNDECODABLE
from qtui.core.events import EventReceiver, event_exchange
from qtui.tui.feed import Feed

from .hostile_shapes import NOT_ENVELOPES, UNDECODABLE_BODIES
from .redis_server import redis_server, spare_port
from .services import AMQP_HOST, AMQP_PORT, need
from .test_worker_hostile_amqp import DEEP_HEADERS, UNREADABLE, RawMessage, content_header
from .worker_helpers import hostname_of, make_setup, wait_for


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = spare_port()
    with redis_server(tmp_path_factory.mktemp("redis"), port, durable=False):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def every_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each drop logged, however close together (the tests publish many in a second)."""
    monkeypatch.setattr(dropped, "INTERVAL", 0.0)


def broker_url(broker: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The private Redis, an embedded broker in ``tmp_path``, or the machine's RabbitMQ."""
    if broker == "redis":
        url: str = request.getfixturevalue("private_redis")
        return url
    if broker == "sqlite":
        return f"sqlite://{tmp_path}/broker.sqlite"
    need("RabbitMQ", AMQP_HOST, AMQP_PORT)
    return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//"


@pytest.fixture(params=["redis", "sqlite"])
def fanout_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker whose fanout messages are kombu envelopes stored or published as JSON text."""
    return broker_url(request.param, request, tmp_path)


def publish_raw(url: str, exchange: str, routing_key: str, text: str) -> None:
    """``text`` published to fanout ``exchange`` as it is, where kombu would put an envelope."""
    if url.startswith("redis"):
        client = redis.Redis.from_url(url)
        topic = f"/0.{exchange}/{routing_key}" if routing_key else f"/0.{exchange}"
        assert client.publish(topic, text) >= 1
        client.close()
    else:
        with Connection(url) as conn:
            assert conn.default_channel.db.put_fanout(exchange, 0, text) >= 1


def publish_amqp_raw(queue: str, content_header: bytes, body: bytes) -> None:
    """``body`` sent to ``queue`` on RabbitMQ (the default exchange) with a content header
    written by hand."""
    conn = amqp.Connection(f"{AMQP_HOST}:{AMQP_PORT}", userid="guest", password="guest")
    conn.connect()
    try:
        conn.channel().basic_publish(RawMessage(body, content_header), exchange="",
                                     routing_key=queue)
    finally:
        conn.close()


def publish_event(url: str, body: Any, content_type: str = "application/json",
                  serializer: str | None = None) -> None:
    with Connection(url) as conn:
        exchange = event_exchange(conn)
        Producer(conn.default_channel).publish(
            body, exchange=exchange.name, routing_key="worker.heartbeat", declare=[exchange],
            serializer=serializer, content_type=None if serializer else content_type,
            content_encoding=None if serializer else "utf-8")


def good_event(url: str, hostname: str = "good") -> None:
    publish_event(url, {"type": "worker-heartbeat", "hostname": hostname}, serializer="json")


def next_event(receiver: EventReceiver) -> dict[str, Any] | None:
    return next(iter(receiver.events(timeout=10, limit=1)), None)


def event_from(receiver: EventReceiver, hostname: str) -> dict[str, Any] | None:
    """The first event from ``hostname``, past those of others: on the machine's RabbitMQ the
    ``celeryev`` exchange is shared with every worker and receiver of other tests."""
    return next((event for event in receiver.events(timeout=10)
                 if event.get("hostname") == hostname), None)


# the event receiver ------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", NOT_ENVELOPES.values(), ids=NOT_ENVELOPES)
def test_a_published_message_that_is_no_envelope_is_dropped_and_the_next_event_arrives(
        fanout_url, text, every_warning, caplog):
    with EventReceiver(App("t", broker=fanout_url), wakeup=False) as receiver:
        publish_raw(fanout_url, "celeryev", "task.multi", text)
        good_event(fanout_url)
        assert next_event(receiver) == {"type": "worker-heartbeat", "hostname": "good",
                                        "local_received": pytest.approx(time.time(), abs=60)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Dropped a message published to exchange 'celeryev'" in text  # Redis
               or "Dropped a message of queue 'celeryev." in text for text in warnings)  # SQLite


@pytest.mark.timeout(60)
def test_the_embedded_broker_keeps_no_dead_letters_of_an_event_receivers_queue(tmp_path):
    """The receiver's queue goes with it: a dead-letter queue of it would stay, read by nobody,
    for as long as the broker file."""
    url = f"sqlite://{tmp_path}/broker.sqlite"
    with EventReceiver(App("t", broker=url), wakeup=False) as receiver:
        for text in NOT_ENVELOPES.values():
            publish_raw(url, "celeryev", "task.multi", text)
        good_event(url)
        assert next_event(receiver) is not None
    with Connection(url) as conn:
        queues = [name for name, _, _ in conn.default_channel.db.list_queues()]
    assert not [name for name in queues if name.endswith(".dead")], queues


def test_the_embedded_broker_still_dead_letters_what_is_no_envelope_in_a_task_queue(tmp_path):
    url = f"sqlite://{tmp_path}/broker.sqlite"
    with Connection(url) as conn:
        channel = conn.default_channel
        channel.queue_declare("tasks", durable=True, auto_delete=False)
        channel.db.put("tasks", 0, NOT_ENVELOPES["not-an-object"])
        assert channel.basic_get("tasks") is None
        assert channel.db.size("tasks.dead") == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", ["redis", "sqlite", "rabbitmq"])
@pytest.mark.parametrize("body, content_type", UNDECODABLE_BODIES.values(),
                         ids=UNDECODABLE_BODIES)
def test_a_flood_of_undecodable_events_logs_one_warning_and_the_next_event_arrives(
        broker, body, content_type, request, tmp_path, caplog, unique):
    url = broker_url(broker, request, tmp_path)
    caplog.set_level(logging.WARNING)
    with EventReceiver(App("t", broker=url), wakeup=False) as receiver:
        for _ in range(3):
            publish_event(url, body, content_type)
        good_event(url, hostname=f"good-{unique}")
        assert event_from(receiver, f"good-{unique}") is not None
    dropped_lines = [r for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(dropped_lines) == 1 and dropped_lines[0].levelno == logging.WARNING


@pytest.mark.timeout(60)
def test_the_console_feed_neither_fails_nor_restarts_on_a_message_that_is_no_envelope(
        fanout_url, every_warning):
    feed = Feed(App("t", broker=fanout_url))
    snapshots: list[Any] = []
    thread = threading.Thread(target=feed.run, args=(snapshots.append, 0.1), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: bool(snapshots) and snapshots[-1].connected, timeout=15)
        for text in NOT_ENVELOPES.values():
            publish_raw(fanout_url, "celeryev", "task.multi", text)
        publish_event(fanout_url, [{"type": "task-received", "uuid": "after-hostile",
                                    "hostname": "w1", "timestamp": time.time(), "clock": 1,
                                    "name": "tasks.add"}], serializer="json")
        assert wait_for(lambda: any(t.id == "after-hostile" for s in snapshots for t in s.tasks),
                        timeout=15)
        assert snapshots[-1].feed_failures == 0
    finally:
        feed.stop()
        thread.join(10)


@pytest.mark.timeout(60)
def test_qtui_events_prints_the_event_after_a_message_that_is_no_envelope(private_redis,
                                                                          tmp_path):
    client = redis.Redis.from_url(private_redis)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qtui.tui.cli", "-b", private_redis, "events", "--dump",
         "--json", "--count", "1"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_for(lambda: client.execute_command("PUBSUB", "NUMPAT") >= 1, timeout=20)
        for text in NOT_ENVELOPES.values():
            publish_raw(private_redis, "celeryev", "task.multi", text)
        good_event(private_redis, hostname="after-hostile")
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        client.close()
    assert proc.returncode == 0, err
    assert json.loads(out)["hostname"] == "after-hostile"
    assert "Dropped a message published to exchange 'celeryev'" in err
    assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_an_amqp_event_whose_headers_nest_thousands_deep_is_dropped_and_the_next_arrives(
        amqp_url, caplog, unique):
    """Sent to the receiver's own queue (the default exchange): no other receiver gets it."""
    caplog.set_level(logging.WARNING)
    with EventReceiver(App("t", broker=amqp_url), wakeup=False) as receiver:
        publish_amqp_raw(receiver.queue_name, content_header(unique, extra=DEEP_HEADERS),
                         b'{"type": "worker-heartbeat", "hostname": "deep"}')
        with Connection(amqp_url) as conn:
            Producer(conn.default_channel).publish(
                {"type": "worker-heartbeat", "hostname": f"good-{unique}"}, exchange="",
                routing_key=receiver.queue_name, serializer="json")
        assert event_from(receiver, f"good-{unique}") is not None
    assert any("Dropped an event that cannot be decoded" in r.getMessage()
               and "RecursionError" in r.getMessage() for r in caplog.records)


# the worker's pidbox -------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker", ["redis", "sqlite"])
def test_a_worker_answers_ping_after_hostile_broadcasts(broker, request, tmp_path, unique):
    """One pool (threads): the pidbox is read in the worker's main process, by the same code,
    whatever the pool, so solo and prefork are not repeated. Not on RabbitMQ: its
    ``celery.pidbox`` exchange is the one every worker of the suite listens on (the request
    with deep headers there goes to one worker's own queue, below)."""
    request.getfixturevalue("redis_url")  # the task records live in Redis
    url = broker_url(broker, request, tmp_path)
    with make_setup(tmp_path, f"qw-{unique}", url, None) as setup, \
            contextlib.closing(setup.app()) as app:
        with setup.worker("-P", "threads", "-c", "1") as proc:
            hostname = hostname_of(setup)
            for text in NOT_ENVELOPES.values():
                publish_raw(url, "celery.pidbox", "", text)
            with Connection(url) as conn:
                mailbox = app.control.mailbox(conn)
                for body, content_type in UNDECODABLE_BODIES.values():
                    Producer(conn.default_channel).publish(
                        body, exchange=mailbox.exchange, routing_key="",
                        declare=[mailbox.exchange], content_type=content_type,
                        content_encoding="utf-8")
            assert app.control.ping(destination=[hostname], timeout=10) == [
                {hostname: {"ok": "pong"}}]
            assert proc.poll() is None
            log = proc.log_path.read_text()
        assert "Dropped a remote-control message that cannot be decoded" in log
        assert ("Dropped a message published to exchange 'celery.pidbox'" in log  # Redis
                or "Dropped a message of queue" in log)  # SQLite
        assert "Traceback" not in log



@pytest.mark.timeout(120)
def test_a_worker_answers_ping_after_an_amqp_request_whose_headers_nest_thousands_deep(
        amqp_url, request, tmp_path, unique):
    """Sent to the worker's own pidbox queue (the default exchange): no other worker gets it."""
    request.getfixturevalue("redis_url")  # the task records live in Redis
    with make_setup(tmp_path, f"qw-{unique}", amqp_url, None) as setup, \
            contextlib.closing(setup.app()) as app:
        with setup.worker("-P", "threads", "-c", "1") as proc:
            hostname = hostname_of(setup)
            publish_amqp_raw(f"{hostname}.celery.pidbox",
                             content_header(unique, extra=DEEP_HEADERS), b"{}")
            assert app.control.ping(destination=[hostname], timeout=10) == [
                {hostname: {"ok": "pong"}}]
            assert proc.poll() is None
            log = proc.log_path.read_text()
        assert "Dropped a remote-control message that cannot be decoded" in log
        assert "Traceback" not in log


# the collection of control replies -----------------------------------------------------------
REPLY_EXCHANGE = "reply.celery.pidbox"


@pytest.mark.timeout(60)
def test_inspect_collects_replies_past_items_that_are_no_envelope(private_redis, every_warning,
                                                                   caplog):
    """On Redis replies come through a list any client can push to: what comes there while
    ``inspect ping`` collects is dropped with a warning, and the collection ends as usual."""
    client = redis.Redis.from_url(private_redis)
    pushed: list[str] = []

    def push_once_bound() -> None:  # into the reply queue ping binds, as it binds it
        deadline = time.monotonic() + 10
        while not pushed and time.monotonic() < deadline:
            for member in client.smembers("_kombu.binding.reply.celery.pidbox"):
                queue = member.decode().rsplit("\x06\x16", 1)[-1]
                client.lpush(queue, *NOT_ENVELOPES.values())
                pushed.append(queue)
            time.sleep(0.01)

    app = App("t", broker=private_redis)
    pusher = threading.Thread(target=push_once_bound)
    pusher.start()
    try:
        assert app.control.inspect(timeout=3).ping() is None
    finally:
        pusher.join()
        app.close()
        client.close()
    assert len(pushed) == 1
    assert sum(f"Dropped a message of queue {pushed[0]!r}" in r.getMessage()
               for r in caplog.records) == len(NOT_ENVELOPES)


def replying_after(monkeypatch: pytest.MonkeyPatch, url: str,
                   hostile: Callable[[Mailbox, str], None], hostname: str) -> None:
    """Each command the test sends gets, in its reply queue, what ``hostile`` publishes (given
    the command's mailbox and ticket), then ``hostname``'s pong: a reply as a worker sends it,
    without a worker on the shared ``celery.pidbox``."""
    publish = control._publish

    def publish_then_reply(mailbox: Mailbox, conn: Connection, message: dict[str, Any],
                           ticket: str | None, timeout: float, secret: bytes | None) -> None:
        publish(mailbox, conn, message, ticket, timeout, secret)
        assert ticket is not None
        hostile(mailbox, ticket)
        with Connection(url) as replier:
            Producer(replier.default_channel).publish(
                {hostname: {"ok": "pong"}}, exchange=REPLY_EXCHANGE,
                routing_key=mailbox.oid, headers={"ticket": ticket}, serializer="json")

    monkeypatch.setattr(control, "_publish", publish_then_reply)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["headers_nested_3000_deep", "content_type_not_utf8",
                                  "correlation_id_not_utf8"])
def test_an_amqp_reply_the_collection_cannot_read_is_dropped_and_the_workers_reply_kept(
        amqp_url, case, monkeypatch, every_warning, caplog, unique):
    """Headers nested thousands deep ended ``inspect`` with a RecursionError (a content type or
    correlation id that is not UTF-8, with a UnicodeDecodeError)."""
    hostname = f"fake-{unique}@here"

    def unreadable(mailbox: Mailbox, ticket: str) -> None:
        publish_amqp_raw(mailbox.reply_queue.name, content_header(ticket, **UNREADABLE[case]),
                         b"{}")

    replying_after(monkeypatch, amqp_url, unreadable, hostname)
    app = App("t", broker=amqp_url)
    try:
        assert app.control.inspect(destination=[hostname], timeout=10).ping() == {
            hostname: {"ok": "pong"}}
    finally:
        app.close()
    assert any("Dropped a remote-control reply that cannot be decoded" in r.getMessage()
               and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", ["redis", "sqlite", "rabbitmq"])
def test_undecodable_replies_neither_end_the_collection_nor_go_unsaid(
        broker, request, tmp_path, monkeypatch, every_warning, caplog, unique):
    """One with the command's ticket (anyone who saw the command has it) is shown as an error
    of its own and does not count as a worker's answer, which used to end the wait for the
    named workers before they answered; one without is dropped with a warning."""
    url = broker_url(broker, request, tmp_path)
    hostname = f"fake-{unique}@here"

    def undecodable(mailbox: Mailbox, ticket: str) -> None:
        with Connection(url) as conn:
            for body, content_type in UNDECODABLE_BODIES.values():
                for headers in ({"ticket": ticket}, {}):
                    Producer(conn.default_channel).publish(
                        body, exchange=REPLY_EXCHANGE, routing_key=mailbox.oid,
                        headers=headers, content_type=content_type, content_encoding="utf-8")

    replying_after(monkeypatch, url, undecodable, hostname)
    app = App("t", broker=url)
    try:
        replies = app.control.broadcast("ping", reply=True, destination=[hostname], timeout=10)
    finally:
        app.close()
    assert replies is not None and replies.by_worker()[hostname] == {"ok": "pong"}
    assert sorted(replies.by_worker()) == sorted(
        [hostname, *(f"{UNDECODABLE}{n}" for n in range(1, len(UNDECODABLE_BODIES) + 1))])
    assert sum("Dropped a remote-control reply that cannot be decoded" in r.getMessage()
               for r in caplog.records) == len(UNDECODABLE_BODIES)


@pytest.mark.timeout(90)
def test_qtui_inspect_prints_the_workers_reply_after_one_whose_headers_nest_thousands_deep(
        amqp_url, tmp_path, unique):
    """As an attacker would: the command read from the ``celery.pidbox`` fanout exchange (any
    client may bind a queue to it) names the reply queue's routing key and the ticket, and
    the hostile reply goes there ahead of the named worker's."""
    hostname = f"fake-{unique}@here"
    app = App("t", broker=amqp_url)
    commands: list[dict[str, Any]] = []
    with Connection(amqp_url) as conn:
        spy = Queue(f"spy-{unique}", app.control.mailbox.exchange, auto_delete=True)
        with Consumer(conn.default_channel, [spy], no_ack=True, accept=["json"],
                      callbacks=[lambda body, _: commands.append(body)]):
            proc = subprocess.Popen(
                [sys.executable, "-m", "qtui.tui.cli", "-b", amqp_url, "inspect", "ping",
                 "-d", hostname, "-t", "20"], cwd=tmp_path, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                deadline = time.monotonic() + 30
                while not any(c.get("destination") == [hostname] for c in commands) \
                        and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=1)
                command = next(c for c in commands if c.get("destination") == [hostname])
                reply_to, ticket = command["reply_to"], command["ticket"]
                with amqp.Connection(f"{AMQP_HOST}:{AMQP_PORT}", userid="guest",
                                     password="guest") as raw:
                    raw.channel().basic_publish(
                        RawMessage(b"{}", content_header(ticket, extra=DEEP_HEADERS)),
                        exchange=reply_to["exchange"], routing_key=reply_to["routing_key"])
                Producer(conn.default_channel).publish(
                    {hostname: {"ok": "pong"}}, exchange=reply_to["exchange"],
                    routing_key=reply_to["routing_key"], headers={"ticket": ticket},
                    serializer="json")
                out, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
    assert proc.returncode == 0, err
    assert f"{hostname}: OK" in out
    assert "Dropped a remote-control reply that cannot be decoded" in err
    assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_items_that_are_no_envelope_in_an_embedded_reply_queue_are_dropped(
        tmp_path, monkeypatch, every_warning, caplog, unique):
    """The embedded broker's counterpart of the Redis test above (it held up before too)."""
    url = f"sqlite://{tmp_path}/broker.sqlite"
    hostname = f"fake-{unique}@here"

    def not_envelopes(mailbox: Mailbox, ticket: str) -> None:
        with Connection(url) as conn:
            for text in NOT_ENVELOPES.values():
                conn.default_channel.db.put(mailbox.reply_queue.name, 0, text)

    replying_after(monkeypatch, url, not_envelopes, hostname)
    app = App("t", broker=url)
    try:
        assert app.control.ping(destination=[hostname], timeout=10) == [
            {hostname: {"ok": "pong"}}]
    finally:
        app.close()
    assert sum("Dropped a message of queue" in r.getMessage()
               for r in caplog.records) == len(NOT_ENVELOPES)
