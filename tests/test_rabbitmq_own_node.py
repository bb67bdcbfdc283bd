"""RabbitMQ alarms and restarts, on a node this module starts itself (never the shared one):
a send the broker never confirmed raises a clear error in bounded time and no success is false;
rpc:// results keep coming after a broker restart; a queue's pause outlives one, and reads
right after RabbitMQ dropped the pause stream's oldest records."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kombu import Connection

from qtui.core import App, states
from qtui.core.brokers.amqp.pauses import PauseStream
from qtui.core.exceptions import BrokerBlocked
from qtui.core.exceptions import TimeoutError as ResultTimeout
from qtui.core.pauses import Pause, paused_queues
from qtui.core.protocol import TaskMessage
from qtui.core.queues import inspector_for
from tests.rabbit_node import RabbitNode, rabbit_node
from tests.services import unavailable


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    try:
        with rabbit_node() as started:
            yield started
    except FileNotFoundError as exc:
        unavailable(str(exc))


def queue_depth(url: str, queue: str) -> int:
    with Connection(url) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def confirms(app: App) -> bool | None:
    with app.producer() as producer:
        return producer.connection.transport_options.get("confirm_publish")


def test_sends_to_rabbitmq_wait_for_publisher_confirms_unless_turned_off(amqp_url):
    assert confirms(App(broker=amqp_url)) is True
    assert confirms(App(broker=amqp_url,
                        broker_transport_options={"confirm_publish": False})) is False


def test_send_under_memory_alarm_raises_naming_the_alarm_and_loses_no_sent_task(node, unique):
    app = App("alarm", broker=node.url, task_default_queue=unique, task_ignore_result=True,
              broker_publish_timeout=2.0)
    sent = [app.send_task("tasks.noop", args=[0]).id]  # declares the queue
    node.alarm()
    try:
        with pytest.raises(BrokerBlocked, match="memory or disk alarm") as raised:
            for i in range(1, 200):  # the alarm reaches the node's publishers within moments
                sent.append(app.send_task("tasks.noop", args=[i]).id)
                time.sleep(0.05)
        assert "broker_publish_timeout (2s)" in str(raised.value)
        app.conf.task_publish_retry = False  # the same without kombu's retries
        with pytest.raises(BrokerBlocked, match="did not confirm it"):
            app.send_task("tasks.noop", args=["again"])
    finally:
        node.clear_alarm()
    # Every send that returned is in the queue once the alarm clears (the refused ones may be).
    assert wait_for(lambda: queue_depth(node.url, unique) >= len(sent), 30)
    app.send_task("tasks.noop", args=["after"])
    assert wait_for(lambda: queue_depth(node.url, unique) >= len(sent) + 1, 30)
    app.close()


def test_rpc_results_keep_coming_after_a_broker_restart_and_a_lost_one_says_so(node, unique):
    client = App("rpc-client", broker=node.url, backend="rpc://", task_default_queue=unique)
    worker = App("rpc-worker", broker=node.url, backend="rpc://")

    def finish(result, value) -> None:
        request = TaskMessage(id=result.id, task="tasks.add", reply_to=client.backend.oid)
        worker.backend.store_result(result.id, value, states.SUCCESS, request=request)

    first = client.send_task("tasks.add", args=[1, 1])
    finish(first, 2)
    assert first.get(timeout=10) == 2
    sent_before = client.send_task("tasks.add", args=[2, 2])
    unanswered = client.send_task("tasks.add", args=[0, 0])
    with pytest.raises(ResultTimeout, match="not ready"):
        unanswered.get(timeout=0.5)
    node.restart()
    finish(sent_before, 4)  # the worker answers before the client reads again
    assert sent_before.get(timeout=10) == 4
    sent_after = client.send_task("tasks.add", args=[3, 3])
    finish(sent_after, 6)
    assert sent_after.get(timeout=10) == 6
    # Its result would have been lost had it been in the queue at the restart: get() says so.
    with pytest.raises(ResultTimeout, match="may be lost: the connection to the broker was lost"):
        unanswered.get(timeout=1)
    worker.close()
    client.close()



def test_a_queue_paused_on_rabbitmq_stays_paused_after_a_broker_restart(node, unique):
    app = App("pauser", broker=node.url)
    queue = f"qp-{unique}"
    with inspector_for(app) as inspector:
        inspector.pause(Pause(queue, 1.0, "ops@admin", ("w1@h",)))
    node.restart()

    def paused() -> dict[str, Pause]:
        try:
            return paused_queues(app)
        except Exception:  # noqa: BLE001 - the node may still be starting its queues
            return {}
    assert wait_for(lambda: queue in paused(), 30)
    assert paused()[queue] == Pause(queue, 1.0, "ops@admin", ("w1@h",))
    app.close()


def test_the_pause_set_reads_right_after_the_stream_dropped_its_oldest_records(node, unique):
    """Records of about 1 kB in segments of 4 kB, at most 8 kB kept: a dozen changes make
    RabbitMQ drop the first segments (few segment rolls: see the shared stream fixture)."""
    signed = "ops@" + "h" * 1000
    with Connection(node.url) as conn:
        stream = PauseStream(conn, f"qp-stream-{unique}", max_bytes=8000, segment_bytes=4000)
        for n in range(16):
            stream.change(lambda pauses, n=n: {
                **{q: p for q, p in pauses.items() if q != f"q{n - 2}"},
                f"q{n}": Pause(f"q{n}", float(n), signed)})
        assert (stream.first_offset() or 0) > 0  # the first records are gone
        assert stream.read() == {"q14": Pause("q14", 14.0, signed),
                                 "q15": Pause("q15", 15.0, signed)}
