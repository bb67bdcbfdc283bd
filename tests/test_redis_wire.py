"""qtui's RESP reader (``wire.Reader``): what Redis answers, whole or cut anywhere."""

from __future__ import annotations

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
