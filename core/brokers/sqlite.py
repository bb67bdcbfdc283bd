"""qtui's embedded broker: a kombu virtual transport that keeps queues, bindings and messages in
one SQLite file, shared by every process on the machine that opens the same path.

URLs (``kombu.Connection(url)``; kombu hands this transport the raw URL, see ``can_parse_url``):

- ``sqlite:///tmp/broker.db`` and ``sqlite:////tmp/broker.db`` both mean ``/tmp/broker.db``: any
  run of slashes after ``sqlite://`` starts an absolute path (so the SQLAlchemy spelling works too);
- ``sqlite://broker.db`` and ``sqlite://data/broker.db`` are relative to the working directory;
- ``sqlite://~/broker.db`` expands ``~``; plain ``sqlite://`` is qtui's default file
  (:func:`qtui.core.brokers.default_broker_path`). The whole rest of the URL is the path (no
  query string), the rule :mod:`qtui.core.backends.sqlite` also follows.

Delivery is at-least-once: a fetched message stays in the file, invisible and marked with its
holder (a per-process token), until it is acked. It becomes visible again, flagged
``redelivered``, when it is rejected with requeue, restored (channel close, ``basic_recover``),
when the visibility timeout passes (transport option ``visibility_timeout``, default 3600 s), or
when its holder is found dead (same host and pid namespace: ``os.kill(pid, 0)`` plus the process
start time from ``/proc``, so a reused pid or an unreaped zombie does not pass for the holder).
Messages held on another host come back by the visibility timeout only.

Exchanges and bindings live in the file too, so a fanout reaches every bound queue of every
process. Auto-delete and ``x-expires`` queues belong to the process that declared them last and
are dropped, with their bindings and messages, when it is found dead; an auto-delete queue also
goes when its owner cancels its last consumer. Not enforced: ``x-expires`` while the owner lives,
and ``x-message-ttl``.

Priorities follow kombu's Redis transport, which is what Celery users of a virtual transport know:
0 is served first and 9 last (the opposite of AMQP), values are clamped to 0-9, unset means 0.
Unlike Redis, which folds priorities into the buckets 0/3/6/9, every value is its own level.
Within a level, messages go out in the order they became visible (a message given back keeps
its place; a delayed one takes its place when it is due); a fetch reads only ready rows, however
many delayed or held ones its queue has (index ``messages_ready``, schema version 2).

Delayed delivery: a message published with the header ``x-qtui-not-before`` (epoch seconds)
stays invisible until then; the worker stores far-off ETA tasks this way instead of holding them
past the visibility timeout.

Transport options: ``visibility_timeout`` (s, 3600; the claiming consumer's value counts),
``polling_interval`` and ``idle_polling_interval`` (s, 0.005 and 0.03: the sleep between empty
polls while messages flow, and after a second without any; an empty poll costs one
``PRAGMA data_version``), ``busy_timeout`` (s, 5: SQLite's wait for the write lock, after which
the operation is retried with backoff and a warning, five attempts in all; then
:class:`BrokerLocked`, a connection error: qtui's worker reconnects and keeps what it holds, it
does not give back tasks still running), ``fetch_batch`` (16: rows one claim may
take ahead, within the consumer's prefetch limit; they stay invisible until acked, and go back
on cancel, requeue and close).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any, TypeVar

from amqp.protocol import queue_declare_ok_t
from kombu.exceptions import OperationalError
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from ..files import create_private
from . import default_broker_path

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The schema this code writes; files with a newer ``PRAGMA user_version`` are refused.
SCHEMA_VERSION = 2

#: Statements that take a file from version ``n - 1`` to ``n``.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE queues (
        name        TEXT PRIMARY KEY,
        auto_delete INTEGER NOT NULL DEFAULT 0,
        expires_ms  INTEGER,
        owner       TEXT,            -- process token of a transient queue's declarer
        created_at  REAL NOT NULL
    );
    CREATE TABLE exchanges (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL
    );
    CREATE TABLE bindings (
        exchange    TEXT NOT NULL,
        type        TEXT NOT NULL,
        routing_key TEXT NOT NULL,
        pattern     TEXT NOT NULL,
        queue       TEXT NOT NULL,
        PRIMARY KEY (exchange, routing_key, pattern, queue)
    ) WITHOUT ROWID;
    CREATE INDEX bindings_queue ON bindings (queue);
    -- AUTOINCREMENT: an id is never reused, so a late ack can only ever delete its own message.
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        queue           TEXT NOT NULL,
        priority        INTEGER NOT NULL,
        payload         TEXT NOT NULL,
        visible_at      REAL NOT NULL,
        holder          TEXT,
        delivered_count INTEGER NOT NULL DEFAULT 0,
        created_at      REAL NOT NULL
    );
    CREATE INDEX messages_fetch ON messages (queue, priority, id, visible_at);
    CREATE INDEX messages_holder ON messages (holder) WHERE holder IS NOT NULL;
    CREATE TABLE processes (
        token   TEXT PRIMARY KEY,
        host    TEXT NOT NULL,
        pid     INTEGER NOT NULL,
        started TEXT              -- start time from /proc/<pid>/stat, when there is one
    );
    """,
    # visible_at before id: a fetch reads only ready rows (see READY), however many future
    # rows (ETA, held) its queue has; messages_fetch walked them all.
    2: """
    DROP INDEX messages_fetch;
    CREATE INDEX messages_ready ON messages (queue, priority, visible_at, id);
    """,
}

#: The ready rows of a queue (parameters: queue, now). Every priority level is listed (kombu
#: clamps them to 0-9), so each level is one range of ``messages_ready`` that starts at its
#: oldest ready row and ends at its first future one.
READY_ROWS = "queue = ? AND priority IN (0, 1, 2, 3, 4, 5, 6, 7, 8, 9) AND visible_at <= ?"
#: Their ids in delivery order, best priority first, then by when they became visible (a
#: released row keeps its place: it is visible again from its ``created_at``); read from the
#: index, without a sort.
READY = f"SELECT id FROM messages WHERE {READY_ROWS} ORDER BY priority, visible_at, id"

DEFAULT_VISIBILITY_TIMEOUT = 3600.0
#: Message header: epoch seconds before which a published message stays invisible (delayed
#: delivery; the worker's ETA store on this transport).
NOT_BEFORE_HEADER = "x-qtui-not-before"
DEFAULT_BUSY_TIMEOUT = 5.0
DEFAULT_FETCH_BATCH = 16
DEFAULT_POLLING_INTERVAL = 0.005
DEFAULT_IDLE_POLLING_INTERVAL = 0.03
#: Seconds without a delivery after which a consumer polls at the idle interval.
IDLE_AFTER = 1.0
#: How often a connection looks for dead holders and owners and re-reads queues it saw empty
#: (messages whose visibility timeout passes become visible without any write to the file).
SWEEP_INTERVAL = 1.0
#: How long (s) one ``PRAGMA data_version`` read stands for the file's state.
VERSION_REUSE = 0.002
#: Attempts, and the first delay, for an operation that still finds the database locked after
#: ``busy_timeout``; the delay doubles each time.
BUSY_RETRIES = 5
BUSY_BACKOFF = 0.05

_HAS_PROC = os.path.exists("/proc/self/stat")

_UNRELEASED: dict[str, set[tuple[int, bool]]] = {}
"""Per broker file: rows this process held and failed to give back (a full disk, say), as
(row id, delivered); given back by the next claim that can write. Per process, not per
connection, because a row's holder is the process: a worker that reconnects would otherwise keep
them invisible until their visibility timeout."""
_UNRELEASED_LOCK = threading.Lock()
#: SQLite connections inherited across fork: never used or closed in the child (SQLite forbids it).
_INHERITED: list[sqlite3.Connection] = []


class BrokerFileError(OperationalError):
    """The broker file cannot be used (path, format or schema); the message says what to do."""


class BrokerLocked(OperationalError, sqlite3.OperationalError):
    """The broker file stayed locked by other connections past every retry (an SQLite error
    too, so what gives back held rows later still sees it as one)."""


def path_from_url(url: str | None) -> Path:
    """The broker file a ``sqlite://`` URL (or a bare path) names; see the module docstring."""
    rest = (url or "").partition("://")[2] if "://" in (url or "") else (url or "")
    if not rest:
        return default_broker_path()
    if rest.startswith("/"):
        rest = "/" + rest.lstrip("/")
    return Path(rest).expanduser().absolute()


# -- process identity and liveness -------------------------------------------------------------

@dataclass(frozen=True)
class ProcessIdentity:
    """Who holds a message or owns a transient queue: a random token per process."""

    token: str
    host: str
    pid: int
    started: str | None


_identity: ProcessIdentity | None = None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None when it has no entry."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], fields[19]


def _host() -> str:
    """Where a pid means this process table: the host name plus, on Linux, the pid namespace
    (containers sharing the file and the host name must not judge each other's pids)."""
    try:
        return f"{socket.gethostname()}/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def current_process() -> ProcessIdentity:
    """This process's identity, made anew after a fork."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity.pid != pid:
        stat = _proc_stat(pid)
        _identity = ProcessIdentity(uuid.uuid4().hex, _host(), pid, stat[1] if stat else None)
    return _identity


def process_alive(pid: int, started: str | None) -> bool:
    """Whether the same-host process ``pid`` that started at ``started`` still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not _HAS_PROC:
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    return state not in ("Z", "X") and (started is None or start == started)


# -- the database ------------------------------------------------------------------------------

@dataclass
class Claimed:
    """A message row taken by this process: invisible to others until acked or released."""

    id: int
    payload: str
    delivered_count: int
    until: float


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code); by message before Python 3.11. Not
    :class:`BrokerLocked`: its retries are already spent."""
    if isinstance(exc, BrokerLocked):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(exc) or "busy" in str(exc)


class Database:
    """One SQLite connection to the broker file, with the verbs the channel needs.

    Safe to share between the threads of a process (acks may come from pool threads); re-opened
    after a fork.
    """

    def __init__(self, path: Path, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._pid = -1
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._local_writes = 0
        self._version, self._version_read_at = 0, float("-inf")
        self._next_sweep = 0.0
        self._connect()

    # connection, schema, retries

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError(f"the SQLite broker connection to {self.path} is closed")
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            _INHERITED.append(self._conn)
        if sqlite3.sqlite_version_info < (3, 35):
            raise BrokerFileError(f"qtui's SQLite broker needs SQLite 3.35 or newer; this Python "
                                  f"has {sqlite3.sqlite_version}. Use a newer Python build.")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BrokerFileError(f"cannot create the directory for the SQLite broker at "
                                  f"{self.path} ({exc.strerror or exc}): choose a writable "
                                  "path in the broker URL (sqlite://PATH)") from exc
        try:
            create_private(self.path)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise BrokerFileError(f"cannot open the SQLite broker at {self.path} ({exc}): "
                                  "choose a writable path in the broker URL") from exc
        try:
            self._retrying(lambda: self._prepare(conn))
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        self._register()
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """WAL mode, and the schema migrated to :data:`SCHEMA_VERSION` (or a clear refusal)."""
        where = f"the SQLite broker at {self.path}"
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BrokerFileError(
                    f"{where} has schema version {version}, newer than this qtui understands "
                    f"({SCHEMA_VERSION}): upgrade qtui, or point the broker URL at another file")
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("PRAGMA synchronous=NORMAL")
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    for step in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in MIGRATIONS[step].split(";"):
                            if statement.strip():
                                conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={max(version, SCHEMA_VERSION)}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "not a database" in text:
                raise BrokerFileError(f"{where} is not an SQLite database: point the broker URL "
                                      "at another file, or move this one away") from exc
            if "readonly" in text or "unable to open" in text or "disk I/O" in text:
                raise BrokerFileError(f"{where} is not writable ({text}): fix its permissions "
                                      "or choose another path in the broker URL") from exc
            raise

    def _register(self) -> None:
        me = current_process()
        self._write(lambda c: c.execute(
            "INSERT OR IGNORE INTO processes (token, host, pid, started) VALUES (?, ?, ?, ?)",
            (me.token, me.host, me.pid, me.started)))

    def close(self) -> None:
        """Close the connection (in the process that opened it; a forked child only lets go)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            elif self._conn is not None:
                _INHERITED.append(self._conn)
            self._conn, self._closed = None, True

    def _run(self, op: Callable[[sqlite3.Connection], T], write: bool) -> T:
        """Run ``op`` under the lock; ``write`` tells readers of :meth:`generation`."""
        def locked() -> T:
            with self._lock:
                result = op(self._connect())
                if write:
                    self._local_writes += 1
                return result
        return self._retrying(locked)

    def _retrying(self, op: Callable[[], T]) -> T:
        """Run ``op``, retrying with backoff (and a warning) while the file stays locked past
        ``busy_timeout``; past the last retry, :class:`BrokerLocked` says so (a kombu
        connection error: a worker reconnects, keeping what it holds)."""
        delay, started, attempt = BUSY_BACKOFF, time.monotonic(), 1
        while True:
            try:
                return op()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if attempt == BUSY_RETRIES:
                    raise BrokerLocked(
                        f"the SQLite broker at {self.path} stayed locked for "
                        f"{time.monotonic() - started:.1f}s ({BUSY_RETRIES} attempts of "
                        f"busy_timeout {self.busy_timeout}s): another process holds its write "
                        "lock; raise the transport option busy_timeout if that is expected") \
                        from exc
                logger.warning("SQLite broker %s busy (%s): retry %d of %d in %.2fs",
                               self.path, exc, attempt, BUSY_RETRIES - 1, delay)
                time.sleep(delay)
                delay *= 2
                attempt += 1

    def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return self._run(op, write=False)

    def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return self._run(op, write=True)

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """A write transaction, rolled back on any failure, a failed ``COMMIT`` included (it
        leaves the transaction open, and the connection would refuse every later ``BEGIN``)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def generation(self) -> tuple[int, int, int]:
        """Changes whenever anything may have become visible: a commit by another connection
        (``PRAGMA data_version``), a write by this one, or a sweep interval passing."""
        now = time.monotonic()
        # One read serves every queue of a polling round. Reusing an older read is safe: a
        # queue is marked empty with the generation read *before* its claim.
        if now - self._version_read_at > VERSION_REUSE:
            self._version = self._read(lambda c: c.execute("PRAGMA data_version").fetchone()[0])
            self._version_read_at = now
        return self._version, self._local_writes, int(now / SWEEP_INTERVAL)

    # messages

    def put(self, queue: str, priority: int, payload: str, not_before: float | None = None
            ) -> None:
        """Store a message; with ``not_before`` (epoch seconds) it stays invisible until then."""
        now = time.time()
        visible_at = max(now, not_before) if not_before else now
        self._write(lambda c: c.execute(
            "INSERT INTO messages (queue, priority, payload, visible_at, created_at) "
            "VALUES (?, ?, ?, ?, ?)", (queue, priority, payload, visible_at, now)))

    def put_fanout(self, exchange: str, priority: int, payload: str) -> int:
        """One copy for every queue bound to ``exchange``, in one transaction."""
        now = time.time()
        return self._write(lambda c: c.execute(
            "INSERT INTO messages (queue, priority, payload, visible_at, created_at) "
            "SELECT DISTINCT queue, ?, ?, ?, ? FROM bindings WHERE exchange = ?",
            (priority, payload, now, now, exchange)).rowcount)

    def claim(self, queue: str, limit: int, visibility_timeout: float) -> list[Claimed]:
        """Take up to ``limit`` visible messages, best priority first, in one statement (a claim
        that finds nothing changes nothing, so it does not move :meth:`generation`)."""
        if _UNRELEASED:
            self._release_leftovers()
        now = time.time()
        until = now + visibility_timeout
        # ORDER BY priority: 0 first, as on kombu's Redis transport (see the module docstring).
        rows = self._read(lambda c: c.execute(
            "UPDATE messages SET visible_at = ?, holder = ?, "
            f"delivered_count = delivered_count + 1 WHERE id IN ({READY} LIMIT ?) "
            "RETURNING priority, id, payload, delivered_count",
            (until, current_process().token, queue, now, limit)).fetchall())
        if rows:
            with self._lock:
                self._local_writes += 1
        rows.sort()  # RETURNING has no order: within one claim, by priority, then id
        return [Claimed(id, payload, count, until) for _, id, payload, count in rows]

    def take(self, queue: str) -> Claimed | None:
        """Remove and return the next visible message: delivery without acknowledgement."""
        now = time.time()
        row = self._read(lambda c: c.execute(
            f"DELETE FROM messages WHERE id = ({READY} LIMIT 1) "
            "RETURNING id, payload, delivered_count", (queue, now)).fetchone())
        if row is None:
            return None
        with self._lock:
            self._local_writes += 1
        return Claimed(row[0], row[1], row[2] + 1, float("inf"))

    def ack(self, message_id: int) -> None:
        self._write(lambda c: c.execute("DELETE FROM messages WHERE id = ?", (message_id,)))

    def renew(self, message_ids: list[int], visibility_timeout: float) -> None:
        """Keep messages this process holds invisible for another ``visibility_timeout`` (the
        worker's lease thread: a task held longer than the timeout is not delivered twice)."""
        if not message_ids:
            return
        until, me = time.time() + visibility_timeout, current_process().token
        self._write(lambda c: c.executemany(
            "UPDATE messages SET visible_at = ? WHERE id = ? AND holder = ?",
            [(until, i, me) for i in message_ids]))

    def release(self, message_ids: list[int], delivered: bool = True) -> None:
        """Make messages this process still holds visible at once (one whose visibility timeout
        passed may be someone else's by now); ``delivered=False`` for rows claimed ahead and
        never handed to kombu, so they are not flagged as redelivered."""
        if not message_ids:
            return
        undo, me = 0 if delivered else 1, current_process().token
        try:
            self._write(lambda c: c.executemany(
                "UPDATE messages SET visible_at = created_at, holder = NULL, "
                "delivered_count = delivered_count - ? WHERE id = ? AND holder = ?",
                [(undo, i, me) for i in message_ids]))
        except sqlite3.Error:
            with _UNRELEASED_LOCK:
                _UNRELEASED.setdefault(str(self.path), set()).update(
                    (i, delivered) for i in message_ids)
            raise

    def _release_leftovers(self) -> None:
        """Give back what an earlier :meth:`release` of this process could not."""
        with _UNRELEASED_LOCK:
            pending = _UNRELEASED.pop(str(self.path), None)
        for delivered in (True, False):
            ids = [i for i, d in pending or () if d is delivered]
            try:
                self.release(ids, delivered)  # a failure puts them back in _UNRELEASED
            except sqlite3.Error:
                pass

    def purge(self, queue: str) -> int:
        """Delete the ready messages of ``queue`` (held ones stay, as in AMQP)."""
        now = time.time()
        return self._write(lambda c: c.execute(
            f"DELETE FROM messages WHERE {READY_ROWS}", (queue, now)).rowcount)

    def size(self, queue: str) -> int:
        now = time.time()
        return int(self._read(lambda c: c.execute(
            f"SELECT count(*) FROM messages WHERE {READY_ROWS}",
            (queue, now)).fetchone()[0]))

    def oldest_ready(self, queue: str) -> float | None:
        """When the oldest ready message of ``queue`` was put there (None: it has none)."""
        now = time.time()
        found = self._read(lambda c: c.execute(
            f"SELECT min(created_at) FROM messages WHERE {READY_ROWS}",
            (queue, now)).fetchone()[0])
        return None if found is None else float(found)

    # rows nobody holds, ready or not yet visible (the delayed store's due queues)

    def count_unheld(self, queue: str) -> int:
        return int(self._read(lambda c: c.execute(
            "SELECT count(*) FROM messages WHERE queue = ? AND holder IS NULL",
            (queue,)).fetchone()[0]))

    def peek_unheld(self, queue: str, limit: int) -> list[str]:
        """Payloads of the first ``limit`` rows nobody holds, by when they become visible."""
        return [row[0] for row in self._read(lambda c: c.execute(
            "SELECT payload FROM messages WHERE queue = ? AND holder IS NULL "
            "ORDER BY visible_at, id LIMIT ?", (queue, limit)).fetchall())]

    def delete_unheld(self, queue: str) -> int:
        return self._write(lambda c: c.execute(
            "DELETE FROM messages WHERE queue = ? AND holder IS NULL", (queue,)).rowcount)

    def move_unheld(self, queue: str, to: str) -> int:
        """Make the rows of ``queue`` nobody holds ready now in queue ``to``, behind what
        waits there."""
        now = time.time()
        return self._write(lambda c: c.execute(
            "UPDATE messages SET queue = ?, visible_at = ?, created_at = ? "
            "WHERE queue = ? AND holder IS NULL", (to, now, now, queue)).rowcount)

    def list_queues(self) -> list[tuple[str, int, int]]:
        """(name, ready, unacked) for every declared queue and every queue holding messages,
        after the dead processes' messages and transient queues are dealt with."""
        self.maybe_sweep()
        now = time.time()
        return self._read(lambda c: c.execute(
            "SELECT name, sum(ready), sum(held) FROM ("
            " SELECT name, 0 AS ready, 0 AS held FROM queues"
            " UNION ALL SELECT queue, visible_at <= ?1, visible_at > ?1 FROM messages"
            ") GROUP BY name ORDER BY name", (now,)).fetchall())

    # queues, exchanges, bindings

    def declare_queue(self, name: str, auto_delete: bool, expires_ms: int | None) -> None:
        """Record the queue; a transient one (auto-delete or expiring) is owned by this process
        and goes when the process is found dead."""
        owner = current_process().token if auto_delete or expires_ms is not None else None
        self._write(lambda c: c.execute(
            "INSERT INTO queues (name, auto_delete, expires_ms, owner, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "auto_delete = excluded.auto_delete, expires_ms = excluded.expires_ms, "
            "owner = excluded.owner",
            (name, int(auto_delete), expires_ms, owner, time.time())))

    def has_queue(self, name: str) -> bool:
        return bool(self._read(lambda c: c.execute(
            "SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1) "
            "OR EXISTS (SELECT 1 FROM messages WHERE queue = ?1)", (name,)).fetchone()[0]))

    def delete_queue(self, name: str, only_if_owned: bool = False) -> None:
        """Drop the queue, its bindings and its messages (``only_if_owned``: if this process
        declared it last)."""
        def op(c: sqlite3.Connection) -> None:
            with self._transaction(c):
                if only_if_owned and not c.execute(
                        "SELECT 1 FROM queues WHERE name = ? AND owner = ?",
                        (name, current_process().token)).fetchone():
                    return
                self._drop_queues(c, "?", (name,))
        self._write(op)

    @staticmethod
    def _drop_queues(c: sqlite3.Connection, names_sql: str, args: tuple[Any, ...]) -> None:
        c.execute(f"DELETE FROM messages WHERE queue IN ({names_sql})", args)
        c.execute(f"DELETE FROM bindings WHERE queue IN ({names_sql})", args)
        c.execute(f"DELETE FROM queues WHERE name IN ({names_sql})", args)

    def declare_exchange(self, name: str, type: str) -> None:
        self._write(lambda c: c.execute(
            "INSERT INTO exchanges (name, type) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET type = excluded.type", (name, type)))

    def exchange_type(self, name: str) -> str | None:
        row = self._read(lambda c: c.execute(
            "SELECT type FROM exchanges WHERE name = ?", (name,)).fetchone())
        return row[0] if row else None

    def delete_exchange(self, name: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            with self._transaction(c):
                c.execute("DELETE FROM bindings WHERE exchange = ?", (name,))
                c.execute("DELETE FROM exchanges WHERE name = ?", (name,))
        self._write(op)

    def bind(self, exchange: str, type: str, routing_key: str, pattern: str, queue: str) -> None:
        self._write(lambda c: c.execute(
            "INSERT OR IGNORE INTO bindings (exchange, type, routing_key, pattern, queue) "
            "VALUES (?, ?, ?, ?, ?)", (exchange, type, routing_key, pattern, queue)))

    def unbind(self, exchange: str, routing_key: str, queue: str) -> None:
        self._write(lambda c: c.execute(
            "DELETE FROM bindings WHERE exchange = ? AND routing_key = ? AND queue = ?",
            (exchange, routing_key, queue)))

    def table(self, exchange: str) -> list[tuple[str, str, str]]:
        """kombu's routing table for ``exchange``: (routing_key, pattern, queue) per binding."""
        return self._read(lambda c: c.execute(
            "SELECT routing_key, pattern, queue FROM bindings WHERE exchange = ?",
            (exchange,)).fetchall())

    # dead holders and owners

    def maybe_sweep(self) -> None:
        """Run :meth:`sweep` at most once per :data:`SWEEP_INTERVAL`."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            self.sweep()

    def sweep(self) -> None:
        """Release the messages held by dead same-host processes (or by tokens no process row
        knows) and drop the transient queues they owned."""
        me = current_process()
        rows = self._read(lambda c: c.execute(
            "SELECT token, pid, started FROM processes WHERE host = ? AND token != ?",
            (me.host, me.token)).fetchall())
        dead = [token for token, pid, started in rows if not process_alive(pid, started)]
        orphaned = self._read(lambda c: c.execute(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE holder IS NOT NULL AND holder NOT IN "
            "(SELECT token FROM processes))").fetchone()[0])
        if not dead and not orphaned:
            return

        def op(c: sqlite3.Connection) -> None:
            with self._transaction(c):
                for token in dead:
                    released = c.execute(
                        "UPDATE messages SET visible_at = created_at, holder = NULL "
                        "WHERE holder = ?", (token,)).rowcount
                    gone = [name for (name,) in c.execute(
                        "SELECT name FROM queues WHERE owner = ?", (token,))]
                    self._drop_queues(c, "SELECT name FROM queues WHERE owner = ?", (token,))
                    c.execute("DELETE FROM processes WHERE token = ?", (token,))
                    logger.info("SQLite broker: process %s is gone; released %d message(s) "
                                "and dropped queue(s) %s", token, released, gone)
                c.execute("UPDATE messages SET visible_at = created_at, holder = NULL WHERE "
                          "holder IS NOT NULL AND holder NOT IN (SELECT token FROM processes)")
        self._write(op)


def list_queues(path: str | Path) -> list[tuple[str, int, int]]:
    """(name, ready, unacked) for every queue in the broker file at ``path`` (or URL)."""
    db = Database(path_from_url(str(path)))
    try:
        return db.list_queues()
    finally:
        db.close()


# -- kombu ---------------------------------------------------------------------------------------

class QoS(virtual.QoS):
    """Acks and rejects change the database: an ack deletes the row, a requeue or restore makes
    it visible again at once (flagged redelivered on its next delivery)."""

    channel: Channel
    _delivered: Any  # kombu's OrderedDict of delivery tag -> message

    def ack(self, delivery_tag: str) -> None:
        self.channel.db.ack(message_id(delivery_tag))
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            # Rows claimed ahead go back too, so the requeued message is the next one served.
            self.channel.release_ahead()
            self.channel.db.release([message_id(delivery_tag)])
        else:
            self.channel.db.ack(message_id(delivery_tag))
        super().ack(delivery_tag)

    def restore_unacked(self) -> list[tuple[BaseException, Any]]:
        self._flush()
        tags = list(self._delivered)
        self._delivered.clear()
        try:
            self.channel.db.release([message_id(tag) for tag in tags])
        except sqlite3.Error as exc:
            # Still held by this process: the next sweep after it exits releases them.
            logger.error("SQLite broker: could not restore %d unacked message(s) now (%s); "
                         "they come back as soon as the file can be written again",
                         len(tags), exc)
        return []


def message_id(delivery_tag: str) -> int:
    """The row id inside a delivery tag (``<id>.<delivery count>``)."""
    return int(str(delivery_tag).partition(".")[0])


class Channel(virtual.Channel):
    """A kombu virtual channel whose queues, bindings and messages live in the broker file."""

    QoS = QoS
    supports_fanout = True
    connection: Transport

    visibility_timeout = DEFAULT_VISIBILITY_TIMEOUT
    fetch_batch = DEFAULT_FETCH_BATCH
    # kombu leaves this tuple unannotated, so mypy fixes its length at the base's
    from_transport_options = (  # type: ignore[assignment]
        *virtual.Channel.from_transport_options, "visibility_timeout", "fetch_batch")

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.db = connection.database
        # Rows claimed ahead, per queue; a requeue from another thread may give them back.
        self._ahead: dict[str, deque[Claimed]] = {}
        self._ahead_lock = threading.Lock()
        self._empty_at: dict[str, tuple[int, int, int]] = {}
        self._auto_delete: set[str] = set()
        self._no_ack: set[str] = set()

    # messages

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        not_before = (message.get("headers") or {}).get(NOT_BEFORE_HEADER)
        self.db.put(queue, self._get_message_priority(message), dumps(message),
                    not_before if isinstance(not_before, (int, float)) else None)

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str,
                    **kwargs: Any) -> None:
        self.db.maybe_sweep()
        self.db.put_fanout(exchange, self._get_message_priority(message), dumps(message))

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        now = time.time()
        with self._ahead_lock:
            ahead = self._ahead.get(queue)
            while ahead:
                claimed = ahead.popleft()
                if claimed.until > now:
                    return self._to_message(claimed)
        # Taken before the claim: a commit racing with the claim moves it on, never hides.
        generation = self.db.generation()
        if self._empty_at.get(queue) == generation:
            raise Empty()
        self.db.maybe_sweep()
        if queue in self._no_ack:
            taken = self.db.take(queue)
            rows = [taken] if taken else []
        elif queue not in self._active_queues:  # basic_get: one, nothing held ahead
            rows = self.db.claim(queue, 1, self.visibility_timeout)
        else:
            limit = max(1, min(self.fetch_batch,
                               self.qos.can_consume_max_estimate() or self.fetch_batch))
            rows = self.db.claim(queue, limit, self.visibility_timeout)
        if not rows:
            self._empty_at[queue] = generation
            raise Empty()
        if len(rows) > 1:
            with self._ahead_lock:
                self._ahead.setdefault(queue, deque()).extend(rows[1:])
        return self._to_message(rows[0])

    @staticmethod
    def _to_message(claimed: Claimed) -> dict[str, Any]:
        """The stored envelope with a per-delivery tag and, on a repeat, kombu's redelivered
        flags (set where the Redis transport sets them)."""
        message: dict[str, Any] = loads(claimed.payload)
        properties = message["properties"]
        properties["delivery_tag"] = f"{claimed.id}.{claimed.delivered_count}"
        if claimed.delivered_count > 1:
            properties.setdefault("delivery_info", {})["redelivered"] = True
            message.setdefault("headers", {})["redelivered"] = True
        return message

    def _purge(self, queue: str) -> int:
        return self.db.purge(queue)

    def renew(self, delivery_tags: list[str]) -> None:
        """Renew the visibility lease of these deliveries (see :meth:`Database.renew`)."""
        self.db.renew([message_id(tag) for tag in delivery_tags], self.visibility_timeout)

    def settle(self, delivery_tags: list[str], requeue: bool) -> None:
        """Ack or requeue deliveries this process holds, whichever channel they came through
        (a worker settles those of a channel it lost this way)."""
        ids = [message_id(tag) for tag in delivery_tags]
        if requeue:
            self.db.release(ids)
            return
        for row in ids:
            self.db.ack(row)

    def _size(self, queue: str) -> int:
        return self.db.size(queue)

    def list_queues(self) -> list[tuple[str, int, int]]:
        """(name, ready, unacked) for every queue in the file, consumed or not."""
        return self.db.list_queues()

    # queues, exchanges, bindings

    def queue_declare(self, queue: str | None = None, passive: bool = False,
                      **kwargs: Any) -> Any:
        """As kombu's, but a passive declare only looks (it must not take over a transient
        queue's ownership, as recording it would)."""
        if passive and queue and self._has_queue(queue):
            return queue_declare_ok_t(queue, self._size(queue), 0)
        return super().queue_declare(queue, passive, **kwargs)

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        auto_delete = bool(kwargs.get("auto_delete") or kwargs.get("exclusive"))
        expires = (kwargs.get("arguments") or {}).get("x-expires")
        if auto_delete:
            self._auto_delete.add(queue)
        self.db.declare_queue(queue, auto_delete, int(expires) if expires is not None else None)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return self.db.has_queue(queue)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._auto_delete.discard(queue)
        self.db.delete_queue(queue)

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False,
                     **kwargs: Any) -> None:
        """Delete the queue from the file even when this process never bound it."""
        if if_empty and self._size(queue):
            return
        super().queue_delete(queue, if_unused=if_unused, if_empty=if_empty, **kwargs)
        self._delete(queue)

    def exchange_declare(self, exchange: str | None = None, type: str = "direct",
                         durable: bool = False, auto_delete: bool = False,
                         arguments: dict[str, Any] | None = None, nowait: bool = False,
                         passive: bool = False) -> None:
        """Declare locally (as kombu does) and record the type in the file, so a process that
        publishes to an exchange declared elsewhere routes by the right type."""
        type = type or "direct"
        name = exchange or f"amq.{type}"
        if passive and name not in self.state.exchanges:
            known = self.db.exchange_type(name)
            if known:
                self.state.exchanges[name] = {"type": known, "durable": durable,
                                              "auto_delete": auto_delete,
                                              "arguments": arguments or {}, "table": []}
        super().exchange_declare(name, type, durable, auto_delete, arguments, nowait, passive)
        if not passive:
            self.db.declare_exchange(name, type)

    def exchange_delete(self, exchange: str, if_unused: bool = False,
                        nowait: bool = False) -> None:
        super().exchange_delete(exchange, if_unused, nowait)
        self.db.delete_exchange(exchange)

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        if exchange and exchange not in self.state.exchanges:
            known = self.db.exchange_type(exchange)
            if known:
                return self.exchange_types[known]
        return super().typeof(exchange, default)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None,
                    queue: str) -> None:
        self.db.bind(exchange, self.typeof(exchange).type, routing_key or "", pattern or "",
                     queue)

    def queue_unbind(self, queue: str, exchange: str | None = None, routing_key: str = "",
                     arguments: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        self.db.unbind(exchange or "amq.direct", routing_key or "", queue)

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        return self.db.table(exchange)

    # consumers and closing

    def basic_consume(self, queue: str, no_ack: bool, callback: Callable[..., Any],
                      consumer_tag: str, **kwargs: Any) -> None:
        """Consume; a no-ack consumer's messages leave the file as they are fetched."""
        if no_ack:
            self._no_ack.add(queue)
        super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """As kombu's; a no-ack get removes the message from the file at once."""
        if not no_ack:
            return super().basic_get(queue, no_ack, **kwargs)
        taken = self.db.take(queue)
        return self.Message(self._to_message(taken), channel=self) if taken else None

    def basic_cancel(self, consumer_tag: str) -> None:
        """Cancel, giving back the rows claimed ahead for the queue; an auto-delete queue this
        process declared goes with its last consumer."""
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue is None or queue in self._active_queues:
            return
        self._no_ack.discard(queue)
        self.release_ahead(queue)
        if queue in self._auto_delete:
            self._auto_delete.discard(queue)
            self.db.delete_queue(queue, only_if_owned=True)

    def release_ahead(self, queue: str | None = None) -> None:
        """Give back the rows claimed ahead (for ``queue``, or all) and not handed to kombu."""
        with self._ahead_lock:
            queues = [queue] if queue is not None else list(self._ahead)
            ahead = [c.id for q in queues for c in self._ahead.pop(q, ())]
        self.db.release(ahead, delivered=False)

    def close(self) -> None:
        """Cancel the consumers and release the rows claimed ahead, then close as kombu does
        (restoring unacked). What cannot be given back now (the disk is full) is given back by
        this process's next claim that can write. A cancel that cannot write (an auto-delete
        queue to drop) must not stop the close before the restore, or what this channel
        delivered stays held by a live process until its visibility timeout."""
        if not self.closed:
            for consumer_tag in list(self._consumers):
                try:
                    self.basic_cancel(consumer_tag)
                except sqlite3.Error as exc:
                    logger.error("SQLite broker: could not cancel consumer %s cleanly (%s)",
                                 consumer_tag, exc)
            try:
                self.release_ahead()
            except sqlite3.Error as exc:
                logger.error("SQLite broker: could not give back the messages claimed ahead now "
                             "(%s); they come back as soon as the file can be written again", exc)
        super().close()


class Transport(virtual.Transport):
    """``sqlite://PATH``: qtui's embedded broker (see the module docstring)."""

    Channel = Channel
    can_parse_url = True
    #: Sleep (s) between empty polls while messages flow, and once none came for a while.
    polling_interval = DEFAULT_POLLING_INTERVAL
    idle_polling_interval = DEFAULT_IDLE_POLLING_INTERVAL
    default_port = None
    driver_type = "sqlite"
    driver_name = "sqlite3"
    # kombu leaves these tuples unannotated, so mypy fixes their length at the base's
    connection_errors = (  # type: ignore[assignment]
        *virtual.Transport.connection_errors, sqlite3.OperationalError)
    implements = virtual.Transport.implements.extend(
        asynchronous=False, exchange_type=frozenset(["direct", "topic", "fanout"]),
        heartbeats=False)

    client: Any  # kombu.Connection
    cycle: Any  # kombu.utils.scheduling.FairCycle over the channels

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.path = path_from_url(client.hostname)
        self.idle_polling_interval = float(client.transport_options.get(
            "idle_polling_interval", self.idle_polling_interval))
        self._database: Database | None = None
        self._last_delivery = float("-inf")

    @property
    def database(self) -> Database:
        """The connection to the broker file, opened (and migrated) on first use."""
        if self._database is None:
            options = self.client.transport_options
            self._database = Database(self.path, float(options.get("busy_timeout",
                                                                   DEFAULT_BUSY_TIMEOUT)))
            self._database.maybe_sweep()
        return self._database

    def drain_events(  # type: ignore[override]  # kombu's virtual signature
            self, connection: Any, timeout: float | None = None) -> None:
        """kombu's polling loop, with a sleep that is short while messages flow and longer
        once none came for :data:`IDLE_AFTER` seconds (an empty poll is cheap, not free)."""
        start = time.monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                now = time.monotonic()
                if timeout is not None and now - start >= timeout:
                    raise TimeoutError() from None
                idle = now - self._last_delivery > IDLE_AFTER
                pause = self.idle_polling_interval if idle else self.polling_interval
                if timeout is not None:
                    pause = min(pause, start + timeout - now)
                time.sleep(pause)
            else:
                self._last_delivery = time.monotonic()
                return

    def close_connection(self, connection: Any) -> None:
        super().close_connection(connection)
        if self._database is not None:
            self._database.close()
            self._database = None

    def driver_version(self) -> str:
        return sqlite3.sqlite_version

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        return f"sqlite://{self.path}"
