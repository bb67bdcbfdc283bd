"""The worker consumer's broker family follows the connection's transport, which a failover
URL changes inside one kombu Connection."""

from __future__ import annotations

from kombu import Connection, Queue

from qtui.core import App
from qtui.core.brokers.amqp.family import AMQP
from qtui.core.brokers.redis.family import REDIS
from qtui.workers.consumer import Consumer


def test_the_family_follows_a_failover_to_another_transport():
    app = App("worker", broker="redis://127.0.0.1:1/0", worker_enable_remote_control=False)
    consumer = Consumer(app, "w@h", [Queue("q")], lambda *_: None, lambda *_: None,
                        held_tags=list, stopping=lambda: False, sleep=lambda _: None,
                        control_node=None)  # type: ignore[arg-type]
    connection = Connection("redis://127.0.0.1:1/0;amqp://127.0.0.1:1//")
    consumer.connection = connection
    assert consumer.family is REDIS
    connection.maybe_switch_next()  # what kombu does when the first URL fails
    assert consumer.family is AMQP
