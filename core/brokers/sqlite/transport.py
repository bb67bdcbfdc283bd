"""The embedded broker's kombu classes: a virtual ``Transport`` and ``Channel`` (``_put``,
``_get``, ``_purge``, ``_size``, ``_delete`` and the fanout hooks, as kombu's extension point is
meant to be used) and the ``QoS`` whose acks and rejects change the broker file (:mod:`.database`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from queue import Empty
from typing import TYPE_CHECKING, Any

from amqp.protocol import queue_declare_ok_t
from kombu.transport import virtual
from kombu.utils.json import dumps

from ...delayed import DUE_QUEUE
from ...protocol import dead_letter_queue_name
from .. import broker_path
from ..dropped import warn_dropped
from ..envelope import Envelope, NotAnEnvelope, ReadsEnvelopes, dead_letter_wrapping
from .database import DEFAULT_BUSY_TIMEOUT, Claimed, Database
from .delayed import NOT_BEFORE_HEADER

if TYPE_CHECKING:
    from ...ledger import StartRecord

logger = logging.getLogger(__name__)

DEFAULT_VISIBILITY_TIMEOUT = 3600.0
DEFAULT_FETCH_BATCH = 16
DEFAULT_POLLING_INTERVAL = 0.005
DEFAULT_IDLE_POLLING_INTERVAL = 0.03
#: Seconds without a delivery after which a consumer polls at the idle interval.
IDLE_AFTER = 1.0


class QoS(virtual.QoS):
    """Acks and rejects change the database: an ack deletes the row, a requeue or restore makes
    it visible again at once (flagged redelivered on its next delivery)."""

    channel: Channel
    _delivered: Any  # kombu's OrderedDict of delivery tag -> message

    def ack(self, delivery_tag: str) -> None:
        self.channel.db.ack(message_id(delivery_tag))
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            # Rows claimed ahead go back too, so the requeued message is the next one served.
            self.channel.release_ahead()
            self.channel.db.release([message_id(delivery_tag)])
        else:
            self.channel.db.ack(message_id(delivery_tag))
        super().ack(delivery_tag)

    def restore_unacked(self) -> list[tuple[BaseException, Any]]:
        self._flush()
        tags = list(self._delivered)
        self._delivered.clear()
        try:
            self.channel.db.release([message_id(tag) for tag in tags])
        except sqlite3.Error as exc:
            # Still held by this process: the next sweep after it exits releases them.
            logger.error("SQLite broker: could not restore %d unacked message(s) now (%s); "
                         "they come back as soon as the file can be written again",
                         len(tags), exc)
        return []


def message_id(delivery_tag: str) -> int:
    """The row id inside a delivery tag (``<id>.<delivery count>``)."""
    return int(str(delivery_tag).partition(".")[0])


def claim_of(delivery_tag: str) -> tuple[int, int]:
    """The claim a delivery tag names: (row id, delivery count)."""
    row, _, count = str(delivery_tag).partition(".")
    return int(row), int(count)


class Channel(ReadsEnvelopes, virtual.Channel):
    """A kombu virtual channel whose queues, bindings and messages live in the broker file."""

    QoS = QoS
    supports_fanout = True
    connection: Transport

    visibility_timeout = DEFAULT_VISIBILITY_TIMEOUT
    fetch_batch = DEFAULT_FETCH_BATCH
    # kombu leaves this tuple unannotated, so mypy fixes its length at the base's
    from_transport_options = (  # type: ignore[assignment]
        *virtual.Channel.from_transport_options, "visibility_timeout", "fetch_batch")

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.db = connection.database
        # Rows claimed ahead, per queue; a requeue from another thread may give them back.
        self._ahead: dict[str, deque[Claimed]] = {}
        self._ahead_lock = threading.Lock()
        self._empty_at: dict[str, tuple[int, int, int]] = {}
        self._auto_delete: set[str] = set()
        self._no_ack: set[str] = set()
        self._fetched: deque[tuple[str, Claimed]] | None = None
        """What :meth:`send_fetch` claimed, for :meth:`read_fetch` to deliver."""
        self._fetches = 0

    # messages

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        not_before = (message.get("headers") or {}).get(NOT_BEFORE_HEADER)
        self.db.put(queue, self._get_message_priority(message), dumps(message),
                    not_before if isinstance(not_before, (int, float)) else None)

    def accepts_envelopes(self, exchange: str, routing_key: str) -> bool:
        """The default exchange or a direct one: what :meth:`put_envelopes` routes as kombu
        does."""
        return not exchange or self.typeof(exchange).type == "direct"

    def put_envelopes(self, envelopes: Sequence[Envelope], deadline: float | None = None
                      ) -> None:
        """Store every envelope, each in the queues its exchange routes it to, in one
        transaction: all or none (``deadline`` is not used: SQLite's busy timeout bounds the
        wait). An exchange's bindings are read once per batch, as the Redis channel's script
        reads them."""
        rows = []
        levels: dict[int, int] = {}  # the stored priority by message priority
        routes: dict[tuple[str, str], list[str]] = {}  # the queues by exchange and routing key
        for envelope in envelopes:
            priority = levels.get(envelope.priority)
            if priority is None:
                priority = levels[envelope.priority] = self._get_message_priority(
                    {"properties": {"priority": envelope.priority}})
            not_before = envelope.user_headers.get(NOT_BEFORE_HEADER)
            if not isinstance(not_before, (int, float)):
                not_before = None
            route = (envelope.exchange, envelope.routing_key)
            queues = routes.get(route)
            if queues is None:
                queues = routes[route] = self._lookup(*route)
            rows += [(queue, priority, envelope.payload, not_before) for queue in queues]
        self.db.put_many(rows)

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str,
                    **kwargs: Any) -> None:
        self.db.maybe_sweep()
        self.db.put_fanout(exchange, self._get_message_priority(message), dumps(message))

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        ahead = self._pop_ahead([queue], 1)
        if ahead:
            return self._deliverable(queue, ahead[0][1])
        order, generation = self._not_known_empty([queue])
        if not order:
            raise Empty()
        self.db.maybe_sweep()
        limit = 1
        if queue in self._no_ack:
            taken = self.db.take(queue)
            rows = [taken] if taken else []
        elif queue not in self._active_queues:  # basic_get: one, nothing held ahead
            rows = self.db.claim(queue, limit, self.visibility_timeout)
        else:
            limit = max(1, min(self.fetch_batch,
                               self.qos.can_consume_max_estimate() or self.fetch_batch))
            rows = self.db.claim(queue, limit, self.visibility_timeout)
        self._mark_empty(order, [(queue, claimed) for claimed in rows], limit, generation)
        if not rows:
            raise Empty()
        if len(rows) > 1:
            with self._ahead_lock:
                self._ahead.setdefault(queue, deque()).extend(rows[1:])
        return self._deliverable(queue, rows[0])

    def _pop_ahead(self, queues: Sequence[str], limit: int) -> deque[tuple[str, Claimed]]:
        """Up to ``limit`` rows claimed ahead for ``queues``, in turn; those whose lease ran out
        (someone else's by now) are dropped."""
        now = time.time()
        taken: deque[tuple[str, Claimed]] = deque()
        with self._ahead_lock:
            for queue in queues:
                ahead = self._ahead.get(queue)
                while ahead and len(taken) < limit:
                    claimed = ahead.popleft()
                    if claimed.until > now:
                        taken.append((queue, claimed))
        return taken

    def _hold_ahead(self, rows: Sequence[tuple[str, Claimed]]) -> None:
        """Hold ``rows`` ahead again, in front of the others and in their order: the next
        gets serve them first, and a close gives them back."""
        with self._ahead_lock:
            for queue, claimed in reversed(rows):
                self._ahead.setdefault(queue, deque()).appendleft(claimed)

    def _not_known_empty(self, queues: Sequence[str]) -> tuple[list[str], tuple[int, int, int]]:
        """``queues`` less those found empty since nothing changed, and the generation to mark
        empty the ones a claim finds empty (read before the claim: a commit racing with it
        moves the generation on, never hides)."""
        generation = self.db.generation()
        return [q for q in queues if self._empty_at.get(q) != generation], generation

    def _mark_empty(self, order: Sequence[str], claimed: Sequence[tuple[str, Claimed]],
                    room: int, generation: tuple[int, int, int]) -> None:
        """Mark empty the queues of ``order`` that a claim of up to ``room`` rows, taken from
        each in turn, reached and got nothing from."""
        came = Counter(queue for queue, _ in claimed)
        so_far = 0
        for queue in order:
            if so_far >= room:  # filled before this queue: it was not looked at
                break
            if not came[queue]:
                self._empty_at[queue] = generation
            so_far += came[queue]

    def _deliverable(self, queue: str, claimed: Claimed) -> dict[str, Any]:
        """:meth:`_to_message`, or Empty when the row is no kombu message, after it has gone to
        ``queue``'s dead-letter queue."""
        message = self._to_message(queue, claimed)
        if message is None:
            raise Empty()
        return message

    def _to_message(self, queue: str, claimed: Claimed) -> dict[str, Any] | None:
        """The stored envelope with a per-delivery tag and, on a repeat, kombu's redelivered
        flags (set where the Redis transport sets them); None for a row that is no kombu
        envelope (:func:`~..envelope.read_envelope`: anyone can publish one to an event or
        control exchange, and built into a message it ends the receiver's loop), dead-lettered
        instead with the reason: its dead letter is stored before the row goes (a crash between
        leaves both, never neither). One of a transient queue (an event receiver's, a mailbox's)
        is dropped with a warning: its dead-letter queue would outlive it, read by nobody."""
        try:
            message = self.read_envelope(claimed.payload)
        except NotAnEnvelope as exc:
            if self.db.is_transient(queue):
                self.db.ack(claimed.id)
                warn_dropped(logger, queue, f"Dropped a message of queue {queue!r}: {exc}")
                return None
            dead = dead_letter_queue_name(queue)
            self.db.declare_queue(dead, False, None)
            self.db.put(dead, 0, dumps(dead_letter_wrapping(
                claimed.payload, queue, f"not a kombu message: {exc}", f"{claimed.id}.dead")))
            self.db.ack(claimed.id)
            warn_dropped(logger, queue, f"Message moved to {dead}: not a kombu message: {exc}")
            return None
        properties = message["properties"]
        properties["delivery_tag"] = f"{claimed.id}.{claimed.delivered_count}"
        if claimed.delivered_count > 1:
            properties.setdefault("delivery_info", {})["redelivered"] = True
            message.setdefault("headers", {})["redelivered"] = True
        return message

    # the worker's fetch: acks, start records and claims in one transaction

    #: A fetch that takes nothing still acks and records in its one transaction: nothing is
    #: cheaper to send alone (on Redis, a lone ZADD is).
    settles_with_records = True

    def send_fetch(self, queues: list[str], limit: int, acks: list[str] | None = None,
                   starts: StartRecord | None = None) -> bool:
        """Ack ``acks``, write ``starts`` in the ledger's table of the broker file and claim up to
        ``limit`` messages from ``queues`` and their due queues (those this channel consumes, a
        different one first each time), in one transaction committed before this returns, so
        before the batch whose starts it records runs. :meth:`read_fetch` delivers what came.
        False when there is nothing to do. When the transaction fails, nothing is acked or
        claimed and the rows held ahead stay held."""
        acks = acks or []
        if limit <= 0 and not acks and starts is None:
            return False
        assert self._fetched is None, "read_fetch follows send_fetch"
        self.db.maybe_sweep()
        wanted = {*queues, *(DUE_QUEUE.format(queue=q) for q in queues)}
        order = [q for q in self._active_queues
                 if q in wanted and q not in self._no_ack] if limit > 0 else []
        if order:
            turn = self._fetches % len(order)
            order = order[turn:] + order[:turn]
            self._fetches += 1
        taken = self._pop_ahead(order, limit)  # claimed earlier, not handed to kombu: first
        room = limit - len(taken)
        generation = None
        if room > 0 and order:
            order, generation = self._not_known_empty(order)
        try:
            fetched = self.db.fetch([message_id(tag) for tag in acks], starts,
                                    order if room > 0 else [], room, self.visibility_timeout)
        except BaseException:
            self._hold_ahead(taken)
            raise
        for tag in acks:
            virtual.QoS.ack(self.qos, tag)
        taken.extend(fetched)
        if generation is not None:
            self._mark_empty(order, fetched, room, generation)
        self._fetched = taken
        return True

    def read_fetch(self) -> int:
        """Deliver what :meth:`send_fetch` claimed; returns how many. A row whose lease ran out
        meanwhile (someone else's by now) is dropped, as one held ahead is; what a failing
        delivery leaves is held ahead for the next get. The rows stay in ``_fetched`` until
        delivered, so the lease thread renews them (see :meth:`renew`)."""
        pending = self._fetched
        assert pending is not None, "read_fetch follows send_fetch"
        now = time.time()
        delivered = 0
        try:
            while pending:
                queue, claimed = pending.popleft()
                if claimed.until <= now:
                    continue
                message = self._to_message(queue, claimed)
                if message is not None:
                    self.connection._deliver(message, queue)
                    delivered += 1
        finally:
            self._fetched = None
            self._hold_ahead(pending)
        return delivered

    def ack_many(self, tags: list[str]) -> None:
        """Ack deliveries in one transaction."""
        self.db.ack_many([message_id(tag) for tag in tags])
        for tag in tags:
            virtual.QoS.ack(self.qos, tag)

    def _purge(self, queue: str) -> int:
        return self.db.purge(queue)

    def renew(self, delivery_tags: list[str]) -> None:
        """Renew the visibility lease of these deliveries and of the rows this channel claimed
        and has not handed to kombu yet (held ahead, or taken by a fetch not read yet: a solo
        worker's fetch is read after the task it rides with), so none of them becomes visible
        to another consumer while this process still means to deliver it (see
        :meth:`Database.renew`)."""
        undelivered = self._undelivered()
        until, renewed = self.db.renew(
            [*map(claim_of, delivery_tags), *((c.id, c.delivered_count) for c in undelivered)],
            self.visibility_timeout)
        for claimed in undelivered:
            if (claimed.id, claimed.delivered_count) in renewed:
                claimed.until = until

    def _undelivered(self) -> list[Claimed]:
        """The rows claimed and not handed to kombu: those of a fetch not read yet, then those
        held ahead (read by the lease thread: copies; a row passing between the two at that
        moment waits for the next renewal)."""
        fetched = self._fetched
        rows = [claimed for _, claimed in fetched.copy()] if fetched is not None else []
        with self._ahead_lock:
            rows += [claimed for ahead in self._ahead.values() for claimed in ahead]
        return rows

    def settle(self, delivery_tags: list[str], requeue: bool) -> None:
        """Ack or requeue deliveries this process holds, whichever channel they came through
        (a worker settles those of a channel it lost this way)."""
        ids = [message_id(tag) for tag in delivery_tags]
        if requeue:
            self.db.release(ids)
            return
        for row in ids:
            self.db.ack(row)

    def _size(self, queue: str) -> int:
        return self.db.size(queue)

    def list_queues(self) -> list[tuple[str, int, int]]:
        """(name, ready, unacked) for every queue in the file, consumed or not."""
        return self.db.list_queues()

    # queues, exchanges, bindings

    def queue_declare(self, queue: str | None = None, passive: bool = False,
                      **kwargs: Any) -> Any:
        """As kombu's, but a passive declare only looks (it must not take over a transient
        queue's ownership, as recording it would)."""
        if passive and queue and self._has_queue(queue):
            return queue_declare_ok_t(queue, self._size(queue), 0)
        return super().queue_declare(queue, passive, **kwargs)

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        auto_delete = bool(kwargs.get("auto_delete") or kwargs.get("exclusive"))
        expires = (kwargs.get("arguments") or {}).get("x-expires")
        if auto_delete:
            self._auto_delete.add(queue)
        self.db.declare_queue(queue, auto_delete, int(expires) if expires is not None else None)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return self.db.has_queue(queue)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._auto_delete.discard(queue)
        self.db.delete_queue(queue)

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False,
                     **kwargs: Any) -> None:
        """Delete the queue from the file even when this process never bound it."""
        if if_empty and self._size(queue):
            return
        super().queue_delete(queue, if_unused=if_unused, if_empty=if_empty, **kwargs)
        self._delete(queue)

    def exchange_declare(self, exchange: str | None = None, type: str = "direct",
                         durable: bool = False, auto_delete: bool = False,
                         arguments: dict[str, Any] | None = None, nowait: bool = False,
                         passive: bool = False) -> None:
        """Declare locally (as kombu does) and record the type in the file, so a process that
        publishes to an exchange declared elsewhere routes by the right type."""
        type = type or "direct"
        name = exchange or f"amq.{type}"
        if passive and name not in self.state.exchanges:
            known = self.db.exchange_type(name)
            if known:
                self.state.exchanges[name] = {"type": known, "durable": durable,
                                              "auto_delete": auto_delete,
                                              "arguments": arguments or {}, "table": []}
        super().exchange_declare(name, type, durable, auto_delete, arguments, nowait, passive)
        if not passive:
            self.db.declare_exchange(name, type)

    def exchange_delete(self, exchange: str, if_unused: bool = False,
                        nowait: bool = False) -> None:
        super().exchange_delete(exchange, if_unused, nowait)
        self.db.delete_exchange(exchange)

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        if exchange and exchange not in self.state.exchanges:
            known = self.db.exchange_type(exchange)
            if known:
                return self.exchange_types[known]
        return super().typeof(exchange, default)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None,
                    queue: str) -> None:
        self.db.bind(exchange, self.typeof(exchange).type, routing_key or "", pattern or "",
                     queue)

    def queue_unbind(self, queue: str, exchange: str | None = None, routing_key: str = "",
                     arguments: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        self.db.unbind(exchange or "amq.direct", routing_key or "", queue)

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        return self.db.table(exchange)

    # consumers and closing

    def basic_consume(self, queue: str, no_ack: bool, callback: Callable[..., Any],
                      consumer_tag: str, **kwargs: Any) -> None:
        """Consume; a no-ack consumer's messages leave the file as they are fetched."""
        if no_ack:
            self._no_ack.add(queue)
        super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """As kombu's; a no-ack get removes the message from the file at once."""
        if not no_ack:
            return super().basic_get(queue, no_ack, **kwargs)
        taken = self.db.take(queue)
        message = self._to_message(queue, taken) if taken else None
        return self.Message(message, channel=self) if message else None

    def basic_cancel(self, consumer_tag: str) -> None:
        """Cancel, giving back the rows claimed ahead for the queue; an auto-delete queue this
        process declared goes with its last consumer."""
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue is None or queue in self._active_queues:
            return
        self._no_ack.discard(queue)
        self.release_ahead(queue)
        if queue in self._auto_delete:
            self._auto_delete.discard(queue)
            self.db.delete_queue(queue, only_if_owned=True)

    def release_ahead(self, queue: str | None = None) -> None:
        """Give back the rows claimed ahead (for ``queue``, or all) and not handed to kombu."""
        with self._ahead_lock:
            queues = [queue] if queue is not None else list(self._ahead)
            ahead = [c.id for q in queues for c in self._ahead.pop(q, ())]
        self.db.release(ahead, delivered=False)

    def close(self) -> None:
        """Cancel the consumers and release the rows claimed ahead (and those of a fetch never
        delivered), then close as kombu does (restoring unacked). What cannot be given back now
        (the disk is full) is given back by this process's next claim that can write. A cancel
        that cannot write (an auto-delete queue to drop) must not stop the close before the
        restore, or what this channel delivered stays held by a live process until its
        visibility timeout."""
        if not self.closed:
            for consumer_tag in list(self._consumers):
                try:
                    self.basic_cancel(consumer_tag)
                except sqlite3.Error as exc:
                    logger.error("SQLite broker: could not cancel consumer %s cleanly (%s)",
                                 consumer_tag, exc)
            fetched, self._fetched = self._fetched, None
            self._hold_ahead(fetched or ())  # a fetch never delivered: given back below
            try:
                self.release_ahead()
            except sqlite3.Error as exc:
                logger.error("SQLite broker: could not give back the messages claimed ahead now "
                             "(%s); they come back as soon as the file can be written again", exc)
        super().close()


class Transport(virtual.Transport):
    """``sqlite://PATH``: qtui's embedded broker (see the module docstring)."""

    Channel = Channel
    can_parse_url = True
    #: Sleep (s) between empty polls while messages flow, and once none came for a while.
    polling_interval = DEFAULT_POLLING_INTERVAL
    idle_polling_interval = DEFAULT_IDLE_POLLING_INTERVAL
    default_port = None
    driver_type = "sqlite"
    driver_name = "sqlite3"
    # kombu leaves these tuples unannotated, so mypy fixes their length at the base's
    connection_errors = (  # type: ignore[assignment]
        *virtual.Transport.connection_errors, sqlite3.OperationalError)
    implements = virtual.Transport.implements.extend(
        asynchronous=False, exchange_type=frozenset(["direct", "topic", "fanout"]),
        heartbeats=False)

    client: Any  # kombu.Connection
    cycle: Any  # kombu.utils.scheduling.FairCycle over the channels

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.path = broker_path(client.hostname)
        self.idle_polling_interval = float(client.transport_options.get(
            "idle_polling_interval", self.idle_polling_interval))
        self._database: Database | None = None
        self._last_delivery = float("-inf")

    @property
    def database(self) -> Database:
        """The connection to the broker file, opened (and migrated) on first use."""
        if self._database is None:
            options = self.client.transport_options
            self._database = Database(self.path, float(options.get("busy_timeout",
                                                                   DEFAULT_BUSY_TIMEOUT)))
            self._database.maybe_sweep()
        return self._database

    def drain_events(  # type: ignore[override]  # kombu's virtual signature
            self, connection: Any, timeout: float | None = None) -> None:
        """kombu's polling loop, with a sleep that is short while messages flow and longer
        once none came for :data:`IDLE_AFTER` seconds (an empty poll is cheap, not free)."""
        start = time.monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                now = time.monotonic()
                if timeout is not None and now - start >= timeout:
                    raise TimeoutError() from None
                idle = now - self._last_delivery > IDLE_AFTER
                pause = self.idle_polling_interval if idle else self.polling_interval
                if timeout is not None:
                    pause = min(pause, start + timeout - now)
                time.sleep(pause)
            else:
                self._last_delivery = time.monotonic()
                return

    def close_connection(self, connection: Any) -> None:
        super().close_connection(connection)
        if self._database is not None:
            self._database.close()
            self._database = None

    def driver_version(self) -> str:
        return sqlite3.sqlite_version

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        return f"sqlite://{self.path}"
