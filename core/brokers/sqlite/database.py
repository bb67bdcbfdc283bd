"""The SQL layer of the embedded broker: one SQLite connection to the broker file with the verbs the
kombu channel needs (put, claim, ack, release, renew, sweep, ...), its retries while the file is
locked, and the errors that say what to do when the file cannot be used. The kombu classes built
on it are in :mod:`.transport`; the URL and delivery rules in the package docstring."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kombu.exceptions import OperationalError

from ...files import create_private
from .. import broker_path
from . import ledger_table
from .liveness import current_process, process_alive
from .schema import MIGRATIONS, READY, READY_ROWS, SCHEMA_VERSION

if TYPE_CHECKING:
    from ...ledger import StartRecord

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT = 5.0
#: How often a connection looks for dead holders and owners and re-reads queues it saw empty
#: (messages whose visibility timeout passes become visible without any write to the file).
SWEEP_INTERVAL = 1.0
#: How long (s) one ``PRAGMA data_version`` read stands for the file's state.
VERSION_REUSE = 0.002
#: Attempts, and the first delay, for an operation that still finds the database locked after
#: ``busy_timeout``; the delay doubles each time.
BUSY_RETRIES = 5
BUSY_BACKOFF = 0.05

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


@dataclass
class Claimed:
    """A message row taken by this process: invisible to others until acked or released."""

    id: int
    payload: str
    delivered_count: int
    until: float


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code); by message before Python 3.11. Not
    :class:`BrokerLocked`: its retries are already spent."""
    if isinstance(exc, BrokerLocked):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(exc) or "busy" in str(exc)


def retry_while_busy(op: Callable[[], T], warn: Callable[[sqlite3.OperationalError, int, float],
                                                         None] | None = None) -> T:
    """Run ``op``, again after a pause doubling from :data:`BUSY_BACKOFF` while SQLite reports
    the file busy or locked (:func:`is_busy`; some lock conflicts it reports at once, past its
    busy timeout), :data:`BUSY_RETRIES` attempts in all; ``warn`` hears of each retry. The last
    busy error, or any other, is raised."""
    delay, attempt = BUSY_BACKOFF, 1
    while True:
        try:
            return op()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == BUSY_RETRIES:
                raise
            if warn is not None:
                warn(exc, attempt, delay)
            time.sleep(delay)
            delay, attempt = delay * 2, attempt + 1


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
        self._ledger_on: sqlite3.Connection | None = None
        """The connection on which the ledger's table is known to exist."""
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
                with self._transaction(conn):
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    for step in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in MIGRATIONS[step].split(";"):
                            if statement.strip():
                                conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={max(version, SCHEMA_VERSION)}")
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

    def _run(self, op: Callable[[sqlite3.Connection], T], reveals: bool) -> T:
        """Run ``op`` under the lock; ``reveals``: it may make a row visible (a put, a release),
        which moves :meth:`generation`. A write that only deletes or hides rows (an ack, a
        claim, a renewal, a start record) does not: a queue seen empty stays empty."""
        def locked() -> T:
            with self._lock:
                result = op(self._connect())
                if reveals:
                    self._local_writes += 1
                return result
        return self._retrying(locked)

    def _retrying(self, op: Callable[[], T]) -> T:
        """Run ``op``, retrying with backoff (and a warning) while the file stays locked past
        ``busy_timeout``; past the last retry, :class:`BrokerLocked` says so (a kombu
        connection error: a worker reconnects, keeping what it holds)."""
        started = time.monotonic()

        def warn(exc: sqlite3.OperationalError, attempt: int, delay: float) -> None:
            logger.warning("SQLite broker %s busy (%s): retry %d of %d in %.2fs",
                           self.path, exc, attempt, BUSY_RETRIES - 1, delay)
        try:
            return retry_while_busy(op, warn)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            raise BrokerLocked(
                f"the SQLite broker at {self.path} stayed locked for "
                f"{time.monotonic() - started:.1f}s ({BUSY_RETRIES} attempts of "
                f"busy_timeout {self.busy_timeout}s): another process holds its write "
                "lock; raise the transport option busy_timeout if that is expected") from exc

    def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op``, a read or a write that reveals no row (see :meth:`_run`)."""
        return self._run(op, reveals=False)

    def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return self._run(op, reveals=True)

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
        (``PRAGMA data_version``), a write by this one that reveals rows (see :meth:`_run`),
        or a sweep interval passing."""
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

    def put_many(self, rows: Sequence[tuple[str, int, str, float | None]]) -> None:
        """Store several messages, each ``(queue, priority, payload, not_before)`` as for
        :meth:`put`, in one transaction: all or none."""
        now = time.time()
        values = [(queue, priority, payload, max(now, not_before) if not_before else now, now)
                  for queue, priority, payload, not_before in rows]

        def insert(c: sqlite3.Connection) -> None:
            with self._transaction(c):
                c.executemany("INSERT INTO messages (queue, priority, payload, visible_at, "
                              "created_at) VALUES (?, ?, ?, ?, ?)", values)
        self._write(insert)

    def put_fanout(self, exchange: str, priority: int, payload: str) -> int:
        """One copy for every queue bound to ``exchange``, in one transaction."""
        now = time.time()
        return self._write(lambda c: c.execute(
            "INSERT INTO messages (queue, priority, payload, visible_at, created_at) "
            "SELECT DISTINCT queue, ?, ?, ?, ? FROM bindings WHERE exchange = ?",
            (priority, payload, now, now, exchange)).rowcount)

    def claim(self, queue: str, limit: int, visibility_timeout: float) -> list[Claimed]:
        """Take up to ``limit`` visible messages, best priority first, in one statement."""
        if _UNRELEASED:
            self._release_leftovers()
        now = time.time()
        return self._read(lambda c: self._claim(c, queue, limit, now, visibility_timeout))

    @staticmethod
    def _claim(c: sqlite3.Connection, queue: str, limit: int, now: float,
               visibility_timeout: float) -> list[Claimed]:
        until = now + visibility_timeout
        # ORDER BY priority: 0 first, as on kombu's Redis transport (see the module docstring).
        rows = c.execute(
            "UPDATE messages SET visible_at = ?, holder = ?, "
            f"delivered_count = delivered_count + 1 WHERE id IN ({READY} LIMIT ?) "
            "RETURNING priority, id, payload, delivered_count",
            (until, current_process().token, queue, now, limit)).fetchall()
        rows.sort()  # RETURNING has no order: within one claim, by priority, then id
        return [Claimed(id, payload, count, until) for _, id, payload, count in rows]

    def fetch(self, acks: Sequence[int], starts: StartRecord | None, queues: Sequence[str],
              limit: int, visibility_timeout: float) -> list[tuple[str, Claimed]]:
        """The worker's fetch, in one transaction: delete the acked rows ``acks``, write
        ``starts`` in the cluster ledger's table of this file, then claim up to ``limit`` rows
        from ``queues``, each in turn, as :meth:`claim` does. All or nothing: when it fails,
        no start is recorded, nothing is acked or claimed."""
        if not acks and starts is None and (limit <= 0 or not queues):
            return []
        if _UNRELEASED:
            self._release_leftovers()
        now = time.time()

        def op(c: sqlite3.Connection) -> list[tuple[str, Claimed]]:
            taken: list[tuple[str, Claimed]] = []
            with self._transaction(c):
                if acks:
                    c.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in acks])
                if starts is not None:
                    if self._ledger_on is not c:
                        c.execute(ledger_table.SCHEMA)
                    ledger_table.write(c, starts.key, starts.started, starts.settled,
                                       starts.trim_before)
                for queue in queues:
                    if len(taken) >= limit:
                        break
                    taken += [(queue, claimed) for claimed in self._claim(
                        c, queue, limit - len(taken), now, visibility_timeout)]
            if starts is not None:
                self._ledger_on = c
            return taken
        return self._read(op)

    def take(self, queue: str) -> Claimed | None:
        """Remove and return the next visible message: delivery without acknowledgement."""
        now = time.time()
        row = self._read(lambda c: c.execute(
            f"DELETE FROM messages WHERE id = ({READY} LIMIT 1) "
            "RETURNING id, payload, delivered_count", (queue, now)).fetchone())
        if row is None:
            return None
        return Claimed(row[0], row[1], row[2] + 1, float("inf"))

    def ack(self, message_id: int) -> None:
        self._read(lambda c: c.execute("DELETE FROM messages WHERE id = ?", (message_id,)))

    def ack_many(self, message_ids: Sequence[int]) -> None:
        """Ack several messages in one transaction."""
        if message_ids:
            self.fetch(message_ids, None, (), 0, 0.0)

    def renew(self, claims: Sequence[tuple[int, int]], visibility_timeout: float
              ) -> tuple[float, set[tuple[int, int]]]:
        """Keep the claims this process still holds, each ``(row id, delivered count)``,
        invisible for another ``visibility_timeout``, in one transaction (the worker's lease
        thread: nothing it holds is delivered twice, however long it holds it). A row claimed
        again since (its count moved on) is left alone. Returns the new deadline and the claims
        renewed."""
        until, me = time.time() + visibility_timeout, current_process().token
        if not claims:
            return until, set()

        def op(c: sqlite3.Connection) -> set[tuple[int, int]]:
            with self._transaction(c):
                return {(row, count) for row, count in claims if c.execute(
                    "UPDATE messages SET visible_at = ? "
                    "WHERE id = ? AND holder = ? AND delivered_count = ?",
                    (until, row, me, count)).rowcount}
        return until, self._read(op)

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

    # peeking: the ready rows in delivery order, and changes to rows nobody holds

    def ready_page(self, queue: str, offset: int, limit: int
                   ) -> list[tuple[int, str, float]]:
        """(id, payload, created_at) of ready rows ``offset`` to ``offset + limit`` of
        ``queue``, in the order a claim takes them: a read, nothing claimed."""
        now = time.time()
        return self._read(lambda c: c.execute(
            f"SELECT id, payload, created_at FROM messages WHERE id IN ({READY} LIMIT ? "
            "OFFSET ?) ORDER BY priority, visible_at, id",
            (queue, now, limit, offset)).fetchall())

    def delete_rows(self, queue: str, ids: list[int]) -> int:
        """Delete these rows of ``queue`` unless a consumer holds them; returns how many."""
        return self._write(lambda c: sum(c.execute(
            "DELETE FROM messages WHERE id = ? AND queue = ? AND holder IS NULL",
            (i, queue)).rowcount for i in ids))

    def move_rows(self, queue: str, moves: list[tuple[int, str, str]]) -> list[int]:
        """Move rows of ``queue`` nobody holds, each (id, new payload, to), to the back of
        queue ``to``, ready now; returns the ids of those moved."""
        now = time.time()
        return self._write(lambda c: [i for i, payload, to in moves if c.execute(
            "UPDATE messages SET queue = ?, payload = ?, visible_at = ?, created_at = ?, "
            "delivered_count = 0 WHERE id = ? AND queue = ? AND holder IS NULL",
            (to, payload, now, now, i, queue)).rowcount])

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

    def unheld_rows(self, queue: str) -> list[tuple[int, str]]:
        """(row id, payload) of every row of ``queue`` nobody holds, by when it becomes visible."""
        return self._read(lambda c: c.execute(
            "SELECT id, payload FROM messages WHERE queue = ? AND holder IS NULL "
            "ORDER BY visible_at, id", (queue,)).fetchall())

    def move_unheld_row(self, row_id: int, to: str, payload: str) -> bool:
        """Make one row nobody holds ready now in queue ``to`` with ``payload``; False when it
        is gone or held (someone else took it first)."""
        now = time.time()
        return bool(self._write(lambda c: c.execute(
            "UPDATE messages SET queue = ?, payload = ?, visible_at = ?, created_at = ? "
            "WHERE id = ? AND holder IS NULL", (to, payload, now, now, row_id)).rowcount))

    def delete_unheld_row(self, row_id: int) -> bool:
        """Delete one row nobody holds; False when it is gone or held."""
        return bool(self._write(lambda c: c.execute(
            "DELETE FROM messages WHERE id = ? AND holder IS NULL", (row_id,)).rowcount))
    # paused queues (qtui.core.pauses)

    def paused(self) -> list[tuple[str, float, str, tuple[str, ...]]]:
        """(queue, since, by, consumers) of every paused queue."""
        def read(c: sqlite3.Connection) -> list[tuple[str, float, str, tuple[str, ...]]]:
            hosts: dict[str, list[str]] = {}
            for queue, hostname in c.execute(
                    "SELECT queue, hostname FROM paused_consumers ORDER BY hostname"):
                hosts.setdefault(queue, []).append(hostname)
            return [(queue, since, by, tuple(hosts.get(queue, ())))
                    for queue, since, by in c.execute(
                        "SELECT queue, since, by FROM paused_queues ORDER BY queue")]
        return self._read(read)

    def pause(self, queue: str, since: float, by: str, consumers: Sequence[str]) -> None:
        """Pause ``queue`` (kept as first paused if it is already) noting ``consumers``."""
        def write(c: sqlite3.Connection) -> None:
            with self._transaction(c):
                c.execute("INSERT OR IGNORE INTO paused_queues (queue, since, by) "
                          "VALUES (?, ?, ?)", (queue, since, by))
                c.executemany("INSERT OR IGNORE INTO paused_consumers (queue, hostname) "
                              "VALUES (?, ?)", [(queue, host) for host in consumers])
        self._write(write)

    def resume(self, queue: str) -> tuple[float, str, tuple[str, ...]] | None:
        """Unpause ``queue``; returns its (since, by, consumers), None if it was not paused."""
        def write(c: sqlite3.Connection) -> tuple[float, str, tuple[str, ...]] | None:
            with self._transaction(c):
                row = c.execute("SELECT since, by FROM paused_queues WHERE queue = ?",
                                (queue,)).fetchone()
                hosts = tuple(h for (h,) in c.execute(
                    "SELECT hostname FROM paused_consumers WHERE queue = ? ORDER BY hostname",
                    (queue,)))
                c.execute("DELETE FROM paused_queues WHERE queue = ?", (queue,))
                c.execute("DELETE FROM paused_consumers WHERE queue = ?", (queue,))
            return None if row is None else (float(row[0]), str(row[1]), hosts)
        return self._write(write)

    def note_paused_consumer(self, queue: str, hostname: str) -> None:
        """Note a worker to give ``queue`` back to, while it is still paused."""
        self._write(lambda c: c.execute(
            "INSERT OR IGNORE INTO paused_consumers (queue, hostname) "
            "SELECT queue, ? FROM paused_queues WHERE queue = ?", (hostname, queue)))

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

    def is_transient(self, name: str) -> bool:
        """Whether the queue was declared auto-delete or expiring (an event receiver's, a
        remote-control mailbox's)."""
        return bool(self._read(lambda c: c.execute(
            "SELECT EXISTS (SELECT 1 FROM queues WHERE name = ? "
            "AND (auto_delete OR expires_ms IS NOT NULL))", (name,)).fetchone()[0]))

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
    db = Database(broker_path(str(path)))
    try:
        return db.list_queues()
    finally:
        db.close()
