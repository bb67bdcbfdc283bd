"""Events: Celery's ``celeryev`` stream, sent by a dispatcher and read by a receiver.

Every event is a JSON object with ``type``, ``hostname``, ``utcoffset``, ``pid``, ``clock`` and
``timestamp``, published to the ``celeryev`` exchange with the type as routing key (``-``
becomes ``.``). Workers batch their task events into one list sent as ``task.multi``. The
receiver binds its own short-lived queue, expands batches, and stamps each event with the
local time it arrived (``local_received``) for :class:`~qtui.core.state.State`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.clocks import LamportClock
from kombu.common import maybe_declare
from kombu.utils.json import JSONEncoder
from kombu.utils.uuid import uuid

from .brokers.dropped import warn_dropped
from .brokers.family import family_for
from .exceptions import BrokerUnavailable
from .protocol import TaskMessage, default_origin

if TYPE_CHECKING:
    from .app import App

EVENT_EXCHANGE = "celeryev"
EVENT_QUEUE_PREFIX = "celeryev"
#: Celery's event_queue_ttl and event_queue_expires: a receiver that goes away costs nothing.
EVENT_QUEUE_TTL = 5.0
EVENT_QUEUE_EXPIRES = 60.0
#: Seconds between reconnection attempts of a receiver that lost its broker.
RECONNECT_INTERVAL = 1.0

logger = logging.getLogger(__name__)


def event_exchange(connection: Connection) -> Exchange:
    """``celeryev``, a topic exchange; fanout on Redis, as Celery declares it there."""
    return Exchange(EVENT_EXCHANGE, type=family_for(connection).event_exchange_type)


_pid = os.getpid()
"""This process's id, the ``pid`` of its events (asked again in a forked child)."""


def _forked() -> None:
    global _pid  # one value a process, refreshed in a forked child
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def utcoffset(at: float | None = None) -> float:
    """This host's offset from UTC in hours (now, or ``at`` epoch seconds), as Celery puts it in
    every event: hours *west* of UTC (``time.timezone``), so Paris in winter is -1.0; receivers
    (Celery's included) subtract it from what their own host reports to compare timestamps."""
    if time.localtime(at).tm_isdst:
        return time.altzone / 3600
    return time.timezone / 3600


_dumps = JSONEncoder(separators=(",", ":")).encode
"""Events as JSON: kombu's encoder (its typed values), compact."""


def routing_key_for(event_type: str) -> str:
    return event_type.replace("-", ".")


def _isoformat(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def task_sent_fields(message: TaskMessage, queue: str | None, exchange: str,
                     routing_key: str) -> dict[str, Any]:
    """The fields of a ``task-sent`` event, as Celery's client sends them."""
    return {"uuid": message.id, "root_id": message.root_id, "parent_id": message.parent_id,
            "name": message.task, "args": message.argsrepr, "kwargs": message.kwargsrepr,
            "retries": message.retries, "eta": _isoformat(message.eta),
            "expires": _isoformat(message.expires), "queue": queue, "exchange": exchange,
            "routing_key": routing_key}


class EventDispatcher:
    """Sends events as Celery does (JSON, transient, stamped with host, pid, clock and time).

    :meth:`publish` sends on a given producer (a client sends task-sent on the producer that
    sent the task); :meth:`send` on the dispatcher's own ``connection``. Events of
    ``buffer_group`` (a worker's ``task`` events) are held and sent ``buffer_limit`` at a time
    as one ``<group>.multi`` list; :meth:`flush` sends what is held. Thread-safe.
    """

    def __init__(self, connection: Connection | None = None, hostname: str | None = None, *,
                 clock: LamportClock | None = None, buffer_group: str | None = None,
                 buffer_limit: int = 24) -> None:
        self.connection = connection
        self.hostname = hostname or default_origin()
        self.clock = clock or LamportClock()
        self.buffer_group = buffer_group
        self.buffer_limit = buffer_limit
        self._held = None if buffer_group is None else f"{buffer_group}-"
        """The type prefix of the events held for a batch."""
        self._buffer: list[dict[str, Any]] = []
        self._producer: Producer | None = None
        self._exchange = ""
        """The name of the event exchange, once declared on the dispatcher's own channel."""
        self._utcoffset = 0.0
        self._utcoffset_until = 0.0
        """Time (epoch seconds) until which ``_utcoffset`` holds: the next whole minute, as a
        DST change falls on one."""
        self._lock = threading.Lock()  # a worker sends from several threads

    def event(self, type: str, fields: Mapping[str, Any]) -> dict[str, Any]:  # noqa: A002
        """One event dict: the common fields, then ``fields``."""
        now = time.time()
        if now >= self._utcoffset_until:
            self._utcoffset, self._utcoffset_until = utcoffset(now), now - now % 60 + 60
        return {"type": type, "hostname": self.hostname, "utcoffset": self._utcoffset,
                "pid": _pid, "clock": self.clock.forward(), "timestamp": now, **fields}

    def publish(self, type: str, fields: Mapping[str, Any], producer: Producer  # noqa: A002
                ) -> None:
        """Send one event right away on ``producer``."""
        exchange = event_exchange(producer.connection)
        self._publish(self.event(type, fields), routing_key_for(type), producer,
                      exchange.name, [exchange])

    def publish_many(self, type: str, fields: Sequence[Mapping[str, Any]],  # noqa: A002
                     producer: Producer) -> None:
        """Send several events of one group as one ``<group>.multi`` list on ``producer``, as
        a worker sends its batches (a bulk send's task-sent events)."""
        group = type.partition("-")[0]
        exchange = event_exchange(producer.connection)
        self._publish([self.event(type, f) for f in fields], f"{group}.multi", producer,
                      exchange.name, [exchange])

    def send(self, type: str, fields: Mapping[str, Any]) -> None:  # noqa: A002
        """Send one event on the dispatcher's connection, or hold it if its group is batched."""
        event = self.event(type, fields)
        with self._lock:
            if self._held is not None and type.startswith(self._held):
                self._buffer.append(event)
                if len(self._buffer) >= self.buffer_limit:
                    self._flush()
                return
            producer = self._own_producer()
            self._publish(event, routing_key_for(type), producer, self._exchange)

    def flush(self) -> None:
        """Send the held events as one ``<group>.multi`` message."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            producer = self._own_producer()
            self._publish(batch, f"{self.buffer_group}.multi", producer, self._exchange)

    def close(self) -> None:
        self.flush()
        self._producer = None

    def _own_producer(self) -> Producer:
        if self.connection is None:
            raise RuntimeError("EventDispatcher.send() needs a connection; "
                               "use publish() with a producer instead")
        if self._producer is None:
            channel = self.connection.default_channel
            exchange = event_exchange(self.connection)
            maybe_declare(exchange, channel)  # once: the channel keeps it for every send
            self._producer = Producer(channel, auto_declare=False)
            self._exchange = exchange.name
        return self._producer

    def _publish(self, body: Any, routing_key: str, producer: Producer, exchange: str,
                 declare: list[Exchange] | None = None) -> None:
        # Encoded here rather than by kombu's serializer: the same JSON (kombu's encoder, for
        # the same typed values), without the spaces after separators.
        producer.publish(_dumps(body), exchange=exchange, routing_key=routing_key,
                         declare=declare, content_type="application/json",
                         content_encoding="utf-8", headers={"hostname": self.hostname},
                         delivery_mode=1)


class EventReceiver:
    """Reads the event stream: ``with EventReceiver(app) as r: for event in r.events(): ...``

    Binds ``celeryev.<uuid>`` (auto-delete, messages live 5 s, queue expires 60 s after its
    consumer goes) with routing key ``#``, then broadcasts a ``heartbeat`` command so that
    live workers announce themselves at once instead of within their next heartbeat.
    """

    def __init__(self, app: App, *, routing_key: str = "#", node_id: str | None = None,
                 wakeup: bool = True) -> None:
        self.app = app
        self.routing_key = routing_key
        self.node_id = node_id or uuid()
        self.wakeup = wakeup
        self.connection: Connection | None = None
        self.queue: Queue | None = None
        """The receiver's own queue, once connected."""
        self.error: str = ""
        """Why the last connection attempt failed ('' while connected)."""
        self._consumer: Consumer | None = None
        self._buffer: deque[dict[str, Any]] = deque()
        transport = self.app.connection_for_read()  # not connected: only asked for its errors
        self._errors: tuple[type[BaseException], ...] = (
            *transport.connection_errors, *transport.channel_errors, OSError,
            BrokerUnavailable)

    @property
    def queue_name(self) -> str:
        return f"{EVENT_QUEUE_PREFIX}.{self.node_id}"

    @property
    def connected(self) -> bool:
        return self._consumer is not None

    def __enter__(self) -> EventReceiver:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection, bind the queue, start consuming, then wake the workers."""
        self.close()
        conn = self.app.connection_for_read()
        conn = self.connection = family_for(conn).for_reading(conn)
        conn.connect()
        self.queue = Queue(self.queue_name, exchange=event_exchange(conn),
                           routing_key=self.routing_key, durable=False, auto_delete=True,
                           message_ttl=EVENT_QUEUE_TTL, expires=EVENT_QUEUE_EXPIRES)
        self._consumer = Consumer(conn.default_channel, [self.queue], no_ack=True,
                                  accept=["json"], callbacks=[self._on_message],
                                  on_decode_error=self._on_decode_error)
        self._consumer.consume()
        self._drain(0.05)  # on Redis this subscribes, so the workers' answers are not missed
        if self.wakeup:
            self.app.control.heartbeat(connection=conn)
        self.error = ""

    def close(self) -> None:
        consumer, conn = self._consumer, self.connection
        self._consumer = self.connection = None
        try:
            if consumer is not None:
                consumer.cancel()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
        if conn is not None:
            conn.release()

    def events(self, timeout: float | None = None, limit: int | None = None
               ) -> Iterator[dict[str, Any]]:
        """Yield events as they arrive; stop after ``limit`` of them, or after ``timeout``
        seconds without one (None: never)."""
        count = 0
        while limit is None or count < limit:
            if not self._buffer and not self._drain(timeout):
                return
            while self._buffer and (limit is None or count < limit):
                yield self._buffer.popleft()
                count += 1

    def batches(self, interval: float = 0.1, reconnect: bool = True
                ) -> Iterator[list[dict[str, Any]]]:
        """Yield every ``interval`` seconds the events that arrived meanwhile (maybe none), so
        a consumer thread can apply them in one go and check whether to stop between batches.

        With ``reconnect``, a lost broker does not end the stream: :attr:`error` says why,
        empty batches keep coming, and the receiver reconnects (and wakes the workers again).
        """
        retry_at = 0.0
        while True:
            deadline = time.monotonic() + interval
            try:
                if self._consumer is None and time.monotonic() >= retry_at:
                    self.connect()
                if self._consumer is None:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                while self._consumer is not None \
                        and (remaining := deadline - time.monotonic()) > 0:
                    if not self._drain(remaining):
                        break
            except self._errors as exc:
                if not reconnect:
                    raise
                self.close()
                self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                logger.warning("event receiver lost the broker: %s", self.error)
                retry_at = time.monotonic() + RECONNECT_INTERVAL
            batch = list(self._buffer)
            self._buffer.clear()
            yield batch

    def _drain(self, timeout: float | None) -> bool:
        """Handle what arrives within ``timeout``; False if nothing did."""
        assert self.connection is not None
        try:
            self.connection.drain_events(timeout=timeout)
        except TimeoutError:
            return False
        return True

    def _on_message(self, body: Any, message: Any) -> None:
        now = time.time()
        for event in body if isinstance(body, list) else (body,):
            if isinstance(event, dict) and isinstance(event.get("type"), str):
                event["local_received"] = now
                self._buffer.append(event)

    def _on_decode_error(self, message: Any, exc: Exception) -> None:
        warn_dropped(logger, self.queue_name, f"Dropped an event that cannot be decoded: {exc}")
