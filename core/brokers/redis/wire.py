"""Redis commands packed by hand in Redis's wire format (RESP), for the hot paths that write to
a redis-py connection directly instead of going through its command path."""

from __future__ import annotations

from typing import Any


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
