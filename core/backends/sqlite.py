"""SQLite result backend: results in a local file, with Redis-like expiry, readable across
processes.

The embedded default stores results next to the embedded broker; ``sqlite://PATH`` names another
file. Waiting polls a single indexed row every few milliseconds (SQLite has no notifications).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..brokers.sqlite.database import retry_while_busy
from ..exceptions import BackendError
from ..files import create_private
from . import results_path
from .base import ResultBackend
from .chord import Send
from .sqlite_chord import SQLiteChordJoin

if TYPE_CHECKING:
    from ..app import App
    from ..protocol import TaskMessage

SCHEMA_VERSION = 1
POLL_INTERVAL = 0.01
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    task_id    TEXT PRIMARY KEY,
    meta       BLOB NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS results_expires_at ON results (expires_at);
"""


class SQLiteBackend(ResultBackend):
    def __init__(self, app: App, url: str) -> None:
        super().__init__(app, url)
        self.path = results_path(url)
        self._local = threading.local()
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        kept: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if kept is not None and self._local.pid == os.getpid():
            return kept
        try:  # a lock met at once (a switch to WAL while another process opens the file)
            conn = retry_while_busy(self._open)
        except sqlite3.OperationalError as exc:
            raise BackendError(f"cannot use {self.path} as a result store: {exc}") from exc
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        """A new connection, in WAL mode, with the schema created (or a clear refusal)."""
        try:
            create_private(self.path)
        except OSError as exc:
            raise BackendError(f"cannot create the result store {self.path}: {exc}") from exc
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BackendError(f"result store {self.path} was written by a newer qtui "
                                   f"(schema {version}, this one knows {SCHEMA_VERSION}); "
                                   "upgrade qtui or use another file")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.DatabaseError) \
                    and not isinstance(exc, sqlite3.OperationalError):  # those: _connect's
                raise BackendError(f"cannot use {self.path} as a result store: {exc}") from exc
            raise
        return conn

    def _set(self, task_id: str, payload: bytes, meta: dict[str, Any],
             request: TaskMessage | None) -> None:
        expires_at = time.time() + self.expires if self.expires else None
        try:
            self._connect().execute(
                "INSERT OR REPLACE INTO results (task_id, meta, expires_at) VALUES (?, ?, ?)",
                (task_id, payload, expires_at))
        except sqlite3.Error as exc:
            raise BackendError(f"cannot store the result of task {task_id} in {self.path}: "
                               f"{exc}") from exc

    def _get(self, task_id: str) -> bytes | None:
        try:
            row = self._connect().execute(
                "SELECT meta FROM results WHERE task_id = ? "
                "AND (expires_at IS NULL OR expires_at > ?)", (task_id, time.time())).fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"cannot read the result of task {task_id} from {self.path}: "
                               f"{exc}") from exc
        return None if row is None else bytes(row[0])

    def _delete(self, task_id: str) -> None:
        self._connect().execute("DELETE FROM results WHERE task_id = ?", (task_id,))

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> dict[str, Any]:
        return super()._wait(task_id, timeout, min(interval, POLL_INTERVAL))

    def _set_group(self, key: str, payload: bytes | None) -> None:
        if payload is None:
            self._delete(key)
        else:
            self._set(key, payload, {}, None)

    def _get_group(self, key: str) -> bytes | None:
        return self._get(key)

    @cached_property
    def _chords(self) -> SQLiteChordJoin:
        return SQLiteChordJoin(self)

    def set_chord_size(self, group_id: str, size: int) -> None:
        self._chords.set_chord_size(group_id, size)

    def on_chord_part_return(self, message: TaskMessage, state: str, result: Any,
                             send: Send | None = None, retake: bool = False) -> None:
        self._chords.on_chord_part_return(message, state, result, send, retake)

    def cleanup(self) -> None:
        self._connect().execute("DELETE FROM results WHERE expires_at <= ?", (time.time(),))
        self._chords.cleanup()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
