"""The consumer: the worker's broker connection.

It connects (retrying with backoff), declares and consumes the worker's queues with one kombu
Consumer per queue (so every message is known by the queue it came from), keeps the prefetch
window (``basic_qos``) in step with what the worker may hold, serves the ``celery.pidbox``
mailbox on the same connection (unless ``worker_enable_remote_control`` is false), starts and
stops consuming a queue at run time (``add_consumer`` / ``cancel_consumer``), and publishes what
the worker puts back (redeliveries, dead letters, delayed messages) on a channel of its own.
Messages are handed raw to the worker's ``on_message``: decoding and validation live in
:mod:`qtui.core.protocol`. The consumer knows nothing else of the worker: it calls back
through the functions it was given (see :class:`Consumer`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from kombu import Connection, Producer, Queue
from kombu import Consumer as KombuConsumer
from kombu.exceptions import ChannelError, OperationalError
from kombu.message import Message

from qtui.core.brokers.family import BrokerFamily, family_for
from qtui.core.brokers.redis.urls import SENTINEL_SCHEME, client_url, scheme
from qtui.core.config import mask_url
from qtui.core.delayed import due_queue
from qtui.core.exceptions import BrokerUnavailable
from qtui.core.ledger import Ledger
from qtui.core.pauses import leave_out_paused
from qtui.core.routing import queue_type

from . import control, declare
from .consumer_timeout import ConsumerTimedOut, is_consumer_timeout
from .leases import Leases
from .liveness import Liveness
from .redelivery import StartRecord

if TYPE_CHECKING:
    from qtui.core.app import App

logger = logging.getLogger("qtui.worker")

RECONNECT_INTERVAL_START = 0.5
RECONNECT_INTERVAL_MAX = 10.0
#: Most seconds between two AMQP heartbeat checks (a quarter of the heartbeat when shorter).
HEARTBEAT_CHECK_MAX = 5.0
#: Most messages already read from the socket that one drain delivers when the prefetch is
#: unlimited (otherwise: the prefetch count).
BUFFERED_DRAIN_MAX = 1000


class Consumer:
    """``on_message`` and ``on_undecodable`` get what arrives, with its queue's name;
    ``held_tags`` says which deliveries the worker holds (leases keep them; read from the
    lease thread); ``stopping`` and ``sleep`` let a shutdown cut the connection retries short;
    ``control_node`` answers remote-control commands."""

    def __init__(self, app: App, hostname: str, queues: list[Queue],
                 on_message: Callable[[str, Message], None],
                 on_undecodable: Callable[[str, Message, Exception], None], *,
                 held_tags: Callable[[], list[str]], stopping: Callable[[], bool],
                 sleep: Callable[[float], None], control_node: control.ControlNode) -> None:
        self.app = app
        self.hostname = hostname
        self.queues = queues
        self.on_message = on_message
        self.on_undecodable = on_undecodable
        """Called with a message kombu could not even unpack (a ``compression`` header that is
        unknown or does not match the body): it must not reach the connection loop."""
        self.held_tags = held_tags
        self.stopping = stopping
        self.sleep = sleep
        self.control_node = control_node
        self.connection: Connection | None = None
        self.channel: Any = None
        self.producer: Producer | None = None
        self.leases: Leases | None = None
        self.owner = f"{hostname}/{uuid.uuid4().hex}"
        """Who this worker is on Redis: it takes and gives back deliveries as this owner."""
        self.liveness: Liveness | None = None
        self.prefetch = 0
        self._consumers: dict[str, KombuConsumer] = {}
        """One per consumed queue, by queue name."""
        self._pidbox: KombuConsumer | None = None
        self.consuming = False
        self.global_qos = not any(queue_type(q) == "quorum" for q in queues)
        """Count the prefetch window per channel (RabbitMQ's global QoS) rather than per consumer:
        quorum queues refuse it."""
        self._next_heartbeat_check = 0.0
        self._family: tuple[object, BrokerFamily | None] = (None, None)
        """The transport :attr:`family` was worked out for, and its family (a failover URL
        changes the transport inside one Connection)."""
        self.reclaim_due = False
        """The connection was lost: what this worker owns on the broker and does not hold is
        put back through the next one (see :meth:`reclaim_after_loss`)."""

    # connecting ------------------------------------------------------------------------------
    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the connection is gone (reconnect), not a bug."""
        conn = self.connection or self.app.connection_for_read()
        # A broker refusing an operation for a while (Redis out of memory) answers with an
        # error reply, not a broken connection: wait and reconnect all the same.
        return (*conn.connection_errors, *conn.recoverable_channel_errors, OperationalError,
                OSError, *family_for(conn).retried_errors())

    def refusal(self, error: BaseException) -> str | None:
        """What ``error`` says when it is the broker refusing operations for a while (Redis's
        ``READONLY``, ``OOM``, ...: :meth:`BrokerFamily.refusal`); None for anything else."""
        return family_for(self.connection or self.app.connection_for_read()).refusal(error)

    @property
    def family(self) -> BrokerFamily | None:
        """What the connected broker is (None while not connected)."""
        conn = self.connection
        if conn is None:
            return None
        # Asked on every ack (keeps_deliveries): worked out once per transport.
        if self._family[0] is not conn.transport:
            self._family = (conn.transport, family_for(conn))
        return self._family[1]

    @property
    def keeps_deliveries(self) -> bool:
        """Delivery tags outlive the connection (Redis: keys in Redis; the embedded broker: rows
        this process holds), so deliveries of a lost connection are settled through the next."""
        return self.family is not None and self.family.keeps_deliveries

    @property
    def holds_deliveries_on_a_timer(self) -> bool:
        """The broker takes back a delivery held unacked too long (RabbitMQ's consumer_timeout)."""
        return self.family is not None and self.family.takes_back_held

    def connect(self, prefetch: int, told: str | None = None) -> None:
        """Connect and start consuming; retries with backoff per broker_connection_max_retries.
        ``told``: the broker's refusal the caller logged already (logged again only when the
        refusal changes)."""
        max_retries = self.app.conf.broker_connection_max_retries
        interval, attempt = RECONNECT_INTERVAL_START, 0
        while True:
            try:
                self._connect(prefetch)
                return
            except self.errors as exc:
                self.close(lost=True)
                if self.global_qos and _refuses_global_qos(exc):
                    self.global_qos = False
                    logger.warning("Global QoS is disabled: a queue refuses it (%s); the "
                                   "prefetch window now counts per queue", exc)
                    continue
                attempt += 1
                if max_retries is not None and attempt > max_retries:
                    raise BrokerUnavailable(
                        f"cannot connect to the broker at {mask_url(self.app.broker_url)} "
                        f"after {attempt} attempts: {exc}") from exc
                if self.stopping():
                    raise
                refused = self.refusal(exc)
                if refused is None:
                    logger.error("Cannot connect to %s: %s. Trying again in %.1fs...",
                                 mask_url(self.app.broker_url), exc, interval)
                elif refused != told:
                    logger.warning("%s: trying again in %.1fs, then with backoff up to %.0fs; "
                                   "running tasks go on", refused, interval,
                                   RECONNECT_INTERVAL_MAX)
                else:
                    logger.debug("%s: trying again in %.1fs", refused, interval)
                told = refused
                self.sleep(interval)
                interval = min(interval * 2, RECONNECT_INTERVAL_MAX)

    def _connect(self, prefetch: int) -> None:
        conn = self.connection = self.app.connection_for_read(
            heartbeat=float(self.app.conf.broker_heartbeat or 0), worker=True)
        family = family_for(conn)
        if family.worker_transport is not None:
            conn = self.connection = conn.clone(transport=family.worker_transport)
        if family.worker_transport_options:
            conn.transport_options = {**family.worker_transport_options,
                                      **(conn.transport_options or {})}
        conn.ensure_connection(max_retries=1)
        self.channel = conn.channel()
        if self.keeps_deliveries:
            # The worker settles every delivery itself; closing (a lost connection, the embedded
            # broker's file locked past its retries) must not requeue running tasks.
            self.channel.do_restore = False
        if family.owns_deliveries:
            ttl = float(self.channel.visibility_timeout)
            self.channel.own(self.owner, ttl)
            if self.liveness is None:
                url = str(self.app.broker_url)
                if scheme(url) != SENTINEL_SCHEME:  # every sentinel, else the one connected
                    url = client_url(url, conn)
                master_name = (conn.transport_options or {}).get("master_name") or ""
                self.liveness = Liveness(url, self.owner, ttl, self.channel.liveness_keys(),
                                         str(master_name))
                self.liveness.start()
        self._leave_out_paused()
        for queue in self.queues:
            for each in self._with_due_queue(queue):
                declare.ensure(conn, each)
        self.producer = Producer(conn.channel())
        self._consumers = {queue.name: self._consumer_for(queue) for queue in self.queues}
        self.prefetch = 0
        self.set_prefetch(prefetch)
        if self.app.conf.worker_enable_remote_control:
            self._listen_pidbox(conn)
        for consumer in self._consumers.values():
            consumer.consume()
        self.consuming = True
        if family.keeps_deliveries:
            self.leases = Leases(self.channel, self.held_tags)
            if family.renews_leases:  # on Redis the liveness helper keeps what this worker owns
                self.leases.start()

    def _with_due_queue(self, queue: Queue) -> list[Queue]:
        """``queue``, then its due queue where the broker's delayed store has one: due ETA
        tasks come back there, so they do not wait behind the backlog of ``queue``."""
        assert self.connection is not None
        due = due_queue(self.connection, queue.name, queue_type(queue))
        return [queue] if due is None else [queue, due]

    def _consumer_for(self, queue: Queue) -> KombuConsumer:
        """One consumer for ``queue`` and its due queue: what comes from either is
        ``queue``'s."""
        return KombuConsumer(self.channel, self._with_due_queue(queue), no_ack=False,
                             auto_declare=False,
                             on_message=partial(self.on_message, queue.name),
                             on_decode_error=partial(self.on_undecodable, queue.name))

    def _listen_pidbox(self, conn: Connection) -> None:
        node = self.control_node
        node.channel = conn.channel()
        self._pidbox = node.listen(callback=self._on_control)
        # The worker says it is ready once this returns: on Redis the mailbox is a PUBLISH
        # subscription, sent on the first poll unless made live here (RabbitMQ and the embedded
        # broker bind the queue while listening, so a command waits there).
        subscribe_now = getattr(node.channel, "subscribe_now", None)
        if subscribe_now is not None:
            subscribe_now(float(self.app.conf.broker_connection_timeout))

    def _on_control(self, body: Any, message: Message) -> None:
        try:
            self.control_node.handle_message(body, message)
        except Exception as exc:
            logger.error("Remote control command failed: %r", exc, exc_info=True)

    # queues ----------------------------------------------------------------------------------
    def add_queue(self, queue: Queue) -> bool:
        """Consume ``queue`` too, now and after every reconnection; False if it already is.

        It is declared on a channel of its own first (see :mod:`.declare`).
        """
        if any(q.name == queue.name for q in self.queues):
            return False
        if self.connection is not None:
            for each in self._with_due_queue(queue):
                declare.ensure(self.connection, each)
        self.queues.append(queue)
        if self.channel is not None:
            consumer = self._consumers[queue.name] = self._consumer_for(queue)
            if self.consuming:
                consumer.consume()
        return True

    def _leave_out_paused(self) -> None:
        """Read the pauses on every (re)connect: a queue paused cluster-wide is not consumed
        until ``qtui resume`` sends ``add_consumer`` (:mod:`qtui.core.pauses`)."""
        for name in leave_out_paused(self.app, [q.name for q in self.queues], self.hostname):
            logger.warning("Queue %s is paused: not consuming it until it is resumed "
                           "(qtui resume %s)", name, name)
            self.queues[:] = [q for q in self.queues if q.name != name]

    def cancel_queue(self, name: str) -> bool:
        """Stop consuming the queue named ``name``; False if it was not consumed."""
        queue = next((q for q in self.queues if q.name == name), None)
        if queue is None:
            return False
        self.queues.remove(queue)
        consumer = self._consumers.pop(name, None)
        if consumer is not None and self.consuming:
            self._finish_pending_read()
            consumer.cancel()
        return True

    def _finish_pending_read(self) -> None:
        """Read a pending blocking wait's reply now, where the channel has one (Redis: see
        :meth:`~qtui.core.brokers.redis.worker_channel.Channel.finish_pending_read`)."""
        finish = getattr(self.channel, "finish_pending_read", None)
        if finish is not None and self.connection is not None:
            finish()

    # running ---------------------------------------------------------------------------------
    def set_prefetch(self, count: int) -> None:
        """Let the broker send up to ``count`` unacked messages."""
        if count == self.prefetch or self.channel is None:
            return
        self.prefetch = count
        apply_global = self.global_qos and self.connection is not None \
            and not self.connection.qos_semantics_matches_spec
        self.channel.basic_qos(0, count, apply_global)

    def set_idle(self, idle: bool) -> None:
        """Tell the channel whether the worker runs and holds nothing, where it asks (Redis:
        an idle worker polls with each wait instead of at each turn, see
        :attr:`~qtui.core.brokers.redis.worker_channel.Channel.idle`)."""
        if self.channel is not None and self.family is not None and self.family.polls_with_waits:
            self.channel.idle = idle

    def heartbeat_check(self) -> None:
        """Send the AMQP heartbeat when due, and raise a connection error when the broker has
        been silent past two heartbeats (a half-open connection); other transports: nothing."""
        if self.connection is None or not self.connection.heartbeat:
            return
        now = time.monotonic()
        if now < self._next_heartbeat_check:
            return
        self._next_heartbeat_check = now + min(HEARTBEAT_CHECK_MAX, self.connection.heartbeat / 4)
        self.connection.heartbeat_check()

    def drain(self, timeout: float) -> None:
        """Deliver what arrives within ``timeout`` seconds to the callbacks."""
        assert self.connection is not None
        try:
            self.connection.drain_events(timeout=timeout)
            # RabbitMQ: the messages already read from the socket, not one per call.
            drain_buffered = getattr(self.connection.connection, "drain_buffered", None)
            if drain_buffered is not None:
                drain_buffered(self.prefetch or BUFFERED_DRAIN_MAX)
        except TimeoutError:
            pass
        except ChannelError as exc:
            if is_consumer_timeout(exc):  # a reconnection case, not a bug
                raise ConsumerTimedOut(
                    f"the broker closed the channel: a task held its delivery unacked longer "
                    f"than the consumer timeout ({exc})") from exc
            raise

    def send_fetch(self, room: int, acks: list[str], starts: StartRecord | None = None) -> bool:
        """Send, without waiting for the reply, one call that acks ``acks``, writes ``starts``
        in the ledger and takes up to ``room`` waiting messages, where the transport can (the
        worker's Redis channel; the embedded broker's, in one transaction committed before
        this returns); read its reply with :meth:`read_fetch`. False when it cannot (nothing
        was sent)."""
        send_fetch = getattr(self.channel, "send_fetch", None)
        if send_fetch is None or not self.consuming:
            return False
        return bool(send_fetch([q.name for q in self.queues], room, acks, starts))

    def read_fetch(self) -> int:
        """The reply to :meth:`send_fetch`: how many messages came (delivered to the callbacks)."""
        return int(self.channel.read_fetch())

    def reclaim_after_loss(self, held: Iterable[str]) -> None:
        """Redis, after a lost connection: put back what this worker owns and does not hold,
        processing lists included (see
        :meth:`~qtui.core.brokers.redis.worker_channel.Channel.reclaim_after_loss`); a failure
        leaves it due for the next pass."""
        reclaim = getattr(self.channel, "reclaim_after_loss", None)
        if reclaim is not None and self.reclaim_due:
            back = reclaim(held)
            if back:
                logger.warning("Put back %d message(s) this worker had on the broker and never "
                               "received (their reply was lost with the connection)", back)
        self.reclaim_due = False

    def reclaim_unheld(self, held: Iterable[str]) -> None:
        """Redis: put back what this worker owns but does not hold (see
        :meth:`~qtui.core.brokers.redis.worker_channel.Channel.reclaim_unheld`)."""
        reclaim = getattr(self.channel, "reclaim_unheld", None)
        if reclaim is None or self.connection is None:
            return
        try:
            back = reclaim(held)
        except self.errors as exc:
            logger.debug("unheld deliveries not reclaimed yet: %s", exc)
            return
        if back:
            logger.warning("Put back %d message(s) this worker owned but never received", back)

    def ack_many(self, tags: list[str]) -> None:
        """Ack deliveries of this connection in one round trip where the transport can (the
        worker's Redis channel; RabbitMQ's acks several in one frame)."""
        ack_many = getattr(self.channel, "ack_many", None)
        if ack_many is not None:
            ack_many(tags)
            return
        for tag in tags:
            self.channel.basic_ack(tag)

    @property
    def batches_acks(self) -> bool:
        return hasattr(self.channel, "ack_many")

    def writes_ledger(self, ledger: Ledger | None) -> bool:
        """Whether :meth:`send_fetch` can write ``ledger``'s records
        (:meth:`~qtui.core.ledger.Ledger.written_by`)."""
        return (hasattr(self.channel, "send_fetch") and ledger is not None
                and ledger.written_by(self.channel, self.app.broker_url))

    @property
    def settles_with_records(self) -> bool:
        """Whether a fetch that takes nothing still carries the gathered acks and settled
        records at no extra cost (the embedded broker's one transaction); on Redis a record
        alone is one cheap ``ZADD``, and they wait for the next fetch."""
        return bool(getattr(self.channel, "settles_with_records", False))

    @property
    def pipelines_fetches(self) -> bool:
        """Whether a fetch call may be sent before the reply to the one before is read (Redis:
        the replies come back in order on one connection; the embedded broker's fetch is done
        when it is sent, so nothing waits on its reply)."""
        return bool(getattr(self.channel, "pipelines_fetches", False))

    def publisher(self) -> Producer:
        assert self.producer is not None
        return self.producer

    def cancel(self) -> None:
        """Stop receiving task messages (remote control goes on)."""
        if not self.consuming:
            return
        self.consuming = False
        self._finish_pending_read()
        for consumer in self._consumers.values():
            try:
                consumer.cancel()
            except self.errors as exc:
                logger.debug("cancel failed: %s", exc)

    def close(self, lost: bool = False) -> None:
        """Close the connection; ``lost``: it failed, so let go of it without the closing
        handshake a silent broker would never answer (AMQP's close would wait for ever)."""
        if self.leases is not None:
            self.leases.stop()
            self.leases = None
        self.consuming = False
        self._consumers = {}
        if lost and self.family is not None and self.family.owns_deliveries:
            self.reclaim_due = True
        conn, self.connection = self.connection, None
        if conn is not None:
            try:
                if lost:
                    conn.collect()
                else:
                    conn.release()
            except Exception as exc:  # closing a broken connection can raise anything
                logger.debug("closing the connection failed: %s", exc)

    def stop(self) -> None:
        """Close for good: on Redis, this worker is no longer alive, so whatever it still
        owns is given back by the other workers."""
        self.close()
        if self.liveness is not None:
            self.liveness.stop()
            self.liveness = None

    def queue_type(self, name: str) -> str:
        """What the consumed queue ``name`` is declared as (classic when not consumed)."""
        return next((queue_type(q) for q in self.queues if q.name == name), "classic")

    def broker_name(self) -> str:
        return mask_url(self.app.broker_url)


def _refuses_global_qos(exc: BaseException) -> bool:
    """RabbitMQ's ``540 NOT_IMPLEMENTED ... does not support global qos`` (a quorum queue)."""
    return str(getattr(exc, "reply_code", "")) == "540" and "global qos" in str(exc).lower()
