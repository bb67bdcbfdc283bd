"""The console's memory across restarts: tasks it has seen, kept in a local SQLite file.

Events on Redis and RabbitMQ reach only the receivers connected when they are sent, so a
console that restarts would start blank (Flower's oldest complaint). The feed writes every task
that changed to this file (one transaction per snapshot) and reads the newest
``console_max_tasks`` back at start. One file serves several clusters: rows are keyed by the
cluster's broker URL (password masked). ``console_history = false`` turns it off.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qtui.core.brokers import data_dir
from qtui.core.display import clip
from qtui.core.eventcheck import MAX_FIELD, MAX_TIMESTAMP, TEXT_FIELDS
from qtui.core.exceptions import ConfigError
from qtui.core.state import TaskState

SCHEMA_VERSION = 1
_FIELDS = [f.name for f in dataclasses.fields(TaskState)]
#: What a stored task's fields must be to come back: the file may have been written by an older
#: qtui that kept what any event said, or edited by hand.
_STRINGS = frozenset({"uuid", "state", "name", "worker", "client", "args", "kwargs", "eta",
                      "expires", "root_id", "parent_id", "queue", "exchange", "routing_key",
                      "exception", "traceback", "origin"})
_TIMES = frozenset({"runtime", "sent", "received", "started", "retried", "succeeded", "failed",
                    "revoked", "rejected", "timestamp", "updated"})
_COUNTS = frozenset({"retries", "clock"})


def default_history_path() -> Path:
    return data_dir() / "console-history.sqlite"


class History:
    """Tasks of one cluster, newest kept; at most ``limit`` rows survive a :meth:`trim`."""

    def __init__(self, path: str | Path, cluster: str, limit: int = 100_000,
                 max_field: int = MAX_FIELD) -> None:
        self.path = Path(path).expanduser()
        self.cluster = cluster
        self.limit = limit
        self.max_field = max_field
        """Characters loaded of each free-text field (the State cut new ones already)."""
        self._lock = threading.Lock()
        self._writes = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Owner only: it holds task arguments, results and tracebacks. SQLite gives its
            # -wal and -shm files the mode of the database file.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(
                    f"console history {self.path} was written by another qtui version "
                    f"(schema {version}, expected {SCHEMA_VERSION}); move it away or set "
                    "console_history_file to a new path")
            with self._db:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS tasks (cluster TEXT NOT NULL, id TEXT NOT NULL, "
                    "updated REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (cluster, id))")
                self._db.execute("CREATE INDEX IF NOT EXISTS tasks_age "
                                 "ON tasks (cluster, updated)")
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"console history {self.path} cannot be used ({exc}); fix or "
                              "remove it, set console_history_file, or console_history = "
                              "false") from exc
        except OSError as exc:
            raise ConfigError(f"console history {self.path} cannot be created ({exc}); set "
                              "console_history_file or console_history = false") from exc

    def save(self, tasks: Iterable[TaskState]) -> None:
        rows = [(self.cluster, t.uuid, t.updated, _dump(t)) for t in tasks]
        if not rows:
            return
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO tasks (cluster, id, updated, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (cluster, id) DO UPDATE SET updated = excluded.updated, "
                "data = excluded.data", rows)
            self._writes += len(rows)
            if self._writes >= self.limit // 10 + 1:
                self._writes = 0
                self._trim()

    def _trim(self) -> None:
        self._db.execute(
            "DELETE FROM tasks WHERE cluster = ?1 AND updated < (SELECT updated FROM tasks "
            "WHERE cluster = ?1 ORDER BY updated DESC LIMIT 1 OFFSET ?2)",
            (self.cluster, self.limit))

    def load(self, limit: int | None = None) -> list[TaskState]:
        """The newest ``limit`` tasks, oldest first (the order a State keeps them in)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM tasks WHERE cluster = ? ORDER BY updated DESC LIMIT ?",
                (self.cluster, limit or self.limit)).fetchall()
        tasks = []
        for (data,) in reversed(rows):
            task = _load(data, self.max_field)
            if task is not None:
                tasks.append(task)
        return tasks

    def clear(self) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM tasks WHERE cluster = ?", (self.cluster,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _dump(task: TaskState) -> str:
    return json.dumps({name: getattr(task, name) for name in _FIELDS}, default=repr)


def _load(data: str, max_field: int) -> TaskState | None:
    """The task a row holds, or None when it is damaged or holds what no event may say."""
    try:
        values: dict[str, Any] = json.loads(data)
        values = {k: v for k, v in values.items() if k in _FIELDS}
        values["timeline"] = tuple(tuple(step) for step in values.get("timeline") or ())
        if not _sound(values):
            return None
        values["timeline"] = tuple((*step, "")[:4] for step in values["timeline"])
        for name in TEXT_FIELDS:
            value = values.get(name)
            if value is not None:
                values[name] = clip(value if isinstance(value, str) else repr(value), max_field)
        return TaskState(**values)
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None


def _sound(values: dict[str, Any]) -> bool:
    def real(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and 0 <= value <= MAX_TIMESTAMP
    for name, value in values.items():
        if value is None or name in ("result", "timeline"):
            continue
        if (name in _STRINGS and not isinstance(value, str)) \
                or (name in _TIMES and not real(value)) \
                or (name in _COUNTS and not (isinstance(value, int) and value >= 0)):
            return False
    # Three items in histories kept before timeline entries had a detail.
    return all(len(step) in (3, 4) and isinstance(step[0], str) and real(step[1])
               and all(isinstance(text, str) for text in step[2:])
               for step in values["timeline"])
