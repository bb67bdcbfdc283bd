"""One thread's subscriber connection for Redis results, read with qtui's own RESP reader
instead of redis-py's PubSub (whose per-message machinery was most of a ``get()``'s CPU).

The connection speaks RESP3, in which a subscribed connection can still run ``GET``: the key is
read on the connection that carries the subscription, after it, so a result stored before the
subscription took effect is found and one stored after is published to it, with no second
connection and no wait for the subscription's confirmation. A subscription whose wait is over
is let go in the write of the next one, not in a write of its own.
"""

from __future__ import annotations

import select
from typing import Any

import redis

from ..brokers.redis import wire

#: Subscriptions made at send time between two reads of the connection: what they leave on it
#: (confirmations, results nobody waits for) is then read without waiting, so a thread that
#: sends and never waits does not fill its connection.
EXPECTED_UNREAD_MAX = 32


class NoResp3(redis.ResponseError):
    """The server refused ``HELLO 3``: it speaks RESP2 only (older than Redis 6, or ``HELLO``
    renamed away)."""


class Ended(redis.ConnectionError):
    """The listener was closed for good (its backend closed, or its thread ended)."""


class Listener:
    """Subscribes, asks for a key and reads what comes back, on one dedicated connection."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self.conn = pool.connection_class(**{**pool.connection_kwargs, "protocol": 3})
        self.reader = wire.Reader()
        self.poller = select.poll()
        #: The channel subscribed to at send time and not yet waited for.
        self.subscribed: str | None = None
        #: The channel of the last wait that returned: let go in the next subscription's write.
        self.waited: str | None = None
        #: Replies to ``GET`` still on their way that an ended wait no longer needs.
        self.stale = 0
        self.sends = 0
        #: A reply or push came on the current connection (a reconnect that worked).
        self.answered = False
        self.ended = False

    def _socket(self) -> Any:
        """The connected socket; a new connection (and a fresh state) after a loss."""
        sock = self.conn._sock
        if sock is None:
            if self.ended:
                raise Ended("the subscriber connection was closed for good")
            try:
                self.conn.connect()
            except redis.ResponseError as exc:
                if "HELLO" in str(exc).upper():
                    raise NoResp3(str(exc)) from exc
                raise
            sock = self.conn._sock
            self.reader, self.poller = wire.Reader(), select.poll()
            self.poller.register(sock, select.POLLIN)
            self.subscribed, self.waited, self.stale, self.answered = None, None, 0, False
        return sock

    def send(self, *commands: tuple[Any, ...]) -> None:
        """``commands`` in one write, their replies read later with :meth:`read`."""
        sock = self._socket()
        sock.sendall(wire.commands(self.conn, commands))

    def read(self, timeout: float) -> tuple[bool, Any] | None:
        """The next reply or push, or None when none came within ``timeout`` seconds."""
        while (item := self.reader.next()) is None:
            sock = self._socket()
            pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted
            if not (pending and pending()) and not self.poller.poll(timeout * 1000):
                return None
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("Redis closed the subscriber connection")
            self.reader.feed(data)
        self.answered = True
        return item

    def expect(self, key: str) -> None:
        """Subscribe to ``key`` now without waiting (letting go of the previous such
        subscription), and now and then read what earlier ones left on the connection."""
        self.sends += 1
        if self.sends > EXPECTED_UNREAD_MAX:
            while (item := self.read(0)) is not None:
                if not item[0] and self.stale:
                    self.stale -= 1
            self.sends = 0
        self.send(*self._unsubscribe_held(), ("SUBSCRIBE", key))
        self.subscribed = key

    def _unsubscribe_held(self, keep: str | None = None) -> list[tuple[str, str]]:
        """The ``UNSUBSCRIBE`` of the subscriptions held but for ``keep`` (the one made at send
        time, the one of the last wait), for the next write."""
        held = dict.fromkeys(c for c in (self.subscribed, self.waited) if c and c != keep)
        self.subscribed = self.waited = None
        return [("UNSUBSCRIBE", channel) for channel in held]

    def wait(self, key: str, ready: Any, wake: Any) -> Any:
        """Wait for ``key``'s result: ``ready(payload)`` turns a stored or published payload
        (None: nothing stored) into a meta, or None while the task is not done; ``wake()`` is how
        long to wait before reading the key again (it raises once the caller's time is up).
        Messages and replies left over from earlier waits are skipped; the subscription made at
        send time for another task goes, so the connection holds one subscription. A wait that
        returns keeps its subscription: the next subscription lets it go in its write."""
        channel = key.encode()
        asked = 0  # GETs of this wait whose reply has not come
        subscribed = key in (self.subscribed, self.waited)
        unsubscribe = self._unsubscribe_held(keep=key)
        if subscribed:  # subscribed at send (or waited already): see what already came, then ask
            read_key = False
            if unsubscribe:
                self.send(*unsubscribe)
        else:
            self.send(*unsubscribe, ("SUBSCRIBE", key), ("GET", key))
            asked, read_key = 1, True
        meta = None
        try:
            while meta is None:
                item = self.read(wake() if read_key else 0)
                if item is None:
                    self.send(("GET", key))  # a publication can be lost, the stored key not
                    asked, read_key = asked + 1, True
                    continue
                push, value = item
                if push:
                    if value[0] == b"message" and value[1] == channel:
                        meta = ready(value[2])
                elif self.stale:
                    self.stale -= 1
                else:
                    asked -= 1
                    if isinstance(value, wire.ErrorReply):
                        raise redis.ResponseError(value.decode(errors="replace"))
                    meta = ready(value)
        finally:
            self.stale += asked
        self.waited = key
        return meta

    def unsubscribe(self, key: str) -> None:
        """Let go of ``key`` (sent, not waited for: its answer is skipped later)."""
        self.send(("UNSUBSCRIBE", key))

    def close(self) -> None:
        """Disconnect; the next command connects again and starts from no subscription."""
        self.conn.disconnect()
        self.subscribed, self.answered = None, False

    def end(self) -> None:
        """Disconnect for good: a wait in progress (in another thread) raises :class:`Ended`
        instead of connecting again."""
        self.ended = True
        self.close()
