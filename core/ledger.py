"""The cluster ledger: small records with an expiry that every qtui process of a cluster can read.

A worker that is SIGKILLed keeps nothing, and one that starts later knows nothing; what both
must agree on (which deliveries started running, which task ids are revoked) is kept where
they all meet: on the broker when it is Redis (a sorted set per kind, scored by expiry:
:mod:`.brokers.redis.ledger`, imported only then) or the embedded SQLite broker (a table in its
file), else in the result backend when that is Redis or SQLite (RabbitMQ with such a backend).
With neither -- RabbitMQ and rpc:// or no results -- there is no ledger (:func:`ledger_for`
returns None) and callers say what they do without it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends import results_path
from .brokers import broker_path
from .brokers.redis.urls import CLIENT_SCHEMES, scheme
from .brokers.sqlite import ledger_table

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

    def written_by(self, channel: Any, broker_url: str) -> bool:
        """Whether a worker's ``channel`` to ``broker_url``, one whose fetch writes start records
        (``send_fetch``), can write this ledger's: it reaches the store the ledger is kept in."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


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

    def written_by(self, channel: Any, broker_url: str) -> bool:
        """The embedded broker's channel, on the file the ledger is kept in."""
        return bool(self.path.resolve() == channel.db.path.resolve())

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
        if scheme(url) in CLIENT_SCHEMES:
            from .brokers.redis.ledger import RedisLedger  # loads redis-py: for Redis users only
            return RedisLedger(url)
        if scheme(url) == "sqlite":
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
    (:meth:`qtui.core.brokers.sqlite.transport.Channel.send_fetch`)."""

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
