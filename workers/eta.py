"""ETA and countdown: a task runs once, on time, whatever its delay, even across worker restarts.

Celery keeps every ETA task in worker memory, unacked. On Redis that message comes back after the
visibility timeout and runs twice (celery issue 2481); on RabbitMQ a long hold hits the consumer
timeout. qtui keeps only what is nearly due:

* **Due within ``worker_eta_horizon`` seconds** (default 10): held by the worker, unacked, on a
  timer. Holding is safe for that long on every broker: RabbitMQ gives an unacked message back
  only when the worker's connection ends, and on Redis what a live worker owns is never given
  back (:mod:`qtui.core.brokers.redis.worker_channel`). If the worker dies, the message is
  delivered again.
* **Later**: handed to the broker's delayed store, then acked.

  - *Redis*: a sorted set per queue, ``qtui.delayed.<queue>``, scored by due time; each member is
    the complete kombu envelope (prefixed by the list it goes back to). Storing it and acking the
    original happen in one MULTI/EXEC, so the task exists exactly once at every instant. Every
    worker consuming the queue runs a poller (twice a second) with a Lua script that atomically
    moves the members due within a second back onto the head of the queue's list; the worker
    that receives one then holds it until the exact ETA.
  - *RabbitMQ*: delay queues ``qtui.delay.<queue>.<N>s`` for N on a fixed ladder (1 s ... 1 day),
    each with ``x-message-ttl`` N seconds and a dead-letter route to the due queue
    ``qtui.due.<queue>``, which every worker consuming ``<queue>`` consumes too: a due task comes
    back ahead of the backlog of ``<queue>`` instead of at its tail. A message goes to the largest
    step not longer than its remaining delay and comes back early, never late; a few hops bring
    it within the horizon. Bounded: at most one queue per step and queue. A message nobody takes
    from the due queue within a minute (no qtui worker left) goes on to ``<queue>``, where Celery
    workers take it (:mod:`qtui.core.delayed`). A worker crash between publishing to the delay
    queue and acking can duplicate the message (at-least-once).
  - *The embedded SQLite broker*: published again to the due queue ``qtui.due.<queue>`` with
    the header ``x-qtui-not-before`` (due time minus half the horizon), which the transport stores
    as the row's not-before time, then acked; the row stays invisible until then, so no poller is
    needed, and once visible it does not queue behind the backlog of ``<queue>`` (whose rows
    became visible earlier). A crash between the two steps can leave a duplicate, which the
    worker drops if the task already ran.
  - *Other transports* (memory://, ...): held unacked by the worker until due, whatever the
    delay.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kombu import Connection, Exchange, Producer, Queue

from qtui.core.brokers.amqp.delayed import AmqpDelayed, amqp_due_queue
from qtui.core.brokers.redis.delayed import RedisDelayed
from qtui.core.brokers.sqlite.delayed import NOT_BEFORE_HEADER, SqliteDelayed
from qtui.core.delayed import DELAY_QUEUE, DELAYED_KEY, DUE_QUEUE, LADDER, DelayedTasks, delayed_for

from . import declare
from .hooks import Observer
from .job import SCHEDULED, Job
from .redelivery import republish, resent_headers

if TYPE_CHECKING:
    from .timer import Timer

logger = logging.getLogger("qtui.worker")

REDIS_POLL_INTERVAL = 0.5
REDIS_LOOKAHEAD = 1.0

#: ARGV[3]: the transport's ``global_keyprefix``, which a member's list name is stored without.
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local sep = string.find(member, '\\n', 1, true)
  redis.call('RPUSH', ARGV[3] .. string.sub(member, 1, sep - 1), string.sub(member, sep + 1))
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""


class DelayedStore(ABC):
    """Somewhere outside the worker that keeps a message until it is nearly due."""

    #: How often :meth:`poll` must run (None: the broker moves messages back by itself).
    poll_interval: float | None = None

    @abstractmethod
    def put(self, job: Job, delay: float) -> bool:
        """Take the job's message (store it, then ack it); False if this delay is not for us."""

    def poll(self) -> None:
        """Move the messages that are due back to their queues."""


class RedisDelayedStore(DelayedStore):
    poll_interval = REDIS_POLL_INTERVAL

    def __init__(self, channel: Any, queues: list[str]) -> None:
        self.channel = channel
        self.queues = queues

    def put(self, job: Job, delay: float) -> bool:
        message = job.delivery
        priority = message.properties.get("priority") or 0
        target = self.channel._q_for_pri(job.queue, priority)  # kombu's priority sublist name
        headers = resent_headers(message)
        properties = {k: v for k, v in message.properties.items()
                      if k not in ("delivery_info", "delivery_tag", "body_encoding")}
        properties.update(body_encoding="base64", delivery_tag=str(uuid.uuid4()),
                          delivery_info={"exchange": "", "routing_key": job.queue},
                          priority=priority)
        envelope = json.dumps({
            "body": base64.b64encode(message.body).decode(),
            "content-encoding": message.content_encoding, "content-type": message.content_type,
            "headers": headers, "properties": properties,
        })
        # kombu's channel.client carries the pending blocking wait: commands go through a pooled
        # client.
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=True)
            pipe.zadd(DELAYED_KEY.format(queue=job.queue),
                      {f"{target}\n{envelope}": time.time() + delay})
            pipe.zrem(self.channel.unacked_index_key, message.delivery_tag)
            pipe.hdel(self.channel.unacked_key, message.delivery_tag)
            pipe.execute()
        message.ack()  # already removed above; this settles kombu's own bookkeeping
        return True

    def poll(self) -> None:
        horizon = time.time() + REDIS_LOOKAHEAD
        with self.channel.conn_or_acquire() as client:
            move = client.register_script(_MOVE_DUE)
            for queue in self.queues:
                move(keys=[DELAYED_KEY.format(queue=queue)],
                     args=[horizon, 500, self.channel.global_keyprefix or ""])


class AMQPDelayQueues(DelayedStore):
    def __init__(self, producer: Callable[[], Producer],
                 queue_type: Callable[[str], str] = lambda name: "classic") -> None:
        self._producer = producer
        self._queue_type = queue_type
        """The type of a task queue, which its delay queues are declared as (when missing)."""

    @staticmethod
    def delay_queue(queue: str, seconds: int, queue_type: str = "classic") -> Queue:
        name = DELAY_QUEUE.format(queue=queue, seconds=seconds)
        arguments: dict[str, Any] = {
            "x-message-ttl": seconds * 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": DUE_QUEUE.format(queue=queue),
            "x-expires": (2 * seconds + 300) * 1000,
        }
        if queue_type != "classic":
            arguments["x-queue-type"] = queue_type
        return Queue(name, Exchange(""), routing_key=name, durable=True,
                     queue_arguments=arguments)

    def put(self, job: Job, delay: float) -> bool:
        steps = [s for s in LADDER if s <= delay]
        if not steps:
            return False
        queue_type = self._queue_type(job.queue)
        queue = self.delay_queue(job.queue, steps[-1], queue_type)
        producer = self._producer()
        # The due queue first: a message dead-lettered to a queue that does not exist is lost.
        declare.ensure(producer.connection, amqp_due_queue(job.queue, queue_type))
        declare.ensure(producer.connection, queue)
        republish(producer, job.delivery, queue.name, expiring=False)
        job.delivery.ack()
        return True


class SqliteDelayedStore(DelayedStore):
    def __init__(self, producer: Callable[[], Producer]) -> None:
        self._producer = producer

    def put(self, job: Job, delay: float) -> bool:
        republish(self._producer(), job.delivery, DUE_QUEUE.format(queue=job.queue),
                  headers={NOT_BEFORE_HEADER: time.time() + delay}, expiring=False)
        job.delivery.ack()
        return True


def delayed_store_for(connection: Connection, channel: Any, producer: Callable[[], Producer],
                      queues: list[str],
                      queue_type: Callable[[str], str] = lambda name: "classic",
                      ) -> DelayedStore | None:
    """The worker's side of the broker's delayed store (the store and how it is read are the
    broker family's, :func:`qtui.core.delayed.delayed_for`), or None: the broker has none and
    the worker holds ETA tasks."""
    stores: dict[type[DelayedTasks], Callable[[], DelayedStore]] = {
        RedisDelayed: lambda: RedisDelayedStore(channel, queues),
        AmqpDelayed: lambda: AMQPDelayQueues(producer, queue_type),
        SqliteDelayed: lambda: SqliteDelayedStore(producer),
    }
    reader = delayed_for(connection)
    return None if reader is None else stores[type(reader)]()


class Scheduler(Observer):
    """Holds jobs until their ETA and hands them to ``release``; sends far ones to the store.
    The worker's ``delay_task`` gate: a job sent to the store is no longer the worker's, and
    goes to ``forget``."""

    def __init__(self, timer: Timer, release: Callable[[Job], None], horizon: float,
                 forget: Callable[[Job], None]) -> None:
        self.timer = timer
        self.release = release
        self.horizon = horizon
        self.forget = forget
        self.store: DelayedStore | None = None
        self._held: dict[int, Job] = {}

    def delay_task(self, job: Job) -> bool:
        msg = job.message
        delay = msg.seconds_until_eta()
        if delay <= 0:
            return False
        if self.store_for_later(job, delay):
            logger.info("Task %s[%s] stored until its ETA %s", msg.task, msg.id,
                        msg.eta.isoformat() if msg.eta else "")
            self.forget(job)
        else:
            self.hold(job, delay)
        return True

    def store_for_later(self, job: Job, delay: float) -> bool:
        """Send a far-off job to the broker's delayed store; True when it is no longer ours."""
        if self.store is None or delay <= self.horizon:
            return False
        return self.store.put(job, delay - self.horizon / 2)

    def hold(self, job: Job, delay: float) -> None:
        job.stage = SCHEDULED
        self._held[job.id] = job
        job.timer = self.timer.call_later(delay, lambda: self._due(job))

    def _due(self, job: Job) -> None:
        if self._held.pop(job.id, None) is not None:
            job.timer = None
            self.release(job)

    @property
    def held(self) -> int:
        return len(self._held)

    def jobs(self) -> list[Job]:
        """The jobs held until their ETA."""
        return list(self._held.values())

    def take_all(self) -> list[Job]:
        """Every held job, removed (for shutdown and connection loss)."""
        jobs = list(self._held.values())
        self._held.clear()
        for job in jobs:
            if job.timer is not None:
                job.timer.cancel()
                job.timer = None
        return jobs
