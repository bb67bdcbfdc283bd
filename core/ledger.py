"""The cluster ledger: small records with an expiry that every qtui process of a cluster can read.

A worker that is SIGKILLed keeps nothing, and one that starts later knows nothing; what both
must agree on (which deliveries started running, which task ids are revoked) is kept where
they all meet: on the broker when it is Redis (a sorted set per kind, scored by expiry) or the
embedded SQLite broker (a table in its file), else in the result backend when that is Redis or
SQLite (RabbitMQ with such a backend). With neither -- RabbitMQ and rpc:// or no results --
there is no ledger (:func:`ledger_for` returns None) and callers say what they do without it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis

from .backends.sqlite import results_path
from .brokers.redis import channel as redis_channel
from .brokers.redis import wire
from .brokers.sqlite import broker_path, ledger_table

if TYPE_CHECKING:
    from .app import App

logger = logging.getLogger("qtui")

KEY_PREFIX = "qtui.ledger."
REVOKED = "revoked"
"""Kind of the revoked task ids: every qtui worker reads them when it (re)connects."""
REVOKE_EXPIRES = 10_800.0  # 3 hours, as Celery


class Ledger:
    """Records by ``kind``: a key and the time (epoch seconds) it expires at."""

    where: str
    """Where the records are kept, for logs and the README's promises."""
    errors: tuple[type[BaseException], ...]
    """What the store raises when it is unreachable."""

    def put(self, kind: str, records: Mapping[str, float],
            discard: Iterable[str] = (), wait: bool = True, trim: bool = True) -> None:
        """Add (or extend) ``records`` and remove ``discard``, in one round trip. ``wait=False``
        where the store allows it: return once the request is sent, and read its answer with
        the next one (errors surface then). ``trim``: drop the expired records of ``kind`` too
        (when adding), which a caller writing often does now and then only."""
        raise NotImplementedError

    def present(self, kind: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are recorded and not expired."""
        raise NotImplementedError

    def key(self, kind: str) -> str:
        """Where the records of ``kind`` are kept, for a broker channel that writes them in a
        call of its own (:class:`StartRecord`)."""
        raise NotImplementedError

    def load(self, kind: str) -> dict[str, float]:
        """Every record of ``kind`` not expired yet, with its expiry."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class RedisLedger(Ledger):
    def __init__(self, url: str) -> None:
        self.where = "redis"
        self.url = url
        self.errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(redis_channel.client_url(url), socket_connect_timeout=5,
                                           socket_timeout=10)
        self._sender: redis.connection.Connection | None = None
        """The connection of ``put(wait=False)``, the commands of the last such put and how
        many of their answers are not read yet (read from its socket by
        :class:`~.brokers.redis.wire.Reader`, not redis-py's parser)."""
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

    def close(self) -> None:
        try:
            self._read_answers()
        finally:
            self._drop_sender()
            self.client.close()


class SQLiteLedger(Ledger):
    """A table of its own in the SQLite file (the embedded broker's or the result store's)."""

    def __init__(self, path: Path) -> None:
        self.where = f"sqlite {path}"
        self.errors = (sqlite3.Error,)
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("PRAGMA synchronous=NORMAL")  # lost with the machine, not a process
            conn.execute(ledger_table.SCHEMA)
            self._conn = conn
        return self._conn

    def put(self, kind: str, records: Mapping[str, float],
            discard: Iterable[str] = (), wait: bool = True, trim: bool = True) -> None:
        gone = list(discard)
        if not records and not gone:
            return
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                ledger_table.write(db, kind, records, gone,
                                   time.time() if records and trim else None)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def key(self, kind: str) -> str:
        """The kind itself: its rows of the ``qtui_ledger`` table."""
        return kind

    def present(self, kind: str, keys: Iterable[str]) -> set[str]:
        wanted = list(keys)
        if not wanted:
            return set()
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db().execute(
                f"SELECT key FROM qtui_ledger WHERE kind = ? AND expires > ? AND key IN ({marks})",
                (kind, time.time(), *wanted)).fetchall()
        return {r[0] for r in rows}

    def load(self, kind: str) -> dict[str, float]:
        with self._lock:
            rows = self._db().execute(
                "SELECT key, expires FROM qtui_ledger WHERE kind = ? AND expires > ?",
                (kind, time.time())).fetchall()
        return dict(rows)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def ledger_for(app: App) -> Ledger | None:
    """The broker when it can keep records (Redis, the embedded broker), else a Redis or SQLite
    result backend, else None."""
    for url, path_of in ((app.broker_url, broker_path),
                         (app.result_backend_url or "", results_path)):
        scheme = redis_channel.scheme(url)
        if scheme in redis_channel.CLIENT_SCHEMES:
            return RedisLedger(url)
        if scheme == "sqlite":
            return SQLiteLedger(path_of(url))
    return None


def record_revoked(app: App, task_ids: Iterable[str]) -> None:
    """Keep a revocation in the ledger (if there is one), so that workers started later, or
    not listening when it was broadcast, refuse these tasks too."""
    ledger = ledger_for(app)
    if ledger is None:
        return
    try:
        ledger.put(REVOKED, dict.fromkeys(task_ids, time.time() + REVOKE_EXPIRES))
    except ledger.errors as exc:
        logger.warning("Cannot keep the revocation in %s (%s): only running workers hear it",
                       ledger.where, exc)
    finally:
        ledger.close()


@dataclass
class StartRecord:
    """What the ledger must learn before a batch of tasks runs, written by the worker's next
    fetch from the broker that keeps it: the Redis fetch script
    (:mod:`qtui.core.brokers.redis.worker_channel`) or the embedded broker's fetch transaction
    (:meth:`qtui.core.brokers.sqlite.Channel.send_fetch`)."""

    key: str
    """Where the records go (:meth:`Ledger.key`)."""
    started: dict[str, float]
    """Delivery keys that start now, and when their record expires (epoch seconds)."""
    settled: list[str]
    """Delivery keys that ended without being lost: removed."""
    trim_before: float | None
    """Remove the records that expired before this time too; None: not this time."""

    @property
    def starts_only(self) -> bool:
        """Nothing to write but the starts (one ``ZADD``)."""
        return not self.settled and self.trim_before is None
