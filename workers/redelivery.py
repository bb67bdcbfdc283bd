"""The delivery counter, and putting a received message back on a queue by publishing it again.

A broker only says *whether* a message was delivered before (kombu's ``redelivered`` flag), not
how often. So whenever the worker has to deliver a message again -- the process running it died,
or it came back flagged ``redelivered`` after a worker crash -- it publishes the message again
with the ``x-qtui-deliveries`` header raised (the deliveries before this one) and acks the old
copy. Past ``task_max_redeliveries`` the message goes to the dead-letter queue instead, so a
message that kills whatever runs it cannot loop forever. Messages put back without having run
(the prefetched ones at shutdown) keep their count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kombu import Exchange, Producer, Queue
from kombu.message import Message

DELIVERIES_HEADER = "x-qtui-deliveries"
#: Headers that describe one delivery, not the task: never copied into a new publication.
TRANSIENT_HEADERS = frozenset({"redelivered", "x-death", "x-first-death-exchange",
                               "x-first-death-queue", "x-first-death-reason",
                               "x-last-death-exchange", "x-last-death-queue",
                               "x-last-death-reason"})
_PROPERTIES = ("correlation_id", "reply_to", "priority", "expiration", "message_id",
               "type", "app_id", "user_id", "timestamp")


def delivery_number(message: Message) -> int:
    """1 for a first delivery; previous deliveries counted in the header, plus the broker's flag."""
    headers = message.headers or {}
    try:
        before = max(0, int(headers.get(DELIVERIES_HEADER) or 0))
    except (TypeError, ValueError):
        before = 0
    redelivered = bool((message.delivery_info or {}).get("redelivered"))
    return before + 1 + (1 if redelivered else 0)


def direct_queue(name: str, queue_type: str = "classic") -> Queue:
    """A durable queue reached through the default exchange by its own name (a quorum queue
    when ``queue_type`` says so)."""
    arguments = {"x-queue-type": queue_type} if queue_type != "classic" else None
    return Queue(name, Exchange(""), routing_key=name, durable=True, queue_arguments=arguments)


def republish(producer: Producer, message: Message, routing_key: str,
              headers: Mapping[str, Any] | None = None, declare: list[Queue] | None = None,
              exchange: str = "") -> None:
    """Publish ``message`` again, byte for byte, with ``headers`` merged over its own."""
    merged = {k: v for k, v in (message.headers or {}).items() if k not in TRANSIENT_HEADERS}
    merged.update(headers or {})
    properties = {k: message.properties[k] for k in _PROPERTIES
                  if message.properties.get(k) is not None}
    priority = (message.delivery_info or {}).get("priority")
    if priority is not None and "priority" not in properties:
        properties["priority"] = priority
    producer.publish(message.body, exchange=exchange, routing_key=routing_key,
                     content_type=message.content_type or "application/data",
                     content_encoding=message.content_encoding or "binary",
                     headers=merged, declare=declare or [], delivery_mode=2, retry=True,
                     retry_policy={"max_retries": 3}, **properties)
