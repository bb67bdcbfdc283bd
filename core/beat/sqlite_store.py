"""The beat's shared state in SQLite: one ``qtui_beat`` table of keys with expiry, in the
embedded broker's file (or the SQLite result backend's), so beat processes on one host share it
as workers share the broker. Each compare-and-set step is one ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ..files import create_private
from .store import RUNS_KEPT, TICK_TTL, BeatStore, Claim, Node, Run

T = TypeVar("T")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS qtui_beat (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    expires REAL
);
CREATE INDEX IF NOT EXISTS qtui_beat_expires ON qtui_beat (expires);
"""
BUSY_TIMEOUT = 30.0


class SQLiteBeatStore(BeatStore):
    def __init__(self, path: str | os.PathLike[str], prefix: str) -> None:
        self.path = Path(path)
        self.prefix = prefix
        self.where = str(self.path)
        self.errors = (sqlite3.Error, OSError)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(self.path)
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _in_transaction(self, op: Callable[[sqlite3.Connection], T]) -> T:
        with self._transaction() as conn:
            return op(conn)

    @staticmethod
    def _get(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM qtui_beat WHERE key = ? AND "
                           "(expires IS NULL OR expires > ?)", (key, time.time())).fetchone()
        return row[0] if row else None

    @staticmethod
    def _set(conn: sqlite3.Connection, key: str, value: str, ttl: float | None = None) -> None:
        expires = time.time() + ttl if ttl is not None else None
        conn.execute("INSERT INTO qtui_beat (key, value, expires) VALUES (?, ?, ?) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                     "expires = excluded.expires", (key, value, expires))

    def hold_lease(self, node: str, ttl: float) -> bool:
        key = self._key("lease")

        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM qtui_beat WHERE expires <= ?", (time.time(),))
            holder = self._get(conn, key)
            if holder not in (None, node):
                return False
            self._set(conn, key, node, ttl)
            return True
        return self._in_transaction(op)

    def release_lease(self, node: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM qtui_beat WHERE key = ? AND value = ?",
                         (self._key("lease"), node))

    def claim_tick(self, entry: str, scheduled: float, node: str, fresh: float) -> Claim:
        key = self._key("tick", entry, repr(scheduled))

        def op(conn: sqlite3.Connection) -> Claim:
            seen = self._get(conn, key)
            now = time.time()
            if seen is not None and seen.startswith("sent:"):
                return Claim.SENT
            if seen is not None:
                holder, _, since = seen.removeprefix("claimed:").rpartition("@")
                if holder == node:
                    return Claim.MINE
                if now - float(since) < fresh:
                    return Claim.PENDING
            self._set(conn, key, f"claimed:{node}@{now:.6f}", TICK_TTL)
            return Claim.NEW if seen is None else Claim.ORPHANED
        return self._in_transaction(op)

    def record_run(self, entry: str, run: Run) -> None:
        runs_key = self._key("runs", entry)

        def op(conn: sqlite3.Connection) -> None:
            if not run.manual:
                self._set(conn, self._key("tick", entry, repr(run.scheduled)),
                          f"sent:{run.by}", TICK_TTL)
                self._set(conn, self._key("position", entry), repr(run.scheduled))
            runs = json.loads(self._get(conn, runs_key) or "[]")
            self._set(conn, runs_key, json.dumps([run.to_json(), *runs][:RUNS_KEPT]))
        self._in_transaction(op)

    def skip_to(self, entry: str, scheduled: float) -> None:
        with self._transaction() as conn:
            self._set(conn, self._key("position", entry), repr(scheduled))

    def position(self, entry: str) -> float | None:
        found = self._in_transaction(lambda conn: self._get(conn, self._key("position", entry)))
        return float(found) if found is not None else None

    def runs(self, entry: str, limit: int = RUNS_KEPT) -> list[Run]:
        found = self._in_transaction(lambda conn: self._get(conn, self._key("runs", entry)))
        return [Run.from_json(item) for item in json.loads(found or "[]")[:limit]]

    def set_paused(self, entry: str, paused: bool) -> None:
        key = self._key("paused", entry)
        with self._transaction() as conn:
            if paused:
                self._set(conn, key, "1")
            else:
                conn.execute("DELETE FROM qtui_beat WHERE key = ?", (key,))

    def _with_prefix(self, what: str) -> list[tuple[str, str]]:
        start = self._key(what, "")
        rows = self._in_transaction(lambda conn: conn.execute(
            "SELECT key, value FROM qtui_beat WHERE key >= ? AND key < ? AND "
            "(expires IS NULL OR expires > ?)", (start, start + "\uffff", time.time())
        ).fetchall())
        return [(key[len(start):], value) for key, value in rows]

    def paused(self) -> set[str]:
        return {name for name, _ in self._with_prefix("paused")}

    def report_node(self, node: Node, ttl: float) -> None:
        with self._transaction() as conn:
            self._set(conn, self._key("node", node.name),
                      json.dumps({"leader": node.leader, "seen": node.seen}), ttl)

    def nodes(self) -> list[Node]:
        found = [Node(name, **json.loads(value)) for name, value in self._with_prefix("node")]
        return sorted(found, key=lambda n: n.name)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
