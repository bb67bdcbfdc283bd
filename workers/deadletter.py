"""The dead-letter queue ``<queue>.dead``: where messages that must not run (again) end up.

A message is dead-lettered when it cannot be a task (malformed, undecodable, a content type not
in ``accept_content``, an unknown task name), when its result cannot be stored, or when it was
delivered more than ``task_max_redeliveries`` times. The original body and headers are published
to ``<queue>.dead`` (a durable queue on the default exchange) with an ``x-qtui-dead-reason``
header, and then the original is acked: the worker goes on, and nothing is lost -- a person can
read the dead letters, fix the cause and move them back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kombu import Producer
from kombu.message import Message

from qtui.core.protocol import DEAD_QUEUE_HEADER, DEAD_REASON_HEADER, dead_letter_queue_name

from . import declare
from .redelivery import DELIVERIES_HEADER, delivery_number, direct_queue, republish

logger = logging.getLogger("qtui.worker")

class DeadLetters:
    def __init__(self, producer: Callable[[], Producer],
                 queue_type: Callable[[str], str] = lambda name: "classic") -> None:
        self._producer = producer
        self._queue_type = queue_type
        """The type of a task queue, which its dead-letter queue is declared as (when missing)."""

    def send(self, message: Message, queue: str, reason: str) -> None:
        """Move ``message`` (received from ``queue``) to ``<queue>.dead`` with ``reason``."""
        name = dead_letter_queue_name(queue)
        producer = self._producer()
        declare.ensure(producer.connection, direct_queue(name, self._queue_type(queue)))
        republish(producer, message, name, headers={
            DEAD_REASON_HEADER: reason, DEAD_QUEUE_HEADER: queue,
            DELIVERIES_HEADER: delivery_number(message)}, expiring=False)
        if not message.acknowledged:  # one acked before it ran is copied there all the same
            message.ack()
        logger.warning("Message moved to %s: %s", name, reason)
