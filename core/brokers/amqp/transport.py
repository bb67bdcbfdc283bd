"""The worker's AMQP transport: kombu's py-amqp transport with buffered socket reads and acks
of several deliveries in one frame.

py-amqp reads each frame with three ``recv`` calls of the exact sizes it needs (header, payload,
end byte), so a task message (method, header and body frames) costs nine system calls. Here a
read takes whatever the socket holds, up to :data:`READ_SIZE` bytes, and later frames are cut
from that buffer: one ``recv`` serves every message the broker sent together, and a frame read
from the buffer skips the socket timeout py-amqp sets and restores around every read (two more
system calls). Nothing else changes (frames, timeouts, errors are py-amqp's); TLS connections
keep py-amqp's own transport.

The channel keeps the delivery tags it holds unsettled, so the acks a worker gathers over a turn
go out as one ``basic.ack`` with ``multiple`` set up to the highest tag below every delivery
still held (:func:`ack_plan`): it never acks a task that has not finished. Content headers are
read by :mod:`.frames`, ``basic.deliver`` arguments by the channel and ``basic.ack`` frames
packed whole by it (the same values and bytes as py-amqp's, in fewer steps).

Two rules py-amqp does not keep: one consumer callback runs at a time (a delivery read while one
waits on the broker is held for the next read), and no wait for a broker reply is unbounded
(:data:`REPLY_TIMEOUT`, then a lost connection).
"""

from __future__ import annotations

import errno
import sys
import time
from collections import deque
from collections.abc import Collection, Iterable
from struct import Struct
from typing import Any

import amqp
from amqp import spec
from amqp.abstract_channel import ensure_promise  # the promise py-amqp's own wait makes
from amqp.exceptions import RecoverableConnectionError, UnexpectedFrame
from amqp.transport import TCPTransport
from kombu.transport import pyamqp

from ...exceptions import ProtocolError
from . import frames

#: Most bytes one ``recv`` takes from the socket.
READ_SIZE = 65536
#: Bytes before an AMQP frame's payload: type (1), channel (2), payload size (4).
FRAME_HEADER = 7
#: The octet that ends every frame.
FRAME_END = 0xCE
_FRAME_HEADER = Struct(">BHI").unpack_from
#: A whole ``basic.ack`` frame: method frame (type 1), channel, payload size, class and method
#: ids, delivery tag (long long), ``multiple`` (one bit in an octet), frame end.
_ACK_FRAME = Struct(">BHIHHQBB").pack
_ACK_SIZE = 13
#: ``basic.deliver`` arguments after the consumer tag: delivery tag, ``redelivered`` (a bit).
_DELIVER_TAG = Struct(">QB").unpack_from
#: ``basic.get-ok``'s last argument: the messages left in the queue (long).
_MESSAGE_COUNT = Struct(">I").unpack_from
#: Frames of a task message: method, content header and (one, for most) body frame.
FRAMES_PER_MESSAGE = 3
#: Seconds the worker waits for a reply RabbitMQ owes it (a declare's, a channel's opening or
#: closing, a publisher confirm) when the caller set no limit: past it the connection is taken
#: for lost, so the worker reconnects and the broker gives back what it held, rather than
#: waiting for ever on a half-open connection or a reply that will not come.
REPLY_TIMEOUT = 60.0


class BufferedTCPTransport(TCPTransport):  # type: ignore[misc]
    """py-amqp's TCP transport, reading ahead into its buffer.

    The buffer is kept with a read offset, so taking a frame from it copies only that frame
    (cutting the rest off each time would copy the whole buffer per frame)."""

    @property
    def _read_buffer(self) -> bytes:
        """What is read and not yet taken: py-amqp's name, which its ``read_frame`` uses to put
        back a frame cut short by a timeout."""
        return bytes(self._unread[self._taken:])

    @_read_buffer.setter
    def _read_buffer(self, data: bytes) -> None:
        self._unread = bytearray(data)
        self._taken = 0

    def buffered_frame(self) -> tuple[int, int, bytes] | None:
        """The next frame when the buffer holds it whole (taken from it), as ``read_frame``
        returns it, or None: cut in one step, with no socket call and none of the timeout
        calls py-amqp makes around every read."""
        rbuf, start = self._unread, self._taken
        if len(rbuf) - start < FRAME_HEADER:
            return None
        kind, channel, size = _FRAME_HEADER(rbuf, start)
        end = start + FRAME_HEADER + size
        if end >= len(rbuf):
            return None
        payload, frame_end = bytes(rbuf[start + FRAME_HEADER:end]), rbuf[end]
        if end + 1 == len(rbuf):
            rbuf.clear()
            self._taken = 0
        else:
            self._taken = end + 1
        if frame_end != FRAME_END:  # py-amqp's check, after the frame is taken as there
            raise UnexpectedFrame(f"Received frame_end {frame_end:#04x} while expecting 0xce")
        return kind, channel, payload

    def _read(self, n: int, initial: bool = False,
              _errnos: tuple[int, ...] = (errno.EAGAIN, errno.EINTR)) -> bytes:
        """Exactly ``n`` bytes: from the buffer, topped up by reads of whatever has arrived
        (what was read stays buffered if a read fails: py-amqp's contract)."""
        rbuf = self._unread
        if len(rbuf) - self._taken < n:
            del rbuf[:self._taken]
            self._taken = 0
            recv = self._quick_recv
            while len(rbuf) < n:
                try:
                    s = recv(max(n - len(rbuf), READ_SIZE))
                except OSError as exc:
                    if exc.errno in _errnos:
                        if initial and self.raise_on_initial_eintr:
                            raise TimeoutError() from exc
                        continue
                    raise
                if not s:
                    raise OSError("Server unexpectedly closed connection")
                rbuf += s
        start = self._taken
        result = bytes(rbuf[start:start + n])
        if start + n == len(rbuf):
            rbuf.clear()
            self._taken = 0
        else:
            self._taken = start + n
        return result


def ack_plan(tags: Iterable[int], unsettled: Collection[int]) -> tuple[int | None, list[int]]:
    """How to ack ``tags`` (delivery tags of one channel) while the channel holds ``unsettled``:
    the tag to ack with ``multiple`` set (every unsettled delivery up to it is in ``tags``;
    None when that would cover fewer than two) and the tags to ack one by one."""
    acking = set(tags)
    floor = min((tag for tag in unsettled if tag not in acking), default=None)
    below = sorted(tag for tag in acking if floor is None or tag < floor)
    above = sorted(tag for tag in acking if floor is not None and tag > floor)
    if len(below) < 2:
        return None, below + above
    return below[-1], above


class WorkerChannel(pyamqp.Channel):
    """kombu's py-amqp channel, knowing the deliveries it holds unsettled (consumed with acks
    on); :meth:`ack_many` acks several at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unsettled: set[int] = set()
        """Delivery tags this channel received and has not acked or rejected."""

    def dispatch_method(self, method_sig: tuple[int, int], payload: bytes, content: Any) -> Any:
        """py-amqp's, with ``basic.deliver`` (one per task message) read here: its five
        arguments unpacked in place rather than by py-amqp's general decoder, and the message
        handed to :meth:`_on_basic_deliver` directly; ``basic.get-ok`` too (see
        :meth:`_on_get_ok_frame`). Every other method, and a delivery while the channel closes
        or while something waits on ``basic.deliver`` itself, goes through py-amqp."""
        if method_sig == spec.Basic.GetOk and not self.is_closing:
            return self._on_get_ok_frame(payload, content)
        if method_sig != spec.Basic.Deliver or self.is_closing or method_sig in self._pending:
            return super().dispatch_method(method_sig, payload, content)
        self._decode_body(content)
        end = 5 + payload[4]
        tag_raw = payload[5:end]
        delivery_tag, bits = _DELIVER_TAG(payload, end)
        end += 9
        exchange_end = end + 1 + payload[end]
        exchange_raw = payload[end + 1:exchange_end]
        key_raw = payload[exchange_end + 1:exchange_end + 1 + payload[exchange_end]]
        try:
            consumer_tag = tag_raw.decode("utf-8", "surrogatepass")
            exchange = exchange_raw.decode("utf-8", "surrogatepass")
            routing_key = key_raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:  # RabbitMQ passes any bytes: dead-lettered, not a crash
            properties = content.properties
            consumer_tag = frames.short_string(tag_raw, "consumer tag", properties)
            exchange = frames.short_string(exchange_raw, "exchange", properties)
            routing_key = frames.short_string(key_raw, "routing key", properties)
        return self._on_basic_deliver(consumer_tag, delivery_tag, bits & 1 == 1, exchange,
                                      routing_key, content)

    def wait(self, method: Any, callback: Any = None, timeout: float | None = None,
             returns_tuple: bool = False) -> Any:
        """py-amqp's, with no wait unbounded: one without a ``timeout`` raises
        ``RecoverableConnectionError`` (a lost connection to the worker) once
        :data:`REPLY_TIMEOUT` passes without the reply, however many other frames (heartbeats,
        deliveries) arrive meanwhile."""
        if timeout is not None:
            return super().wait(method, callback, timeout, returns_tuple)
        promise = ensure_promise(callback)
        methods = method if isinstance(method, list) else [method]
        previous = [self._pending.get(each) for each in methods]
        for each in methods:
            self._pending[each] = promise
        deadline = time.monotonic() + REPLY_TIMEOUT
        try:
            while not promise.ready:
                conn, remaining = self.connection, deadline - time.monotonic()
                if conn is None:
                    raise RecoverableConnectionError("connection already closed")
                if remaining <= 0:
                    raise RecoverableConnectionError(
                        f"RabbitMQ did not answer {methods} within {REPLY_TIMEOUT:g}s")
                try:
                    conn.drain_events(timeout=remaining)
                except TimeoutError:  # nothing arrived in time: the deadline says so next
                    continue
            if not promise.value:
                return None
            args = promise.value[0][1:]  # without the method, as py-amqp returns it
            return args if returns_tuple else (args and args[0])
        finally:
            for each, before in zip(methods, previous, strict=True):
                if before is not None:
                    self._pending[each] = before
                else:
                    self._pending.pop(each, None)

    def _decode_body(self, content: Any) -> None:
        """py-amqp's ``auto_decode``: the body as text in its ``content_encoding`` if it can."""
        if self.auto_decode and "content_encoding" in content.properties:
            try:
                content.body = content.body.decode(content.properties["content_encoding"])
            except Exception:  # noqa: BLE001 - py-amqp's rule: the body stays as it came
                pass

    def _on_get_ok_frame(self, payload: bytes, content: Any) -> None:
        """py-amqp's dispatch of ``basic.get-ok`` (a queue read by a peek) to the ``basic_get``
        waiting for it, its exchange and routing key read by :func:`.frames.short_string`:
        bytes that are not UTF-8 come with the message's error rather than raising out of the
        read (the message held, the channel's waiter lost)."""
        self._decode_body(content)
        waiting = self._pending.pop(spec.Basic.GetOk, None)
        if waiting is None:  # py-amqp has no listener of its own for it either
            return
        properties = content.properties
        delivery_tag, bits = _DELIVER_TAG(payload, 4)
        exchange_end = 14 + payload[13]
        exchange = frames.short_string(payload[14:exchange_end], "exchange", properties)
        key_end = exchange_end + 1 + payload[exchange_end]
        routing_key = frames.short_string(payload[exchange_end + 1:key_end], "routing key",
                                          properties)
        message_count, = _MESSAGE_COUNT(payload, key_end)
        waiting(spec.Basic.GetOk, delivery_tag, bits & 1 == 1, exchange, routing_key,
                message_count, content)

    def _on_basic_deliver(self, consumer_tag: str, delivery_tag: int, *args: Any) -> None:
        """Counted as held at once (a later ``multiple`` ack must not cover it), and handed to
        its consumer's callback unless another callback is running: then it waits in the
        connection's :attr:`~BufferedConnection.held_deliveries` for the next read."""
        if consumer_tag not in (self.no_ack_consumers or ()):
            self.unsettled.add(delivery_tag)
        conn = self.connection
        if isinstance(conn, BufferedConnection):
            conn.deliver(self, (consumer_tag, delivery_tag, *args))
        else:
            super()._on_basic_deliver(consumer_tag, delivery_tag, *args)

    def hand_over(self, delivery: tuple[Any, ...]) -> None:
        """Run the consumer callback of ``delivery`` (arguments of ``basic.deliver``)."""
        super()._on_basic_deliver(*delivery)

    def message_to_python(self, raw_message: Any) -> Any:
        """kombu's Message; one whose content header could not be read carries the error, so
        the consumer hands it to its ``on_decode_error`` (dead-lettered, not a crash)."""
        unreadable = raw_message.properties.pop(frames.UNREADABLE, None)
        message = super().message_to_python(raw_message)
        if unreadable is not None:
            try:
                raise unreadable
            except ProtocolError:
                message.errors.append(sys.exc_info())
        return message

    def basic_get(self, queue: str = "", no_ack: bool = False, argsig: str = "Bsb") -> Any:
        message = super().basic_get(queue, no_ack, argsig)
        if message is not None and not no_ack:
            self.unsettled.add(message.delivery_info["delivery_tag"])
        return message

    def basic_ack(self, delivery_tag: int, multiple: bool = False, argsig: str = "Lb") -> None:
        """py-amqp's ``basic_ack`` frame, packed whole in one step and written to the socket,
        with no promise made (an ack has no reply). The worker's main thread is the only writer
        on its consuming connection, so py-amqp's frame writer (its shared buffer and lock, a
        format string built per frame) is not needed for it."""
        conn = self.connection
        # ``_transport``: py-amqp's ``transport`` property would connect again when it is gone.
        transport = None if conn is None else conn._transport
        if transport is None:
            raise RecoverableConnectionError("connection already closed")
        transport.write(_ACK_FRAME(1, self.channel_id, _ACK_SIZE, *spec.Basic.Ack, delivery_tag,
                                   1 if multiple else 0, FRAME_END))
        conn.bytes_sent += 1  # what py-amqp's writer counts: the heartbeat check reads it
        if not multiple:
            self.unsettled.discard(delivery_tag)
        elif delivery_tag == 0:  # AMQP: multiple with tag 0 acks everything outstanding
            self.unsettled.clear()
        else:
            self.unsettled = {tag for tag in self.unsettled if tag > delivery_tag}

    def basic_reject(self, delivery_tag: int, requeue: bool, argsig: str = "Lb") -> Any:
        done = super().basic_reject(delivery_tag, requeue, argsig)
        self.unsettled.discard(delivery_tag)
        return done

    def _do_revive(self) -> None:
        """py-amqp opens the channel again (after the broker closed it): it holds nothing and
        its delivery tags start at 1 again."""
        self._forget_held()
        super()._do_revive()

    def basic_recover(self, requeue: bool = False) -> Any:
        done = super().basic_recover(requeue)
        self._forget_held()  # given back or sent again under new tags
        return done

    def _forget_held(self) -> None:
        self.unsettled.clear()
        conn = self.connection
        if isinstance(conn, BufferedConnection):
            conn.forget_held(self)

    def ack_many(self, tags: Iterable[int]) -> None:
        """Ack ``tags``: one frame for those below every delivery still held, one each for the
        rest (see :func:`ack_plan`)."""
        tags = list(tags)
        if len(tags) == 1:  # the solo pool's turn: nothing to plan
            self.basic_ack(tags[0])
            return
        upto, one_by_one = ack_plan(tags, self.unsettled)
        if upto is not None:
            self.basic_ack(upto, multiple=True)
        for tag in one_by_one:
            self.basic_ack(tag)


class BufferedConnection(pyamqp.Connection):
    """A py-amqp connection over :class:`BufferedTCPTransport` (TLS: py-amqp's own), with
    :class:`WorkerChannel` channels and :func:`.frames.frame_handler`."""

    Channel = WorkerChannel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("frame_handler", frames.frame_handler)
        super().__init__(*args, **kwargs)
        self.held_deliveries: deque[tuple[WorkerChannel, tuple[Any, ...]]] = deque()
        """Deliveries that arrived while a consumer callback ran, in arrival order."""
        self._in_callback = False

    def deliver(self, channel: WorkerChannel, delivery: tuple[Any, ...]) -> None:
        """Hand ``delivery`` to its consumer's callback, unless one is running: whatever a
        callback waits for on this connection (a declare's reply, a confirm, the event check
        py-amqp makes before every publish) reads deliveries too, and a callback run inside
        another one broke the outer one's waits and could leave its message unsettled. Such a
        delivery waits, in order, for the next read of the connection (:meth:`blocking_read`,
        :meth:`drain_buffered`)."""
        if self._in_callback:
            self.held_deliveries.append((channel, delivery))
            return
        self._in_callback = True
        try:
            channel.hand_over(delivery)
        finally:
            self._in_callback = False

    def deliver_held(self) -> bool:
        """Hand the oldest held delivery to its callback (none while a callback runs); False
        when there is none. One of a channel that closed since is dropped: the broker gives
        it back, unacked, with the channel."""
        while self.held_deliveries and not self._in_callback:
            channel, delivery = self.held_deliveries.popleft()
            if channel.is_open and channel.connection is self:
                self.deliver(channel, delivery)
                return True
        return False

    def forget_held(self, channel: WorkerChannel) -> None:
        """Drop the held deliveries of ``channel``: it was reopened or recovered, and the
        broker gives them back under new delivery tags."""
        self.held_deliveries = deque(held for held in self.held_deliveries
                                     if held[0] is not channel)

    def drain_buffered(self, messages: int) -> None:
        """Deliver the messages whose frames are already read, without touching the socket
        (``drain_events`` stops after one message), but no more than about ``messages`` of
        them: acks sent meanwhile let the broker send more, and the worker has outcomes,
        timers and signals to serve too. Nothing over TLS (py-amqp's transport reads exactly
        one frame at a time). Deliveries held while a callback ran (:meth:`deliver`) first."""
        budget = max(1, messages)
        while budget and self.deliver_held():
            budget -= 1
        transport = self.transport
        if not isinstance(transport, BufferedTCPTransport):
            return
        for _ in range(FRAMES_PER_MESSAGE * budget):
            if self.transport is not transport:
                return
            frame = transport.buffered_frame()
            if frame is None:
                return
            self.on_inbound_frame(frame)

    def blocking_read(self, timeout: float | None = None) -> Any:
        """py-amqp's, taking a frame the buffer holds whole without its timeout calls; a held
        delivery (:meth:`deliver`) is handed over first, as one read."""
        if self.held_deliveries and self.deliver_held():
            return True
        transport = self.transport
        frame = transport.buffered_frame() if isinstance(transport, BufferedTCPTransport) \
            else None
        if frame is None:
            return super().blocking_read(timeout)
        return self.on_inbound_frame(frame)

    def Transport(self, host: str, connect_timeout: float | None, ssl: Any = False,  # noqa: N802
                  read_timeout: float | None = None, write_timeout: float | None = None,
                  socket_settings: Any = None, **kwargs: Any) -> Any:
        if ssl:
            return amqp.transport.Transport(
                host, connect_timeout=connect_timeout, ssl=ssl, read_timeout=read_timeout,
                write_timeout=write_timeout, socket_settings=socket_settings, **kwargs)
        return BufferedTCPTransport(
            host, connect_timeout=connect_timeout, read_timeout=read_timeout,
            write_timeout=write_timeout, socket_settings=socket_settings, **kwargs)


class WorkerTransport(pyamqp.Transport):
    """kombu's ``pyamqp`` transport with buffered reads: the worker's consuming connection."""

    Connection = BufferedConnection
