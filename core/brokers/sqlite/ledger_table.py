"""The cluster ledger's table (:mod:`qtui.core.ledger`) in an SQLite file, the embedded broker's or
the result store's: its schema and its one write. Here, beside the broker, so that the worker's
fetch transaction can record the starts of a batch in the broker's own connection
(:meth:`.database.Database.fetch`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping

SCHEMA = """CREATE TABLE IF NOT EXISTS qtui_ledger (
    kind TEXT NOT NULL, key TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (kind, key)) WITHOUT ROWID"""


def write(conn: sqlite3.Connection, kind: str, records: Mapping[str, float],
          discard: Iterable[str] = (), trim_before: float | None = None) -> None:
    """Add (or extend) ``records`` of ``kind``, remove ``discard`` and, with ``trim_before``, the
    records of ``kind`` that expired by then: inside the caller's transaction."""
    if records:
        conn.executemany("INSERT OR REPLACE INTO qtui_ledger VALUES (?, ?, ?)",
                         [(kind, key, expires) for key, expires in records.items()])
    gone = [(kind, key) for key in discard]
    if gone:
        conn.executemany("DELETE FROM qtui_ledger WHERE kind = ? AND key = ?", gone)
    if trim_before is not None:
        conn.execute("DELETE FROM qtui_ledger WHERE kind = ? AND expires <= ?",
                     (kind, trim_before))
