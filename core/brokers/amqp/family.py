"""What the rest of qtui asks of RabbitMQ (:class:`~qtui.core.brokers.family.BrokerFamily`)."""

from __future__ import annotations

from kombu import Connection, Queue

from ..family import BrokerFamily
from .delayed import AmqpDelayed, amqp_due_queue
from .queues import AmqpQueues
from .transport import WorkerTransport


class AmqpFamily(BrokerFamily):
    """RabbitMQ: deliveries belong to their connection (given back when it closes), and one
    held unacked past the broker's consumer timeout is taken back."""

    takes_back_held = True
    worker_transport = WorkerTransport

    def queue_inspector(self, connection: Connection,
                        management_url: str | None = None) -> AmqpQueues:
        return AmqpQueues(connection, management_url)

    def delayed(self, connection: Connection) -> AmqpDelayed:
        return AmqpDelayed(connection)

    def due_queue(self, queue: str, queue_type: str = "classic") -> Queue:
        return amqp_due_queue(queue, queue_type)


AMQP = AmqpFamily()
