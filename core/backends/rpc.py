"""rpc:// results: sent back as messages to the client's own reply queue, as Celery does.

The client declares one queue per process (its ``oid``) and puts its name in each task's
``reply_to``; the worker publishes the meta to the default exchange with that routing key and
``correlation_id`` = task id. Results are not stored anywhere else: only the client that sent
the task can read them, once. The queue is durable (deleted by :meth:`RPCBackend.close`, else by
the broker a day after its last use), so it survives a broker restart and catches the results
sent before the client reconnects; the client declares it and consumes again after a lost
connection.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from kombu import Consumer, Exchange, Queue

from .. import exceptions, states
from ..brokers import broker_errors
from ..brokers.dropped import warn_dropped
from ..brokers.family import family_for
from ..config import mask_url
from .base import ResultBackend, pending_meta

if TYPE_CHECKING:
    from kombu import Connection, Message

    from ..app import App
    from ..protocol import TaskMessage

REPLY_QUEUE_EXPIRES = 86400.0

logger = logging.getLogger(__name__)


class RPCBackend(ResultBackend):
    persistent = False

    def __init__(self, app: App, url: str) -> None:
        super().__init__(app, url)
        self.oid = str(uuid.uuid4())
        self.binding = Queue(self.oid, Exchange("", type="direct"), routing_key=self.oid,
                             durable=True, auto_delete=False, expires=REPLY_QUEUE_EXPIRES)
        self._results: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._connection: Connection | None = None
        self._consumer: Consumer | None = None
        self._waiting: set[str] = set()
        """Tasks sent since the reply queue was last consumed from a new connection."""
        self._across_loss: set[str] = set()
        """Tasks sent before a lost connection whose result has not come: it may be lost."""

    def reply_to(self) -> str | None:
        self._ensure_consumer()
        return self.oid

    def on_task_call(self, message: TaskMessage) -> None:
        message.reply_to = self.oid
        self._ensure_consumer()
        self._waiting.add(message.id)

    def _ensure_consumer(self) -> Consumer:
        with self._lock:
            if self._consumer is None:
                connection = self.app.connection_for_read()
                connection = family_for(connection).for_reading(connection)
                try:
                    self._consumer = Consumer(connection.default_channel, [self.binding],
                                              callbacks=[self._on_message], no_ack=True,
                                              accept=self.accept,
                                              on_decode_error=self._on_decode_error)
                    self._consumer.consume()
                except broker_errors(connection) as exc:
                    connection.collect()
                    raise exceptions.BrokerUnavailable(
                        f"rpc:// results: cannot consume from the reply queue on the broker at "
                        f"{mask_url(self.app.broker_url)} ({exc}). Is it running? Results sent "
                        "meanwhile wait in the queue.") from exc
                self._connection = connection
            return self._consumer

    def _connection_lost(self) -> None:
        """Drop the dead connection (no closing handshake: the peer is gone); the next read
        declares the queue and consumes again on a new one."""
        assert self._connection is not None
        self._connection.collect()
        self._connection = self._consumer = None
        self._across_loss |= self._waiting - self._results.keys()
        self._waiting.clear()

    def _on_message(self, body: Any, message: Message) -> None:
        task_id = message.properties.get("correlation_id") or (
            body.get("task_id") if isinstance(body, dict) else None)
        if task_id and isinstance(body, dict) and "status" in body:
            previous = self._results.get(task_id)
            if previous is None or previous["status"] not in states.READY_STATES:
                self._results[task_id] = body
            if body["status"] in states.READY_STATES:
                self._waiting.discard(task_id)
                self._across_loss.discard(task_id)

    def _on_decode_error(self, message: Message, exc: Exception) -> None:
        """Anyone may send to the reply queue (its name is in every task's ``reply_to``): what
        cannot be decoded is dropped with a warning, and the wait for the results goes on."""
        warn_dropped(logger, self.oid, f"Dropped a result message that cannot be decoded: {exc}")

    def _drain(self, timeout: float) -> None:
        self._ensure_consumer()
        assert self._connection is not None
        try:
            self._connection.drain_events(timeout=timeout)
        except TimeoutError:
            pass
        except broker_errors(self._connection):  # a broker restart, a dropped connection
            self._connection_lost()
            self._ensure_consumer()

    def _set(self, task_id: str, payload: bytes, meta: dict[str, Any],
             request: TaskMessage | None) -> None:
        if request is None or not request.reply_to:
            return
        with self.app.producer() as producer:
            producer.publish(meta, exchange="", routing_key=request.reply_to,
                             correlation_id=task_id, serializer=self.serializer,
                             delivery_mode=1, retry=True)

    def _get(self, task_id: str) -> bytes | None:
        raise NotImplementedError  # get_task_meta is overridden: results are messages

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            self._drain(0.0001)
            return dict(self._results.get(task_id) or pending_meta(task_id))

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                meta = self._results.get(task_id)
                if meta and meta["status"] in states.READY_STATES:
                    return dict(meta)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if task_id in self._across_loss:
                        raise exceptions.TimeoutError(
                            f"task {task_id} not ready after {timeout}s, and its result may be "
                            "lost: the connection to the broker was lost after it was sent, and "
                            "rpc:// results are not stored (a result that was in the reply "
                            "queue when the broker went down is gone). Use a result backend "
                            "that stores results (redis://) if that matters.")
                    raise exceptions.TimeoutError(f"task {task_id} not ready after {timeout}s")
                self._drain(1.0 if remaining is None else min(remaining, 1.0))

    def _delete(self, task_id: str) -> None:
        with self._lock:
            self._results.pop(task_id, None)

    def close(self) -> None:
        """Delete the reply queue (it is durable, so nothing else would before it expires)."""
        with self._lock:
            if self._connection is not None:
                try:
                    self.binding(self._connection.default_channel).delete()
                    self._connection.release()
                except broker_errors(self._connection):  # gone already: it expires by itself
                    self._connection.collect()
            self._connection = self._consumer = None
