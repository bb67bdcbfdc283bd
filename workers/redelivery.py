"""The delivery counter, and putting a received message back on a queue by publishing it again.

A broker only says *whether* a message was delivered before (kombu's ``redelivered`` flag), not
how often. So whenever the worker has to deliver a message again -- the process running it died,
or it came back flagged ``redelivered`` after a worker crash -- it publishes the message again
with the ``x-qtui-deliveries`` header raised (the deliveries before this one) and acks the old
copy. Past ``task_max_redeliveries`` the message goes to the dead-letter queue instead, so a
message that kills whatever runs it cannot loop forever. Messages put back without having run
(the prefetched ones at shutdown) keep their count.

Only a delivery that *started* counts: the flag is also set on a message that was only
prefetched when its worker died, or given back by a shutdown. So a worker records each
delivery it starts in the cluster ledger (:mod:`qtui.core.ledger`) before the task runs, and a
redelivered message counts only when its previous delivery is recorded there. Without a ledger
(RabbitMQ with rpc:// or no results) every redelivery counts, as before. On Redis the ledger is
on the broker, so the record rides the worker's fetch script (:class:`StartRecord`): written in
the same step that acks the finished deliveries, before the tasks run, with no round trip of
its own; a batch that starts with nothing to fetch sends it alone (one ``ZADD``). On the
embedded broker the ledger is a table of the broker's file, and the record rides the fetch's
one transaction with the acks and the claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kombu import Exchange, Producer, Queue
from kombu.message import Message

from qtui.core.ledger import Ledger, StartRecord
from qtui.core.protocol import (
    COMPRESSION_HEADER,
    DELIVERIES_HEADER,
    DELIVERY_HEADERS,
    TaskMessage,
    resent_properties,
)

logger = logging.getLogger("qtui.worker")

STARTED = "started"
#: How long a start stays recorded: far longer than a message waits for its redelivery.
STARTED_TTL = 86_400.0
#: Settled starts remembered for removal from the ledger with the next write, at most.
SETTLED_MAX = 10_000
#: How often a record that rides the fetch also drops the expired records (seconds).
TRIM_INTERVAL = 1.0
#: Headers that describe one delivery, not the task: never copied into a new publication.
TRANSIENT_HEADERS = DELIVERY_HEADERS | {"redelivered"}


def _expiry() -> float:
    """When a start recorded now expires, in whole seconds: written once per started task, an
    integer's text costs a fraction of a float's."""
    return int(time.time() + STARTED_TTL) + 1


def counted_deliveries(message: Message) -> int:
    """Deliveries lost before this one, as counted in the header (the broker's flag aside)."""
    try:
        return max(0, int((message.headers or {}).get(DELIVERIES_HEADER) or 0))
    except (TypeError, ValueError):
        return 0


def delivery_number(message: Message) -> int:
    """1 for a first delivery; previous deliveries counted in the header, plus the broker's flag."""
    redelivered = bool((message.delivery_info or {}).get("redelivered"))
    return counted_deliveries(message) + 1 + (1 if redelivered else 0)


def start_key(message: TaskMessage, counted: int) -> str:
    """One delivery of one task: its id, its retry (a retry is a new message with the same id)
    and the deliveries counted in its header."""
    return f"{message.id}:{message.retries}:{counted}"


class Starts:
    """The deliveries this worker starts, recorded in the ledger before their task runs."""

    def __init__(self, ledger: Ledger | None) -> None:
        self.ledger = ledger
        self._settled: list[str] = []
        self._next_trim = 0.0

    def take(self, keys: Iterable[str], settle: bool = True) -> StartRecord | None:
        """The record of ``keys`` starting (and of the settled ones unless ``settle`` is
        False: they then wait for a later record), for the caller to write in a round trip of
        its own before the tasks run; None: nothing to write. Give it back with
        :meth:`untaken` if it was not written."""
        assert self.ledger is not None, "only a ledger hands its records out"
        key = self.ledger.key(STARTED)
        started = dict.fromkeys(keys, _expiry())
        if not started and not (settle and self._settled):
            return None
        if not settle:
            return StartRecord(key, started, [], None)
        settled, self._settled = self._settled, []
        trim = None
        if started and time.monotonic() >= self._next_trim:
            self._next_trim = time.monotonic() + TRIM_INTERVAL
            trim = time.time()
        return StartRecord(key, started, settled, trim)

    def untaken(self, record: StartRecord | None) -> None:
        """``record`` may not have been written: remove its settled keys with the next write."""
        if record is not None:
            self._settled.extend(record.settled[:max(0, SETTLED_MAX - len(self._settled))])

    @property
    def where(self) -> str:
        return "no ledger" if self.ledger is None else self.ledger.where

    def record(self, keys: Iterable[str], wait: bool = False) -> None:
        """Record ``keys`` as started (and forget the settled ones): sent before the tasks run,
        without waiting for the answer where the ledger allows it."""
        if self.ledger is None:
            return
        started = dict.fromkeys(keys, _expiry())
        settled, self._settled = self._settled, []
        trim = bool(started) and time.monotonic() >= self._next_trim
        if trim:
            self._next_trim = time.monotonic() + TRIM_INTERVAL
        try:
            self.ledger.put(STARTED, started, discard=settled, wait=wait, trim=trim)
        except self.ledger.errors as exc:
            logger.warning("Cannot record started tasks in %s (%s): if this worker is lost "
                           "now, their delivery is not counted", self.ledger.where, exc)

    def settled(self, key: str) -> None:
        """The delivery ``key`` ended without being lost: forget it with the next write."""
        if self.ledger is not None and len(self._settled) < SETTLED_MAX:
            self._settled.append(key)

    def flush(self) -> None:
        """Forget the settled deliveries now (before giving one back at shutdown)."""
        if self._settled:
            self.record((), wait=True)

    def started(self, key: str) -> bool:
        """Whether the delivery ``key`` started running; True when that cannot be known."""
        if self.ledger is None:
            return True
        try:
            return bool(self.ledger.present(STARTED, [key]))
        except self.ledger.errors as exc:
            logger.warning("Cannot read started tasks from %s (%s); counting the redelivery",
                           self.ledger.where, exc)
            return True


def resent_headers(message: Message, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The headers ``message`` is sent again with (its body as received, ``message.body``):
    its own but the transient ones, with ``headers`` merged over them.

    kombu decompressed the body on arrival unless that failed (``message.errors``): a body it
    decompressed goes out plain, without the ``compression`` header; one it could not goes out
    as it came, header and all (a dead letter keeps the bytes that were sent)."""
    merged = {k: v for k, v in (message.headers or {}).items() if k not in TRANSIENT_HEADERS}
    if not message.errors:
        merged.pop(COMPRESSION_HEADER, None)
    merged.update(headers or {})
    return merged


def direct_queue(name: str, queue_type: str = "classic") -> Queue:
    """A durable queue reached through the default exchange by its own name (a quorum queue
    when ``queue_type`` says so)."""
    arguments = {"x-queue-type": queue_type} if queue_type != "classic" else None
    return Queue(name, Exchange(""), routing_key=name, durable=True, queue_arguments=arguments)


def republish(producer: Producer, message: Message, routing_key: str,
              headers: Mapping[str, Any] | None = None, declare: list[Queue] | None = None,
              exchange: str = "", expiring: bool = True) -> None:
    """Publish ``message`` again, byte for byte, with ``headers`` merged over its own.

    ``expiring``: the copy may expire on the broker, with the time left of its ``expires`` (a
    message put back, as the broker's own requeue keeps it); False for a copy that must not (a
    dead letter, one in a delay queue, whose expiry the worker checks when it is due)."""
    merged = resent_headers(message, headers)
    properties = resent_properties(message.properties, message.headers, keep_user_id=True,
                                   expiring=expiring)
    priority = (message.delivery_info or {}).get("priority")
    if priority is not None and "priority" not in properties:
        properties["priority"] = priority
    producer.publish(message.body, exchange=exchange, routing_key=routing_key,
                     content_type=message.content_type or "application/data",
                     content_encoding=message.content_encoding or "binary",
                     headers=merged, declare=declare or [], delivery_mode=2, retry=True,
                     retry_policy={"max_retries": 3}, **properties)
