"""The delayed (ETA) store on RabbitMQ: the delay queues ``qtui.delay.<queue>.<N>s`` (a ladder
of TTLs) dead-letter into the due queue ``qtui.due.<queue>`` (see :mod:`qtui.core.delayed`)."""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Producer, Queue
from kombu.exceptions import ChannelError

from ...delayed import (
    DELAY_QUEUE,
    DUE_QUEUE,
    DUE_QUEUE_EXPIRES,
    DUE_TTL,
    LADDER,
    DelayedTasks,
)
from ...protocol import DELIVERY_HEADERS


def amqp_due_queue(queue: str, queue_type: str = "classic") -> Queue:
    """RabbitMQ's due queue of ``queue``: what the ladder dead-letters into; after
    :data:`DUE_TTL` seconds unconsumed, a message goes on to ``queue``."""
    name = DUE_QUEUE.format(queue=queue)
    arguments: dict[str, Any] = {
        "x-message-ttl": DUE_TTL * 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-expires": DUE_QUEUE_EXPIRES * 1000,
    }
    if queue_type != "classic":
        arguments["x-queue-type"] = queue_type
    return Queue(name, Exchange(""), routing_key=name, durable=True, queue_arguments=arguments)


class AmqpDelayed(DelayedTasks):
    """RabbitMQ: the delay queues of the ladder and the due queue; counted by passive declares,
    released by taking each message and publishing it to the task queue."""

    def _names(self, queue: str) -> list[str]:
        return [DUE_QUEUE.format(queue=queue)] + [
            DELAY_QUEUE.format(queue=queue, seconds=s) for s in LADDER]

    def _each(self, queue: str, op: Any) -> int:
        """``op(channel, name)`` summed over the store's queues of ``queue``; an absent one
        counts 0 (a 404 closes the channel: the next one gets a new channel)."""
        total, channel = 0, None
        for name in self._names(queue):
            channel = channel or self.connection.channel()
            try:
                total += op(channel, name) or 0
            except ChannelError as exc:
                if str(getattr(exc, "reply_code", "")) != "404":
                    raise
                channel = None  # the broker closed it
        if channel is not None:
            channel.close()
        return total

    def count(self, queue: str) -> int:
        return self._each(queue, lambda ch, name: ch.queue_declare(
            queue=name, passive=True).message_count)

    def purge(self, queue: str) -> int:
        return self._each(queue, lambda ch, name: ch.queue_purge(name))

    def release(self, queue: str) -> int:
        producer = Producer(self.connection.channel())
        try:
            return self._each(queue, lambda ch, name: _move_all(ch, name, producer, queue))
        finally:
            producer.channel.close()


def _move_all(channel: Any, name: str, producer: Producer, queue: str) -> int:
    """Take every message of ``name`` and publish it to ``queue`` (acked once published, so a
    failure leaves it where it was)."""
    channel.queue_declare(queue=name, passive=True)  # 404 when there is no such queue
    moved = 0
    while (message := channel.basic_get(name, no_ack=False)) is not None:
        headers = {k: v for k, v in (message.headers or {}).items()
                   if k not in DELIVERY_HEADERS}
        properties = {k: message.properties[k]
                      for k in ("correlation_id", "reply_to", "priority", "message_id")
                      if message.properties.get(k) is not None}
        producer.publish(message.body, exchange="", routing_key=queue, headers=headers,
                         content_type=message.content_type or "application/data",
                         content_encoding=message.content_encoding or "binary",
                         delivery_mode=2, **properties)
        channel.basic_ack(message.delivery_tag)
        moved += 1
    return moved
