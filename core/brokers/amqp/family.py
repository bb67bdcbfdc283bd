"""What the rest of qtui asks of RabbitMQ (:class:`~qtui.core.brokers.family.BrokerFamily`)."""

from __future__ import annotations

from kombu import Connection, Queue

from ..family import BrokerFamily
from .connection import confirms
from .delayed import AmqpDelayed, amqp_due_queue
from .pauses import PausesUnavailable
from .queues import AmqpQueues
from .transport import WorkerTransport


class AmqpFamily(BrokerFamily):
    """RabbitMQ: deliveries belong to their connection (given back when it closes), and one
    held unacked past the broker's consumer timeout is taken back."""

    takes_back_held = True
    worker_transport = WorkerTransport
    reading_transport = WorkerTransport

    def retried_errors(self) -> tuple[type[BaseException], ...]:
        # The pause stream a worker reads when it connects, not readable for now.
        return (PausesUnavailable,)

    def confirms_batches(self, connection: Connection) -> bool:
        return confirms(connection)

    def queue_inspector(self, connection: Connection,
                        management_url: str | None = None) -> AmqpQueues:
        """Over the worker's transport: a message a peek gets whose routing key or content
        header is not UTF-8 is read with its error, not raised out of the read."""
        return AmqpQueues(self.for_reading(connection), management_url)

    def delayed(self, connection: Connection) -> AmqpDelayed:
        return AmqpDelayed(connection)

    def due_queue(self, queue: str, queue_type: str = "classic") -> Queue:
        return amqp_due_queue(queue, queue_type)


AMQP = AmqpFamily()
