"""Redis commands packed by hand in Redis's wire format (RESP), for the hot paths that write to
a redis-py connection directly instead of going through its command path."""

from __future__ import annotations

import json
import select
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis


def arguments(conn: Any, values: list[Any]) -> bytes:
    """``values`` as the arguments of a command in Redis's wire format (RESP bulk strings),
    encoded as ``conn`` encodes them. Strings, integers and floats are encoded here as
    redis-py's encoder would, without its checks for each value."""
    encoder = conn.encoder
    encoding, errors = encoder.encoding, encoder.encoding_errors
    out = []
    for value in values:
        kind = type(value)
        if kind is str:
            value = value.encode(encoding, errors)
        elif kind is int or kind is float:
            value = repr(value).encode()
        else:
            value = encoder.encode(value)
        out.append(b"$%d\r\n%b\r\n" % (len(value), value))
    return b"".join(out)


def command(conn: Any, values: list[Any]) -> bytes:
    """The command ``values`` in Redis's wire format, as redis-py would pack it for ``conn``."""
    return b"*%d\r\n%b" % (len(values), arguments(conn, values))


def commands(conn: Any, each: Iterable[Sequence[Any]]) -> bytes:
    """Several commands packed as :func:`command` packs one, in order, for one write."""
    return b"".join(command(conn, list(values)) for values in each)


def send_kept(conn: Any, each: Sequence[Sequence[Any]]) -> None:
    """``each`` command in one write on ``conn``, a redis-py connection kept from one write to
    the next, their replies read in order and the first error reply raised once all are read.
    A kept connection is not checked before a write the way a pool checkout is, so one the
    server dropped meanwhile (a restart, its ``timeout`` for idle clients, a proxy) fails the
    write: it is then sent once more on a new connection. For commands that can run twice."""

    def run() -> None:
        conn.send_packed_command([commands(conn, each)])
        refused: list[redis.ResponseError] = []
        for _ in each:
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                refused.append(exc)
        if refused:
            raise refused[0]

    for last in (False, True):
        try:
            conn.retry.call_with_retry(run, lambda error: conn.disconnect())
            return
        except redis.ResponseError:
            raise  # every reply was read: the connection is clean
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()  # dropped while kept: the next try connects again
            if last:
                raise
        except BaseException:
            conn.disconnect()  # replies may be left unread: the next write connects again
            raise


def dropped(conn: Any) -> bool:
    """Whether ``conn``, kept with every reply read, has something to read all the same: the
    server closed it (its idle ``timeout``, CLIENT KILL, a restart) or it is out of step. A
    write into it would be lost without an error. One poll, no round trip."""
    sock = conn._sock
    if sock is None:
        return False  # not connected: redis-py connects on the next write
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def read_reply(conn: Any, timeout: float | None = None) -> Any:
    """The reply to the one command sent on ``conn``, a redis-py connection whose earlier
    replies are all read, parsed here from its socket (by :class:`Reader`, which knows the
    replies of single-key commands) rather than by redis-py's parser and its bookkeeping for
    each reply; pushes before it are skipped.
    Raises what ``conn.read_response(timeout=timeout)`` raises: redis-py's TimeoutError,
    ConnectionError or InvalidResponse (the connection closed first, as redis-py closes it:
    a reply left half read must not be taken for the next command's), or the error reply's
    exception (the connection stays usable)."""
    sock = conn._sock
    reader = Reader()
    if timeout is not None:
        sock.settimeout(timeout)
    try:
        while True:
            item = reader.next()
            if item is None:
                data = sock.recv(65536)
                if not data:
                    raise redis.ConnectionError("Connection closed by server.")
                reader.feed(data)
            elif not item[0]:
                break
    except BaseException as exc:
        conn.disconnect()
        if isinstance(exc, TimeoutError):  # the socket's timeout (socket.timeout)
            raise redis.TimeoutError("Timeout reading from socket") from None
        if isinstance(exc, redis.ConnectionError):
            raise
        if isinstance(exc, OSError):
            raise redis.ConnectionError(f"Error while reading from socket: {exc.args}") from exc
        if isinstance(exc, ValueError):  # a reply type no command of ours gets
            raise redis.InvalidResponse(str(exc)) from exc
        raise
    else:
        if timeout is not None:
            sock.settimeout(conn.socket_timeout)
    if conn.health_check_interval:
        conn.next_health_check = time.monotonic() + conn.health_check_interval
    value = item[1]
    if isinstance(value, ErrorReply):
        raise conn._parser.parse_error(value.decode("utf-8", errors="replace"))
    return value


class ErrorReply(bytes):
    """An error reply (``-ERR ...``), returned as a value so the caller decides what it means."""


class Reader:
    """Replies and pushes parsed from the bytes of a connection (RESP2 and RESP3: the kinds
    that subscriptions and single-key commands answer with), without redis-py's parser and
    its per-reply bookkeeping. :meth:`next` gives ``(is_push, value)`` or None until a whole
    item has been fed."""

    def __init__(self) -> None:
        self.buffer = bytearray()  # grows in place: a large reply comes in many reads

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next(self) -> tuple[bool, Any] | None:
        buffer = self.buffer
        if not buffer:
            return None
        try:
            value, end = _parse(buffer, 0)
        except _Incomplete:
            return None
        push = buffer[0] == 0x3E  # '>': a push (a message, a (un)subscription)
        del buffer[:end]
        return push, value


class _Incomplete(Exception):
    """The buffer ends inside the item being parsed."""


def _parse(buffer: bytearray, pos: int) -> tuple[Any, int]:
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line, pos = buffer[pos], buffer[pos + 1:end], end + 2
    if kind == 0x24 or kind == 0x3D:  # '$' bulk string, '=' verbatim string
        size = int(line)
        if size < 0:
            return None, pos
        if len(buffer) < pos + size + 2:
            raise _Incomplete
        return bytes(buffer[pos:pos + size]), pos + size + 2
    if kind == 0x2A or kind == 0x3E or kind == 0x7E:  # '*' array, '>' push, '~' set
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            items.append(item)
        return items, pos
    if kind == 0x3A:  # ':' integer
        return int(line), pos
    if kind == 0x5F:  # '_' null
        return None, pos
    if kind == 0x2B:  # '+' simple string
        return bytes(line), pos
    if kind == 0x2D:  # '-' error
        return ErrorReply(line), pos
    raise ValueError(f"unexpected reply type {chr(kind)!r} from Redis")


def split_record(record: bytes) -> tuple[bytes, str, str] | None:
    """The item, exchange and routing key of an ``unacked`` record (``[item, exchange, routing
    key]`` in JSON) without decoding the item, which Python may refuse (Lua's JSON read it):
    the shortest tail after a comma that holds two strings is taken as exchange and routing
    key. None when no tail does."""
    if not (record.startswith(b"[") and record.endswith(b"]")):
        return None
    at = len(record)
    while (at := record.rfind(b",", 1, at)) > 0:
        try:
            tail = json.loads(b"[" + record[at + 1:])
        except (ValueError, RecursionError):  # a comma inside the item, or inside a string
            continue
        if len(tail) == 2 and all(isinstance(x, str) for x in tail):
            return record[1:at], tail[0], tail[1]
        if len(tail) > 2:
            return None
    return None
