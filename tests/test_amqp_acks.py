"""The worker's AMQP transport (qtui.core.brokers.amqp.transport): acks gathered over a turn go
out in as few frames as the deliveries still held allow, never acking one that is held, and
buffered reads deliver every frame whole, a bounded number per drain (nothing buffered over
TLS); acks early still go out before the task runs, gathered ones before the solo pool runs the
next task, and a task whose early ack cannot be sent waits again instead of being lost."""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from typing import Any

import pytest
from amqp.exceptions import RecoverableConnectionError
from amqp.transport import SSLTransport
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import ChannelError

from qtui.core import App
from qtui.core.brokers.amqp import transport as amqp_transport
from qtui.core.brokers.amqp.transport import (
    BufferedConnection,
    BufferedTCPTransport,
    WorkerChannel,
    WorkerTransport,
    ack_plan,
)
from qtui.core.queues import queue_exists
from qtui.workers.worker import Worker

from .services import AMQP_HOST, AMQP_PORT
from .tcp_proxy import SilentProxy
from .worker_helpers import REDIS_URL, make_setup, wait_for


# the plan (no broker) ------------------------------------------------------------------------
def test_finished_deliveries_below_every_held_one_are_acked_in_one_frame():
    assert ack_plan([1, 2, 3], {1, 2, 3, 4}) == (3, [])


def test_finished_deliveries_above_a_held_one_are_acked_one_by_one():
    assert ack_plan([1, 2, 4, 6], {1, 2, 3, 4, 5, 6}) == (2, [4, 6])


def test_one_finished_delivery_is_acked_alone():
    assert ack_plan([2], {1, 2}) == (None, [2])
    assert ack_plan([1], {1, 2}) == (None, [1])


def test_the_plan_never_covers_a_delivery_still_held_and_acks_every_finished_one():
    rng = random.Random(19)
    for _ in range(2000):
        unsettled = set(rng.sample(range(1, 40), rng.randint(1, 20)))
        tags = set(rng.sample(sorted(unsettled), rng.randint(1, len(unsettled))))
        upto, one_by_one = ack_plan(tags, unsettled)
        covered = {t for t in unsettled if upto is not None and t <= upto}
        assert covered <= tags, (tags, unsettled, upto)
        assert covered | set(one_by_one) == tags and not covered & set(one_by_one)


# buffered reads (no broker: a socket that hands over prepared bytes) ------------------------
HEARTBEAT = bytes([8, 0, 0, 0, 0, 0, 0, 0xCE])


def frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind, 0, 1]) + len(payload).to_bytes(4, "big") + payload + b"\xce"


def fed_transport(chunks: list[bytes]) -> BufferedTCPTransport:
    """A transport whose socket returns ``chunks`` one per ``recv``, then times out."""
    transport = BufferedTCPTransport("127.0.0.1:1")
    pending = list(chunks)

    def recv(size: int) -> bytes:
        if not pending:
            raise TimeoutError()
        return pending.pop(0)

    transport._quick_recv = recv
    return transport


def test_frames_split_anywhere_across_reads_are_read_whole_and_in_order():
    payloads = [b"", b"x", bytes(range(256)) * 300, b"y" * 70_000, b"z"]
    wire = b"".join(frame(3, payload) for payload in payloads)
    chunks = [wire[i:i + 997] for i in range(0, len(wire), 997)]  # splits headers and bodies
    transport = fed_transport(chunks)
    assert [transport.read_frame()[2] for _ in payloads] == payloads
    assert transport.buffered_frame() is None


def test_a_frame_cut_short_by_a_timeout_is_read_whole_once_the_rest_arrives():
    whole = frame(3, b"p" * 5000)
    transport = fed_transport([whole[:3000]])
    with pytest.raises(socket.timeout):
        transport.read_frame()
    transport._quick_recv = lambda size: whole[3000:]
    assert transport.read_frame() == (3, 1, b"p" * 5000)


def test_a_tls_connection_keeps_py_amqp_transport_and_its_drain_reads_nothing():
    """py-amqp's TLS transport has no read-ahead buffer: draining it must not fail (the worker
    would exit on its first drain) nor touch the socket."""
    connection = BufferedConnection(host="127.0.0.1:5671", ssl=True)
    transport = connection.Transport("127.0.0.1:5671", connect_timeout=1, ssl=True)
    assert isinstance(transport, SSLTransport)
    connection.transport = transport
    connection.on_inbound_frame = pytest.fail
    connection.drain_buffered(10)


def test_a_drain_of_buffered_frames_stops_after_about_the_prefetch_count_of_messages():
    """Acks sent while draining let the broker send more: an unbounded drain could keep the
    worker from its outcomes, timers and signals."""
    transport = fed_transport([HEARTBEAT * 100])
    transport.read_frame()  # the first read fills the buffer
    connection = BufferedConnection(host="127.0.0.1:1")
    connection.transport = transport
    delivered: list[Any] = []
    connection.on_inbound_frame = delivered.append
    connection.drain_buffered(2)
    assert len(delivered) == 6
    assert transport.buffered_frame() == (8, 0, b"")


# on RabbitMQ ---------------------------------------------------------------------------------
@pytest.fixture
def queue(amqp_url, unique) -> Any:
    queue = Queue(f"qa-{unique}", Exchange(f"qa-{unique}"), f"qa-{unique}")
    with Connection(amqp_url) as conn:
        queue(conn.default_channel).declare()
    yield queue
    with Connection(amqp_url) as conn:
        conn.default_channel.queue_delete(queue.name)
        conn.default_channel.exchange_delete(queue.name)


def publish(amqp_url: str, queue: Queue, bodies: list[bytes]) -> None:
    with Connection(amqp_url) as conn:
        producer = Producer(conn.default_channel)
        for body in bodies:
            producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                             serializer=None, content_type="application/data",
                             content_encoding="binary")


def receive_all(conn: Connection, channel: WorkerChannel, queue: Queue, count: int
                ) -> list[Any]:
    received: list[Any] = []
    consumer = Consumer(channel, [queue], no_ack=False, auto_declare=False,
                        on_message=received.append)
    consumer.consume()
    deadline = time.monotonic() + 15
    while len(received) < count and time.monotonic() < deadline:
        conn.drain_events(timeout=1)
    return received


def left_on(amqp_url: str, queue: Queue, expected: int) -> list[bytes]:
    """Bodies on ``queue`` (taken), once RabbitMQ has put back what a closed channel held."""
    with Connection(amqp_url) as conn:
        channel = conn.default_channel
        assert wait_for(lambda: channel.queue_declare(queue.name, passive=True).message_count
                        >= expected, 10)
        bodies = []
        while (message := channel.basic_get(queue.name, no_ack=True)) is not None:
            bodies.append(message.body)
        return bodies


@pytest.mark.timeout(60)
def test_acks_of_several_deliveries_leave_the_held_ones_with_the_broker(amqp_url, queue):
    publish(amqp_url, queue, [b"1", b"2", b"3", b"4", b"5"])
    with Connection(amqp_url, transport=WorkerTransport) as conn:
        channel = conn.channel()
        assert isinstance(channel, WorkerChannel)
        received = receive_all(conn, channel, queue, 5)
        tags = {m.body: m.delivery_tag for m in received}
        channel.ack_many([tags[b"1"], tags[b"2"], tags[b"4"]])
        assert channel.unsettled == {tags[b"3"], tags[b"5"]}
        received[2].ack()  # a delivery acked on its own (a dead letter, say) is settled too
        assert channel.unsettled == {tags[b"5"]}
    assert left_on(amqp_url, queue, 1) == [b"5"]


@pytest.mark.timeout(60)
def test_a_channel_the_broker_closed_and_py_amqp_reopened_holds_no_deliveries(amqp_url, queue):
    """py-amqp revives a channel the broker closed; its delivery tags start at 1 again, so
    tags held before must not be kept as held (an ack plan would rest on them)."""
    publish(amqp_url, queue, [b"1", b"2"])
    with Connection(amqp_url, transport=WorkerTransport) as conn:
        channel = conn.channel()
        receive_all(conn, channel, queue, 2)
        assert len(channel.unsettled) == 2
        with pytest.raises(ChannelError):
            channel.queue_declare(f"{queue.name}-missing", passive=True)
        assert channel.unsettled == set()
    assert sorted(left_on(amqp_url, queue, 2)) == [b"1", b"2"]


@pytest.mark.timeout(60)
def test_a_delivery_that_arrives_while_a_callback_waits_on_the_broker_runs_after_that_callback(
        amqp_url, queue):
    """A callback that waits on the broker (a dead letter's declare, the event check py-amqp
    makes before every publish) reads the connection, deliveries included: those run once it
    returns, in order, never inside it. Run inside it, a callback could get the outer one's
    404 (raised by whichever read takes the broker's channel.close), which ended it with its
    message neither run nor dead-lettered."""
    publish(amqp_url, queue, [b"1", b"2", b"3"])
    events: list[tuple[str, bytes]] = []
    with Connection(amqp_url, transport=WorkerTransport) as conn:
        channel = conn.channel()

        def on_message(message: Any) -> None:
            events.append(("start", message.body))
            # As a first dead letter does: a passive declare of a queue not made yet (the
            # broker closes that channel with 404), a publish, each waiting on the broker.
            assert not queue_exists(conn, f"{queue.name}.dead")
            Producer(channel).publish(b"x", exchange="", routing_key=f"{queue.name}.dead")
            message.ack()
            events.append(("end", message.body))

        consumer = Consumer(channel, [queue], no_ack=False, auto_declare=False,
                            on_message=on_message)
        consumer.consume()
        deadline = time.monotonic() + 15
        while len(events) < 6 and time.monotonic() < deadline:
            conn.drain_events(timeout=1)
        assert channel.unsettled == set()
    assert events == [(step, body) for body in (b"1", b"2", b"3") for step in ("start", "end")]
    assert left_on(amqp_url, queue, 0) == []


@pytest.mark.timeout(60)
def test_a_reply_that_never_comes_ends_the_wait_as_a_lost_connection(queue, monkeypatch):
    """A declare (a dead letter's, say) on a connection gone silent used to wait for ever, the
    worker stalled with what it held: past the reply timeout it is a lost connection, which the
    worker reconnects from (and the broker gives back what it held)."""
    monkeypatch.setattr(amqp_transport, "REPLY_TIMEOUT", 1.0)
    proxy = SilentProxy((AMQP_HOST, AMQP_PORT))
    conn = Connection(f"amqp://guest:guest@127.0.0.1:{proxy.port}//", transport=WorkerTransport)
    outcome: list[Any] = []

    def declare() -> None:
        try:
            outcome.append(channel.queue_declare(queue.name, passive=True))
        except Exception as exc:  # noqa: BLE001 - what the wait ended with is the answer
            outcome.append(exc)

    try:
        channel = conn.channel()
        proxy.silence()
        waiting = threading.Thread(target=declare, daemon=True)
        waiting.start()
        waiting.join(20)
        assert len(outcome) == 1 and isinstance(outcome[0], RecoverableConnectionError), outcome
    finally:
        proxy.close()
        conn.collect()


@pytest.mark.timeout(60)
def test_buffered_reads_deliver_small_and_large_messages_whole_and_in_order(amqp_url, queue):
    bodies = [b"a", bytes(range(256)) * 1200, b"b" * 70_000, b"c"]  # 300 KB, past one read
    publish(amqp_url, queue, bodies)
    with Connection(amqp_url, transport=WorkerTransport) as conn:
        channel = conn.channel()
        received = receive_all(conn, channel, queue, len(bodies))
        assert [m.body for m in received] == bodies
        channel.ack_many([m.delivery_tag for m in received])
        assert channel.unsettled == set()
    assert left_on(amqp_url, queue, 0) == []


@pytest.mark.timeout(90)
def test_acks_early_on_rabbitmq_go_out_before_the_task_runs(tmp_path, unique, amqp_url):
    """The solo worker dies inside the task: its ack was sent before, so the task is not
    given back (acks are otherwise gathered and sent together after the turn)."""
    setup = make_setup(tmp_path, f"qw-{unique}", amqp_url, REDIS_URL, task_acks_late=False)
    try:
        with setup.worker("-P", "solo") as worker:
            app = setup.app()
            app.send_task("tasks.die_always")
            app.close()
            assert wait_for(lambda: worker.poll() is not None, 30)
        with Connection(amqp_url) as conn:
            time.sleep(1.0)  # RabbitMQ puts back what the dead connection held, if anything
            left = conn.default_channel.queue_declare(setup.queue, passive=True).message_count
        assert (left, len(setup.records("die_always"))) == (0, 1)
    finally:
        setup.cleanup()


@pytest.mark.timeout(90)
def test_acks_late_of_a_finished_task_go_out_before_the_solo_pool_runs_the_next(
        tmp_path, unique, amqp_url):
    """The solo pool runs a task in the worker's own thread: the gathered ack of the quick
    task before it must not wait for it to finish, or a worker killed meanwhile has the quick
    task run again (no result backend to tell that it already ran)."""
    setup = make_setup(tmp_path, f"qw-{unique}", amqp_url, None, task_acks_late=True)
    try:
        with setup.worker("-P", "solo") as worker:
            app = setup.app()
            app.send_task("tasks.mark", args=["quick"])  # the slow one waits in the worker
            app.send_task("tasks.slow", args=[30, "slow"])
            app.close()
            assert setup.wait_records("started", 1)
            assert setup.records("mark")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        # RabbitMQ puts back what the dead connection held all at once: the slow task only.
        with Connection(amqp_url) as conn:
            channel = conn.default_channel

            def ready() -> int:
                return int(channel.queue_declare(setup.queue, passive=True).message_count)

            assert wait_for(lambda: ready() >= 1, 10)
            message = channel.basic_get(setup.queue, no_ack=True)
            assert (message.headers["task"], ready()) == ("tasks.slow", 0)
    finally:
        setup.cleanup()


@pytest.mark.timeout(60)
def test_a_task_whose_early_ack_cannot_be_sent_runs_once_the_worker_reconnects(
        unique, amqp_url):
    """The connection breaks as the ack before the task is written: the task has not started,
    so it and the rest of its batch wait again and the copies RabbitMQ gives back run (not
    adopted as if running)."""
    ran: list[str] = []
    app = App("acks", broker=amqp_url, backend=None, task_default_queue=f"qa-{unique}",
              task_acks_late=False)

    @app.task(name="note")
    def note(tag: str) -> None:
        ran.append(tag)

    worker = Worker(app, pool="threads", concurrency=2, heartbeat=False, send_events=False)
    worker.pool.start()
    worker.consumer.connect(worker.prefetch_target())
    worker._on_connected()
    try:
        sent = worker.consumer.ack_many
        failures: list[OSError] = []

        def ack_many_failing_once(tags: list[str]) -> None:
            if not failures:
                failures.append(OSError("connection reset by the test"))
                raise failures[0]
            sent(tags)

        worker.consumer.ack_many = ack_many_failing_once  # type: ignore[method-assign]
        app.send_task("note", args=["a"])
        app.send_task("note", args=["b"])
        deadline = time.monotonic() + 30
        while sorted(ran) != ["a", "b"] and time.monotonic() < deadline:
            try:
                worker._turn()
            except worker.consumer.errors as exc:
                assert exc is failures[0]
                assert not worker.active and worker.reserved and not ran
                worker._on_connection_lost(exc)
        wait_for(lambda: len(ran) > 2, 1)
        assert failures and sorted(ran) == ["a", "b"]
        worker._process_events()
        assert not worker.active
    finally:
        worker.consumer.close()
        worker.pool.stop()
        with Connection(amqp_url) as conn:
            conn.default_channel.queue_delete(f"qa-{unique}")
        app.close()
