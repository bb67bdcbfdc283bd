"""RabbitMQ's consumer timeout: a delivery unacked for longer (30 min by default) makes the
broker close the channel with ``406 PRECONDITION_FAILED``, and give the message back.

With late acks a task running that long holds its delivery unacked, so the worker takes that
close as a lost connection (reconnects, keeps running the task, adopts the redelivered copy
instead of running it again), and warns at start about tasks whose time limit is longer than
the timeout. The server does not tell its ``consumer_timeout`` over AMQP: the worker assumes
``broker_consumer_timeout`` (RabbitMQ's default unless set).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kombu.exceptions import OperationalError

from qtui.core.routing import queue_arguments

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("qtui.worker")


class ConsumerTimedOut(OperationalError):
    """The broker closed the channel: a delivery stayed unacked past its consumer timeout."""


def is_consumer_timeout(exc: BaseException) -> bool:
    """RabbitMQ's close for it: ``406 ... delivery acknowledgement on channel N timed out``
    (3.8 to 3.12) or ``... consumer ack timed out`` (later releases)."""
    text = str(exc).lower()
    return str(getattr(exc, "reply_code", "")) == "406" and "timed out" in text and (
        "acknowledgement" in text or "consumer ack" in text)


def warn_long_tasks(worker: Worker) -> list[str]:
    """Log a warning for each late-acked task whose hard time limit is longer than the consumer
    timeout of the queues consumed (their ``x-consumer-timeout``, else
    ``broker_consumer_timeout``); returns the task names."""
    assumed = worker.app.conf.broker_consumer_timeout
    if not assumed:
        return []
    timeouts = [float(queue_arguments(q)["x-consumer-timeout"]) / 1000
                if "x-consumer-timeout" in queue_arguments(q)
                else float(assumed) for q in worker.queues]
    shortest = min(timeouts, default=float(assumed))
    long_tasks = []
    for name in sorted(worker.app.tasks):
        options = worker.task_options(name)
        if options.acks_late and options.time_limit and options.time_limit > shortest:
            long_tasks.append(name)
            logger.warning(
                "Task %s may run %gs (its time limit), longer than the broker's consumer "
                "timeout (%gs): RabbitMQ then closes the channel and delivers it again. The "
                "worker reconnects and keeps running it, but raise consumer_timeout on the "
                "server (or x-consumer-timeout on the queue where the server honours it) "
                "or set broker_consumer_timeout to what the server uses.",
                name, options.time_limit, shortest)
    return long_tasks
