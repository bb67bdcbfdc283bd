"""Joining a chord's header in the SQLite result store: a native join, one transaction per part.

Each finished header task adds its ``(index, task id, state, result)`` row once (a redelivered
part is ignored); the part that completes the count claims the chord in the same ``BEGIN
IMMEDIATE`` transaction, so exactly one worker process sends the body.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from ..exceptions import BackendError, ChordError
from .base import exception_to_meta
from .chord import Send, fail_body, header_results, send_body

if TYPE_CHECKING:
    from ..protocol import TaskMessage
    from .sqlite import SQLiteBackend

SCHEMA = """
CREATE TABLE IF NOT EXISTS chords (
    group_id   TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    claimed    INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS chord_parts (
    group_id TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    task_id  TEXT NOT NULL,
    state    TEXT NOT NULL,
    result   BLOB NOT NULL,
    PRIMARY KEY (group_id, idx, task_id)
);
"""


class SQLiteChordJoin:
    """The chord verbs of the SQLite backend."""

    def __init__(self, backend: SQLiteBackend) -> None:
        self.backend = backend

    def _conn(self) -> sqlite3.Connection:
        conn = self.backend._connect()
        local = self.backend._local
        if getattr(local, "chord_schema", None) is not conn:
            conn.executescript(SCHEMA)
            local.chord_schema = conn
        return conn

    def set_chord_size(self, group_id: str, size: int) -> None:
        expires_at = time.time() + self.backend.expires if self.backend.expires else None
        try:
            conn = self._conn()
            conn.execute("INSERT OR REPLACE INTO chords (group_id, size, claimed, expires_at) "
                         "VALUES (?, ?, 0, ?)", (group_id, size, expires_at))
        except sqlite3.Error as exc:
            raise BackendError(f"cannot record chord {group_id} in {self.backend.path}: "
                               f"{exc}") from exc

    def on_chord_part_return(self, message: TaskMessage, state: str, result: Any,
                             send: Send | None = None) -> None:
        group_id = message.group
        if not group_id:
            return
        if isinstance(result, BaseException):
            result = exception_to_meta(result)
        index = -1 if message.group_index is None else message.group_index
        payload = self.backend.encode({"status": state, "result": result})
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self._add_and_claim(conn, group_id, (index, message.id, state, payload))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BackendError(f"cannot join chord {group_id} in {self.backend.path}: "
                               f"{exc}") from exc
        if rows is None:
            return
        try:
            results = header_results((task_id, state, self.backend.decode(raw)["result"])
                                     for task_id, state, raw in rows)
        except ChordError as exc:
            fail_body(self.backend, message, exc)
            return
        send_body(self.backend, message, results, send)

    @staticmethod
    def _add_and_claim(conn: sqlite3.Connection, group_id: str,
                       part: tuple[int, str, str, bytes]) -> list[tuple[str, str, bytes]] | None:
        """Record one part; the header's rows in order when it completes the chord, else None
        (a part arriving after the body was sent is dropped)."""
        chord = conn.execute("SELECT size, claimed FROM chords WHERE group_id = ?",
                             (group_id,)).fetchone()
        if chord is not None and chord[1]:
            return None
        conn.execute("INSERT OR IGNORE INTO chord_parts VALUES (?, ?, ?, ?, ?)",
                     (group_id, *part))
        if chord is None:
            return None
        rows = conn.execute("SELECT task_id, state, result FROM chord_parts WHERE group_id = ? "
                            "ORDER BY idx", (group_id,)).fetchall()
        if len(rows) < chord[0]:
            return None
        conn.execute("UPDATE chords SET claimed = 1 WHERE group_id = ?", (group_id,))
        conn.execute("DELETE FROM chord_parts WHERE group_id = ?", (group_id,))
        return [(task_id, state, bytes(raw)) for task_id, state, raw in rows]

    def cleanup(self) -> None:
        """Forget the chords (and their parts) past their expiry."""
        conn, now = self._conn(), time.time()
        conn.execute("DELETE FROM chord_parts WHERE group_id IN "
                     "(SELECT group_id FROM chords WHERE expires_at <= ?)", (now,))
        conn.execute("DELETE FROM chords WHERE expires_at <= ?", (now,))
