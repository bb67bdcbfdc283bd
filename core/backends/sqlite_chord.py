"""Joining a chord's header in the SQLite result store: a native join, one transaction per part.

Each finished header task adds its ``(index, task id, state, result)`` row once (a redelivered
part is ignored); the part that completes the count claims the chord in the same ``BEGIN
IMMEDIATE`` transaction, so exactly one worker process sends the body. The parts are kept, with
the part holding the claim, until the body is sent: only the worker ending that part once it
reaped its process (``retake``) gets the rows back and sends the body (twice if the kill came
between the publish and the cleanup); any other run of the part (a duplicate delivery) does
not. Once the body is sent, a cleanup that fails is logged, not raised: the chord is done, and
its rows are left to :meth:`SQLiteChordJoin.cleanup`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..exceptions import BackendError, ChordError
from .base import exception_to_meta
from .chord import Send, fail_body, header_results, send_body

if TYPE_CHECKING:
    from ..protocol import TaskMessage
    from .sqlite import SQLiteBackend

_T = TypeVar("_T")

logger = logging.getLogger("qtui.backend")

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
CREATE TABLE IF NOT EXISTS chord_claims (
    group_id TEXT PRIMARY KEY,
    task_id  TEXT NOT NULL
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
            conn.execute("DELETE FROM chord_claims WHERE group_id = ?", (group_id,))
        except sqlite3.Error as exc:
            raise BackendError(f"cannot record chord {group_id} in {self.backend.path}: "
                               f"{exc}") from exc

    def on_chord_part_return(self, message: TaskMessage, state: str, result: Any,
                             send: Send | None = None, retake: bool = False) -> None:
        group_id = message.group
        if not group_id:
            return
        if isinstance(result, BaseException):
            result = exception_to_meta(result)
        index = -1 if message.group_index is None else message.group_index
        payload = self.backend.encode({"status": state, "result": result})
        rows = self._in_transaction(group_id, lambda conn: self._add_and_claim(
            conn, group_id, (index, message.id, state, payload), retake))
        if rows is None:
            return
        try:
            results = header_results((task_id, state, self.backend.decode(raw)["result"])
                                     for task_id, state, raw in rows)
        except ChordError as exc:
            fail_body(self.backend, message, exc)
        else:
            send_body(self.backend, message, results, send)
        try:
            self._in_transaction(group_id, lambda conn: self._sent(conn, group_id))
        except BackendError as exc:  # the body went: the chord is done, whatever is left here
            # Nothing calls the backend's cleanup() on its own (Celery's backend_cleanup task
            # would): the rows stay, and take no more parts, as the chord is claimed.
            logger.warning("Chord %s: body sent; its parts and claim stay in the results "
                           "database, claimed, until the backend's cleanup() (%s)", group_id, exc)

    def _in_transaction(self, group_id: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                done = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BackendError(f"cannot join chord {group_id} in {self.backend.path}: "
                               f"{exc}") from exc
        return done

    @staticmethod
    def _sent(conn: sqlite3.Connection, group_id: str) -> None:
        """The body is sent (or failed): the parts and the claim's holder are forgotten, and a
        part arriving from now on is dropped."""
        conn.execute("DELETE FROM chord_parts WHERE group_id = ?", (group_id,))
        conn.execute("DELETE FROM chord_claims WHERE group_id = ?", (group_id,))

    @staticmethod
    def _add_and_claim(conn: sqlite3.Connection, group_id: str,
                       part: tuple[int, str, str, bytes],
                       retake: bool) -> list[tuple[str, str, bytes]] | None:
        """Record one part; the header's rows in order when it completes the chord (or, with
        ``retake``, holds its claim, the body not sent yet), else None (a part arriving once
        the chord is claimed is dropped)."""
        chord = conn.execute("SELECT size, claimed FROM chords WHERE group_id = ?",
                             (group_id,)).fetchone()
        if chord is not None and chord[1]:
            holder = conn.execute("SELECT task_id FROM chord_claims WHERE group_id = ?",
                                  (group_id,)).fetchone()
            if not retake or holder is None or holder[0] != part[1]:
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
        conn.execute("INSERT OR REPLACE INTO chord_claims VALUES (?, ?)", (group_id, part[1]))
        return [(task_id, state, bytes(raw)) for task_id, state, raw in rows]

    def cleanup(self) -> None:
        """Forget the chords (and their parts) past their expiry, and the parts and claims
        of claimed chords (a claimed chord takes no more parts; its holder, killed, is ended by
        its worker long before a cleanup)."""
        conn, now = self._conn(), time.time()
        conn.execute("DELETE FROM chord_parts WHERE group_id IN "
                     "(SELECT group_id FROM chords WHERE expires_at <= ? OR claimed = 1)", (now,))
        conn.execute("DELETE FROM chord_claims WHERE group_id IN "
                     "(SELECT group_id FROM chords WHERE expires_at <= ? OR claimed = 1)", (now,))
        conn.execute("DELETE FROM chords WHERE expires_at <= ?", (now,))
