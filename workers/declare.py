"""Declaring queues on a broker that may hold them already with other arguments.

RabbitMQ refuses (406 PRECONDITION_FAILED, closing the channel) to declare a queue that exists
with other arguments: a quorum ``<queue>.dead`` an operator made, a delay queue from an older
qtui, a task queue made by hand. So the worker looks first (a passive declare on a channel of
its own), declares only what is missing, uses what exists as it is, and reports a refusal once
instead of dying on it.
"""

from __future__ import annotations

import logging
from typing import Any
from weakref import WeakKeyDictionary

from kombu import Connection, Queue
from kombu.exceptions import ChannelError

from qtui.core.queues import queue_exists

logger = logging.getLogger("qtui.worker")

_known: WeakKeyDictionary[Connection, set[str]] = WeakKeyDictionary()
"""Queues found or declared, per connection (a new connection looks again)."""
_reported: set[str] = set()


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "reply_code", ""))


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception as exc:  # the broker may have closed it already, or the connection
        logger.debug("closing a declaring channel failed: %s", exc)


def ensure(connection: Connection, queue: Queue) -> None:
    """Make sure ``queue`` exists and is bound to its exchange, once per connection (every time
    for a queue that expires, as kombu does: a delay queue may be gone since); a queue that
    exists is used with the arguments it has."""
    known = _known.setdefault(connection, set())
    if queue.name in known:
        return
    found = queue_exists(connection, queue.name)
    channel = connection.channel()
    try:
        bound = queue(channel)
        if not found:
            bound.declare()
        elif bound.exchange is not None and bound.exchange.name:
            bound.exchange.declare()
            bound.queue_bind()
    except ChannelError as exc:
        if _code(exc) != "406":
            raise
        # Made meanwhile by someone else with other arguments: use it as it is.
        if queue.name not in _reported:
            _reported.add(queue.name)
            logger.warning("Queue %s exists with other arguments than qtui's (%s); using it as "
                           "it is", queue.name, exc)
    finally:
        _close_quietly(channel)
    if queue.can_cache_declaration:
        known.add(queue.name)
