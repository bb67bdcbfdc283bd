"""The delayed (ETA) store as any qtui process sees it: its layout on each broker, and how many
tasks it holds, what they are, purging them, and releasing them to their queues.

qtui workers put ETA tasks that are far off into the broker (see ``qtui.workers.eta``); this
module is the one place that knows where they are, so ``qtui status``, ``qtui purge``,
``qtui eta release``, the console and the workers' ``inspect scheduled`` read the same thing:

- Redis: the sorted set ``qtui.delayed.<queue>`` scored by due time; each member is the list the
  message goes back to, a newline, and the complete kombu envelope.
- RabbitMQ: the delay queues ``qtui.delay.<queue>.<N>s`` (a ladder of TTLs) dead-letter into
  the due queue ``qtui.due.<queue>``, which every qtui worker consuming ``<queue>`` consumes too,
  so a due task does not wait behind the backlog of ``<queue>``. A message nobody takes from the
  due queue within :data:`DUE_TTL` seconds (no qtui worker left) dead-letters to ``<queue>``
  itself, where Celery workers take it.
- The embedded SQLite broker: rows of the due queue ``qtui.due.<queue>`` that stay invisible
  until their not-before time.

*Releasing* hands every held task back to its queue as a plain message, with its ``eta`` header,
so any worker -- a Celery worker too, which holds it in memory until due -- runs it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import ChannelError

DELAYED_KEY = "qtui.delayed.{queue}"
DELAY_QUEUE = "qtui.delay.{queue}.{seconds}s"
DUE_QUEUE = "qtui.due.{queue}"
LADDER = (1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
#: Seconds a due message waits in a RabbitMQ due queue before it goes to the task queue itself
#: (for the Celery workers there when no qtui worker consumes the due queue).
DUE_TTL = 60
#: Seconds a due queue nobody uses lives on: longer than the longest step of the ladder, whose
#: messages dead-letter into it (it is declared again with every message put on the ladder).
DUE_QUEUE_EXPIRES = 2 * LADDER[-1] + 300
#: Prefixes of the queues the store is made of: not user queues.
INTERNAL_PREFIXES = ("qtui.delay.", "qtui.due.")
#: Headers a broker adds when it dead-letters a message: not part of the task.
DEAD_LETTER_HEADERS = frozenset({"x-death", "x-first-death-exchange", "x-first-death-queue",
                                 "x-first-death-reason", "x-last-death-exchange",
                                 "x-last-death-queue", "x-last-death-reason"})

#: Move every member of a delayed set (KEYS[1]) to the tail of its list, as a new publish would.
_RELEASE = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, member in ipairs(members) do
  local sep = string.find(member, '\\n', 1, true)
  redis.call('LPUSH', string.sub(member, 1, sep - 1), string.sub(member, sep + 1))
end
redis.call('DEL', KEYS[1])
return #members
"""


def is_store_queue(name: str) -> bool:
    """Whether ``name`` is one of the queues the delayed store is made of."""
    return name.startswith(INTERNAL_PREFIXES)


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


def sqlite_due_queue(queue: str) -> Queue:
    """The embedded broker's due queue of ``queue``: not-before rows wait there."""
    name = DUE_QUEUE.format(queue=queue)
    return Queue(name, Exchange(""), routing_key=name, durable=True)


@dataclass(frozen=True)
class HeldTask:
    """A task the broker holds until its ETA."""

    id: str | None
    name: str | None
    eta: str | None
    args: str | None
    kwargs: str | None
    priority: int


class DelayedTasks(ABC):
    """What one broker's delayed store holds, read through a connection the caller owns."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @property
    def channel(self) -> Any:
        """The connection's default channel, an instance of this broker's own Channel class
        (kombu annotates it as the base virtual Channel, which has no ``client`` or ``db``)."""
        return self.connection.default_channel

    @abstractmethod
    def count(self, queue: str) -> int:
        """How many tasks of ``queue`` the store holds."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Discard the tasks of ``queue`` the store holds; returns how many."""

    @abstractmethod
    def release(self, queue: str) -> int:
        """Hand every held task of ``queue`` back to it as a plain message (``eta`` header kept);
        returns how many."""

    def tasks(self, queue: str, limit: int = 100) -> list[HeldTask] | None:
        """The first ``limit`` held tasks of ``queue`` by due time; None where the broker cannot
        show them without taking them (RabbitMQ)."""
        return None


class RedisDelayed(DelayedTasks):
    """Redis: one sorted set per queue."""

    def count(self, queue: str) -> int:
        return int(self.channel.client.zcard(DELAYED_KEY.format(queue=queue)))

    def purge(self, queue: str) -> int:
        key = DELAYED_KEY.format(queue=queue)
        with self.channel.client.pipeline(transaction=True) as pipe:
            count, _ = pipe.zcard(key).delete(key).execute()
        return int(count)

    def release(self, queue: str) -> int:
        client = self.channel.client
        return int(client.register_script(_RELEASE)(keys=[DELAYED_KEY.format(queue=queue)]))

    def tasks(self, queue: str, limit: int = 100) -> list[HeldTask] | None:
        client = self.channel.client
        members = client.zrange(DELAYED_KEY.format(queue=queue), 0, limit - 1)
        found = []
        for member in members:
            text = member.decode() if isinstance(member, bytes) else member
            try:
                envelope = json.loads(text.partition("\n")[2])
            except ValueError:  # not qtui's layout: shown without details
                envelope = {}
            found.append(_held(envelope.get("headers") or {},
                               (envelope.get("properties") or {}).get("priority")))
        return found


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
                   if k not in DEAD_LETTER_HEADERS}
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


class SqliteDelayed(DelayedTasks):
    """The embedded broker: the rows of the due queue that nobody holds."""

    def _db(self) -> Any:
        return self.channel.db

    def count(self, queue: str) -> int:
        return int(self._db().count_unheld(DUE_QUEUE.format(queue=queue)))

    def purge(self, queue: str) -> int:
        return int(self._db().delete_unheld(DUE_QUEUE.format(queue=queue)))

    def release(self, queue: str) -> int:
        return int(self._db().move_unheld(DUE_QUEUE.format(queue=queue), queue))

    def tasks(self, queue: str, limit: int = 100) -> list[HeldTask] | None:
        found = []
        for payload in self._db().peek_unheld(DUE_QUEUE.format(queue=queue), limit):
            message = json.loads(payload)
            found.append(_held(message.get("headers") or {},
                               (message.get("properties") or {}).get("priority")))
        return found


def _held(headers: dict[str, Any], priority: Any) -> HeldTask:
    def text(key: str) -> str | None:
        value = headers.get(key)
        return None if value is None else str(value)
    return HeldTask(text("id"), text("task"), text("eta"), text("argsrepr"), text("kwargsrepr"),
                    priority if isinstance(priority, int) else 0)


def delayed_for(connection: Connection) -> DelayedTasks | None:
    """The reader of ``connection``'s delayed store, or None: this broker has none (workers
    hold every ETA task themselves)."""
    driver = connection.transport.driver_type
    if driver == "redis":
        return RedisDelayed(connection)
    if driver == "amqp":
        return AmqpDelayed(connection)
    if driver == "sqlite":
        return SqliteDelayed(connection)
    return None


def counts(connection: Connection, queues: Iterable[str]) -> dict[str, int]:
    """How many tasks the delayed store holds per queue (empty: this broker has no store)."""
    reader = delayed_for(connection)
    return {} if reader is None else {name: reader.count(name) for name in queues}



def due_queue(connection: Connection, queue: str, queue_type: str = "classic") -> Queue | None:
    """The due queue a worker consuming ``queue`` consumes too, on brokers whose store has one
    (RabbitMQ, the embedded broker); None elsewhere."""
    driver = connection.transport.driver_type
    if driver == "amqp":
        return amqp_due_queue(queue, queue_type)
    if driver == "sqlite":
        return sqlite_due_queue(queue)
    return None
