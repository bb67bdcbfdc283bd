"""qtui's RESP reader (``wire.Reader``, ``wire.read_reply``): what Redis answers, whole or cut
anywhere."""

from __future__ import annotations

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
