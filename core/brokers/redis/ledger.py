"""The cluster ledger kept in Redis (:mod:`qtui.core.ledger`): a sorted set per kind, scored by
expiry, on the broker's database or the result backend's."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis

from ...ledger import KEY_PREFIX, Ledger
from . import wire
from .urls import client_url


class RedisLedger(Ledger):
    def __init__(self, url: str) -> None:
        self.where = "redis"
        self.url = url
        self.errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(client_url(url), socket_connect_timeout=5,
                                           socket_timeout=10)
        self._sender: redis.connection.Connection | None = None
        """The connection of ``put(wait=False)``, the commands of the last such put and how
        many of their answers are not read yet (read from its socket by
        :class:`~.wire.Reader`, not redis-py's parser)."""
        self._unanswered: list[tuple[Any, ...]] = []
        self._unread = 0
        self._replies = wire.Reader()

    def key(self, kind: str) -> str:
        """The sorted set of ``kind``: a script on the same database may write it directly."""
        return KEY_PREFIX + kind

    def put(self, kind: str, records: Mapping[str, float],
            discard: Iterable[str] = (), wait: bool = True, trim: bool = True) -> None:
        key, gone = self.key(kind), list(discard)
        commands: list[tuple[Any, ...]] = []
        if records:
            commands.append(("ZADD", key, *(x for k, e in records.items() for x in (e, k))))
            if trim:
                commands.append(("ZREMRANGEBYSCORE", key, "-inf", time.time()))
        if gone:
            commands.append(("ZREM", key, *gone))
        self._read_answers()
        if not commands:
            return
        if wait:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()
            return
        # Sent before the caller goes on (a task starts): Redis has it even if this process is
        # killed at once; the answer is read with the next put, so no round trip is waited for.
        # A kept connection the server closed meanwhile takes the write without an error and
        # loses it: it is replaced first.
        if self._sender is None:
            self._sender = self.client.connection_pool.get_connection()
            self._replies = wire.Reader()
        elif wire.dropped(self._sender):
            self._sender.disconnect()  # the send connects again
            self._replies = wire.Reader()
        try:
            self._sender.send_packed_command([wire.commands(self._sender, commands)])
        except self.errors:
            self._drop_sender()
            raise
        self._unanswered, self._unread = commands, len(commands)

    def _read_answers(self) -> None:
        """Read the answers of the last ``put(wait=False)``. Its connection lost before they
        came (the server dropped it after the check in :meth:`put`, a network cut), the put may
        not have reached Redis: it is sent once more on a new connection, and waited for (every
        command of a put can run twice)."""
        if self._sender is None or not self._unread:
            return
        try:
            while self._unread:
                item = self._replies.next()
                if item is None:
                    sock = self._sender._sock
                    data = sock.recv(65536) if sock is not None else b""
                    if not data:
                        raise redis.ConnectionError("Redis closed the ledger's connection")
                    self._replies.feed(data)
                    continue
                self._unread -= 1
                if isinstance(item[1], wire.ErrorReply):
                    raise redis.ResponseError(item[1].decode(errors="replace"))
        except redis.ResponseError:
            self._drop_sender()
            raise
        except self.errors:
            sender, unanswered = self._sender, self._unanswered
            self._unanswered, self._unread, self._replies = [], 0, wire.Reader()
            sender.disconnect()
            try:
                wire.send_kept(sender, unanswered)
            except self.errors:
                self._drop_sender()
                raise

    def _drop_sender(self) -> None:
        sender, self._sender, self._unread, self._unanswered = self._sender, None, 0, []
        if sender is not None:
            sender.disconnect()
            self.client.connection_pool.release(sender)

    def present(self, kind: str, keys: Iterable[str]) -> set[str]:
        wanted = list(keys)
        if not wanted:
            return set()
        now = time.time()
        scores = self.client.zmscore(KEY_PREFIX + kind, wanted)
        return {k for k, s in zip(wanted, scores, strict=True) if s is not None and s > now}

    def load(self, kind: str) -> dict[str, float]:
        # redis-py types the reply for any decode_responses and withscores; never decoded here
        rows = cast("list[tuple[bytes, float]]", self.client.zrangebyscore(
            KEY_PREFIX + kind, f"({time.time()}", "+inf", withscores=True))
        return {k.decode(): s for k, s in rows}

    def written_by(self, channel: Any, broker_url: str) -> bool:
        """The worker's Redis channel, on the database the ledger is kept in, with plain key
        names."""
        return self.url == broker_url and not channel.global_keyprefix

    def close(self) -> None:
        try:
            self._read_answers()
        finally:
            self._drop_sender()
            self.client.close()
