"""The worker's AMQP transport (qtui.core.brokers.amqp.transport): acks gathered over a turn go
out in as few frames as the deliveries still held allow, never acking one that is held, and
buffered reads deliver every frame whole; acks early still go out before the task runs."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from qtui.core.brokers.amqp.transport import WorkerChannel, WorkerTransport, ack_plan

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
