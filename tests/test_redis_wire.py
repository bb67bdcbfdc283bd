"""qtui's RESP reader (``wire.Reader``, ``wire.read_reply``): what Redis answers, whole or cut
anywhere."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest
import redis

from qtui.core.brokers.redis import wire

STREAM = (b">3\r\n$9\r\nsubscribe\r\n$5\r\nchan1\r\n:1\r\n"  # RESP3 push: a confirmation
          b"$5\r\nhello\r\n"  # a GET's value
          b"_\r\n"  # RESP3 null (GET of a missing key)
          b"$-1\r\n"  # RESP2 null
          b"-WRONGTYPE Operation against a key\r\n"
          b">3\r\n$7\r\nmessage\r\n$5\r\nchan1\r\n$11\r\n{\"a\": \"\r\n\"}\r\n"
          b"*2\r\n+OK\r\n~1\r\n:7\r\n")
EXPECTED = [(True, [b"subscribe", b"chan1", 1]), (False, b"hello"), (False, None),
            (False, None), (False, b"WRONGTYPE Operation against a key"),
            (True, [b"message", b"chan1", b'{"a": "\r\n"}']), (False, [b"OK", [7]])]


def _read_all(reader: wire.Reader) -> list[tuple[bool, object]]:
    items = []
    while (item := reader.next()) is not None:
        items.append(item)
    return items


def test_the_reader_parses_replies_and_pushes():
    reader = wire.Reader()
    reader.feed(STREAM)
    items = _read_all(reader)
    assert items == EXPECTED
    assert isinstance(items[4][1], wire.ErrorReply)
    assert reader.next() is None


def test_the_reader_waits_for_the_rest_of_an_item_cut_anywhere():
    """A reply split across reads (a large result comes in many) is given once whole."""
    for cut in range(1, len(STREAM)):
        reader = wire.Reader()
        reader.feed(STREAM[:cut])
        items = _read_all(reader)
        reader.feed(STREAM[cut:])
        assert items + _read_all(reader) == EXPECTED, cut


@pytest.mark.redis
def test_read_reply_reads_what_redis_py_reads(redis_url, unique):
    """A reply read from the socket by ``read_reply`` is what redis-py's ``read_response``
    gives: the value, or the error reply raised as redis-py's exception for its code; the
    connection stays in step for the next command."""
    client = redis.Redis.from_url(redis_url)
    key = f"wire-{unique}"
    client.set(key, "x")
    commands = [["GET", key], ["EXISTS", key], ["LPUSH", key, "a"], ["EVALSHA", "0" * 40, 0],
                ["NO-SUCH-COMMAND"], ["GET", key]]
    connection = client.connection_pool.get_connection()
    try:
        def outcomes(read: Callable[[], object]) -> list[object]:
            found: list[object] = []
            for command in commands:
                connection.send_packed_command([wire.command(connection, command)])
                try:
                    found.append(read())
                except redis.ResponseError as exc:
                    found.append((type(exc), str(exc)))
            return found

        theirs = outcomes(connection.read_response)
        assert outcomes(lambda: wire.read_reply(connection, 5.0)) == theirs
        assert theirs[0] == b"x" and theirs[3][0] is redis.exceptions.NoScriptError
    finally:
        client.connection_pool.release(connection)
        client.delete(key)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("sent", "raised"), [
    (b"$10\r\nhal", redis.TimeoutError),  # half a reply, then nothing
    (b"?what\r\n", redis.InvalidResponse),  # a reply type no command gets
    (b"$10\r\nhal", redis.ConnectionError),  # half a reply, then the server closes
], ids=["half-then-stall", "unknown-type", "half-then-close"])
def test_read_reply_drops_a_connection_whose_reply_it_could_not_read(sent, raised):
    """A reply read in part (or not understood) leaves bytes the next command would take for
    its own: the connection is closed, as redis-py's ``read_response`` closes it, and the
    error is redis-py's."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    close = raised is redis.ConnectionError

    def serve() -> None:
        peer, _ = listener.accept()
        with peer:
            peer.recv(1024)
            peer.sendall(sent)
            if not close:
                peer.recv(1024)  # until the client hangs up

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    connection = redis.Connection(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        connection._sock = socket.create_connection(("127.0.0.1", port))  # no hand-shake
        connection.send_packed_command([wire.command(connection, ["GET", "k"])])
        with pytest.raises(raised):
            wire.read_reply(connection, 0.5)
        assert connection._sock is None
    finally:
        connection.disconnect()
        server.join(5)
        listener.close()
