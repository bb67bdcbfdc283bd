"""Frame decoding for the worker's AMQP connection: py-amqp's, with a faster read of a message's
content header.

A task message's content header carries some twenty application headers (Celery's protocol v2),
and py-amqp reads each through its general ``_read_item`` (a chain of type tests, a ``struct``
format parsed per item, a helper call per string): decoding the header took more of the worker's
CPU per task than running a no-op task. :func:`decode_properties` reads the same bytes into the same
values (the common types inline, the rare ones through py-amqp's own ``_read_item``), and
:func:`frame_handler` is py-amqp's frame handler with that decode for ``basic`` content headers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import datetime, timezone
from struct import Struct
from typing import Any

from amqp import spec
from amqp.basic_message import Message
from amqp.exceptions import UnexpectedFrame
from amqp.serialization import _read_item

from ...exceptions import ProtocolError

#: py-amqp's methods followed by a content header and body.
CONTENT_METHODS = frozenset({spec.Basic.Return, spec.Basic.Deliver, spec.Basic.GetOk})
#: The class id of ``basic`` content headers (the only class with content in AMQP 0-9-1).
BASIC_CLASS_ID = spec.Basic.CLASS_ID

#: Table keys kept decoded (a task's headers repeat the same few dozen names); only keys that
#: are text, and the cache starts over when full.
KEYS_KEPT = 1024
_KEYS: dict[bytes, str] = {}
#: The property :func:`frame_handler` puts the error in when a content header cannot be read
#: (and :func:`short_string`, when a delivery's routing key or exchange is not UTF-8); the
#: worker's channel takes it out and makes the message undecodable (dead-lettered).
UNREADABLE = "x-qtui-unreadable-header"
#: What a hostile content header can raise while being read (RecursionError: tables nested
#: thousands deep, which RabbitMQ passes on).
DECODE_ERRORS = (UnicodeDecodeError, ValueError, OverflowError, OSError, IndexError,
                 struct.error, RecursionError)

_U32 = Struct(">I").unpack_from
_I32 = Struct(">i").unpack_from
_U64 = Struct(">Q").unpack_from
_METHOD_SIG = Struct(">HH").unpack_from
_CONTENT_HEADER = Struct(">HxxQ").unpack_from
_FLAGS = Struct(">H").unpack_from

#: Basic properties in wire order: flag bit, name, and how the value is written (short string,
#: table, octet, timestamp).
_PROPERTIES = ((0x8000, "content_type", "s"), (0x4000, "content_encoding", "s"),
               (0x2000, "application_headers", "F"), (0x1000, "delivery_mode", "o"),
               (0x0800, "priority", "o"), (0x0400, "correlation_id", "s"),
               (0x0200, "reply_to", "s"), (0x0100, "expiration", "s"),
               (0x0080, "message_id", "s"), (0x0040, "timestamp", "T"), (0x0020, "type", "s"),
               (0x0010, "user_id", "s"), (0x0008, "app_id", "s"), (0x0004, "cluster_id", "s"))


def short_string(raw: bytes, what: str, properties: dict[str, Any]) -> str:
    """A short string of a method frame (a delivery's routing key, say) as py-amqp reads it.
    RabbitMQ passes any bytes through there, where py-amqp's strict decode would raise out of
    the connection's read loop: bytes that are not UTF-8 are kept as escapes (surrogateescape)
    and the message's ``properties`` get the error, so it is dead-lettered with it."""
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        properties.setdefault(UNREADABLE, ProtocolError(f"the {what} is not UTF-8: {raw!r}"))
        return raw.decode("utf-8", "surrogateescape")


def _text(raw: bytes) -> str | bytes:
    """A table key or long string: text, or the bytes as they came when not UTF-8 (py-amqp's)."""
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw


def _read_value(buf: bytes, offset: int) -> tuple[Any, int]:
    """The field value at ``offset`` (its type letter first) and the offset after it."""
    kind = buf[offset]
    if kind == 0x53:  # 'S': long string
        size, = _U32(buf, offset + 1)
        start = offset + 5
        return _text(buf[start:start + size]), start + size
    if kind == 0x56:  # 'V': void
        return None, offset + 1
    if kind == 0x74:  # 't': boolean
        return bool(buf[offset + 1]), offset + 2
    if kind == 0x49:  # 'I': signed 32-bit
        return _I32(buf, offset + 1)[0], offset + 5
    if kind == 0x46:  # 'F': table
        size, = _U32(buf, offset + 1)
        return read_table(buf, offset + 5, offset + 5 + size)
    if kind == 0x54:  # 'T': timestamp; out of datetime's range it stays the number it is
        seconds, = _U64(buf, offset + 1)
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None), offset + 9
        except (ValueError, OverflowError, OSError):
            return seconds, offset + 9
    if kind == 0x41:  # 'A': array
        size, = _U32(buf, offset + 1)
        offset, limit = offset + 5, offset + 5 + size
        items = []
        while offset < limit:
            item, offset = _read_value(buf, offset)
            items.append(item)
        return items, offset
    value, offset = _read_item(buf, offset)  # the rest, and what py-amqp refuses, as it does
    return value, offset


def read_table(buf: bytes, offset: int, limit: int) -> tuple[dict[Any, Any], int]:
    """The field table whose entries run from ``offset`` to ``limit``, and the offset after it.
    Strings and voids, most of a task's headers, are read here rather than by a call each."""
    table: dict[Any, Any] = {}
    keys = _KEYS
    while offset < limit:
        start = offset + 1
        offset = start + buf[offset]
        raw = buf[start:offset]
        key: str | bytes | None = keys.get(raw)
        if key is None:
            key = _text(raw)
            if isinstance(key, str):
                if len(keys) >= KEYS_KEPT:
                    keys.clear()
                keys[raw] = key
        kind = buf[offset]
        if kind == 0x53:  # 'S': long string
            size, = _U32(buf, offset + 1)
            start = offset + 5
            offset = start + size
            raw = buf[start:offset]
            try:
                table[key] = raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                table[key] = raw
        elif kind == 0x56:  # 'V': void
            table[key] = None
            offset += 1
        else:
            table[key], offset = _read_value(buf, offset)
    return table, offset


def decode_properties(buf: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """``basic`` content properties, as py-amqp's ``decode_properties_basic`` returns them."""
    properties: dict[str, Any] = {}
    flags, = _FLAGS(buf, offset)
    offset += 2
    for bit, name, kind in _PROPERTIES:
        if not flags & bit:
            continue
        if kind == "s":
            size = buf[offset]
            properties[name] = buf[offset + 1:offset + 1 + size].decode("utf-8", "surrogatepass")
            offset += 1 + size
        elif kind == "F":
            size, = _U32(buf, offset)
            properties[name], offset = read_table(buf, offset + 4, offset + 4 + size)
        elif kind == "o":
            properties[name] = buf[offset]
            offset += 1
        else:
            properties[name], = _U64(buf, offset)
            offset += 8
    return properties, offset


def frame_handler(connection: Any, callback: Callable[..., Any]) -> Callable[[Any], bool]:
    """py-amqp's ``method_framing.frame_handler`` (same frames, checks and callbacks), reading
    ``basic`` content headers with :func:`decode_properties`."""
    expected: dict[int, int] = {}
    partial: dict[int, Message] = {}

    def on_frame(frame: tuple[int, int, bytes]) -> bool:
        frame_type, channel, buf = frame
        connection.bytes_recv += 1
        if frame_type != 8 and frame_type != expected.get(channel, 1):
            raise UnexpectedFrame(f"Received frame {frame_type} while expecting type: "
                                  f"{expected.get(channel, 1)}")
        if frame_type == 1:
            method_sig = _METHOD_SIG(buf, 0)
            if method_sig in CONTENT_METHODS:
                partial[channel] = Message(frame_method=method_sig, frame_args=buf)
                expected[channel] = 2
                return False
            callback(channel, method_sig, buf, None)
        elif frame_type == 2:
            msg = partial[channel]
            class_id, msg.body_size = _CONTENT_HEADER(buf, 0)
            if class_id == BASIC_CLASS_ID:
                try:
                    msg.properties, _ = decode_properties(buf, 12)
                except DECODE_ERRORS as exc:
                    # Not a lost connection: the message is delivered and dead-lettered.
                    msg.properties = {UNREADABLE: ProtocolError(
                        f"cannot read the message's content header: {exc!r}")}
            else:
                msg._load_properties(class_id, buf, 12)
            if msg.body_size:
                expected[channel] = 3
                return False
            msg.ready = True
            expected[channel] = 1
            del partial[channel]
            callback(channel, msg.frame_method, msg.frame_args, msg)
        elif frame_type == 3:
            msg = partial[channel]
            msg.inbound_body(buf)
            if not msg.ready:
                return False
            expected[channel] = 1
            del partial[channel]
            callback(channel, msg.frame_method, msg.frame_args, msg)
        elif frame_type == 8:
            return False
        return True

    return on_frame
