"""The console's memory across restarts: tasks it has seen, kept in a local SQLite file.

Events on Redis and RabbitMQ reach only the receivers connected when they are sent, so a
console that restarts would start blank (Flower's oldest complaint). The feed writes every task
that changed to this file (one transaction per snapshot) and reads the newest
``console_max_tasks`` back at start. One file serves several clusters: rows are keyed by the
cluster's broker URL (password masked). ``console_history = false`` turns it off.

The file also keeps the task metrics (:mod:`qtui.core.metrics`): one row per minute, task name
and queue for ``console_metrics_hours``, then one per ten minutes for ``console_metrics_days``,
then none; and the deepest each queue was in each minute. Histogram buckets are columns, so
rollups add up in SQL.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from qtui.core.brokers import data_dir
from qtui.core.display import clip
from qtui.core.eventcheck import MAX_FIELD, MAX_TIMESTAMP, TEXT_FIELDS
from qtui.core.exceptions import ConfigError
from qtui.core.metrics import BUCKETS, COUNTED, MINUTE, Histogram, Rollup, RollupKey
from qtui.core.state import TIMELINE_STEP, TaskState, timeline_steps

#: 1: tasks. 2: metrics and queue depths (a version 1 file gains their tables).
SCHEMA_VERSION = 2
#: Seconds of the coarse metrics rows that minute rows older than the fine retention become.
COARSE = 600
#: Seconds between two passes of the metrics retention.
METRICS_TRIM_INTERVAL = 60.0
_RUNTIME = [f"r{i}" for i in range(BUCKETS)]
_WAIT = [f"w{i}" for i in range(BUCKETS)]
#: The metrics columns that add up when rows merge, in the order a row is written.
_SUMMED = [*COUNTED, "runtime_sum", "wait_sum", *_RUNTIME, *_WAIT]
_METRICS_TABLES = (
    "CREATE TABLE IF NOT EXISTS metrics (cluster TEXT NOT NULL, period INTEGER NOT NULL, "
    "start INTEGER NOT NULL, task TEXT NOT NULL, queue TEXT NOT NULL, "
    + ", ".join(f"{c} {'REAL' if c.endswith('_sum') else 'INTEGER'} NOT NULL DEFAULT 0"
                for c in _SUMMED)
    + ", PRIMARY KEY (cluster, period, start, task, queue)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS queue_depths (cluster TEXT NOT NULL, period INTEGER NOT NULL, "
    "start INTEGER NOT NULL, queue TEXT NOT NULL, depth INTEGER, oldest_age REAL, "
    "PRIMARY KEY (cluster, period, start, queue)) WITHOUT ROWID",
)
#: Rows of one cluster from a time to another. Both periods named, so the primary key (cluster,
#: period, start, ...) reads only the rows of the range.
_IN_RANGE = f"cluster = ? AND period IN ({MINUTE}, {COARSE}) AND start >= ? AND start < ?"
_ADD_UP = ", ".join(f"{c} = {c} + excluded.{c}" for c in _SUMMED)
_UPSERT_METRICS = (
    f"INSERT INTO metrics (cluster, period, start, task, queue, {', '.join(_SUMMED)}) "
    f"VALUES (?, ?, ?, ?, ?, {', '.join('?' * len(_SUMMED))}) "
    f"ON CONFLICT (cluster, period, start, task, queue) DO UPDATE SET {_ADD_UP}")
_DEEPEST = ("depth = max(coalesce(depth, excluded.depth), coalesce(excluded.depth, depth)), "
            "oldest_age = max(coalesce(oldest_age, excluded.oldest_age), "
            "coalesce(excluded.oldest_age, oldest_age))")
_FIELDS = [f.name for f in dataclasses.fields(TaskState)]
_field_values = operator.attrgetter(*_FIELDS)
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
                 max_field: int = MAX_FIELD, metrics_hours: float = 48.0,
                 metrics_days: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path).expanduser()
        self.cluster = cluster
        self.limit = limit
        self.max_field = max_field
        """Characters loaded of each free-text field (the State cut new ones already)."""
        self.metrics_hours = metrics_hours
        """Hours metrics are kept per minute (then per ten minutes)."""
        self.metrics_days = metrics_days
        """Days metrics are kept at all."""
        self.clock = clock
        self._lock = threading.Lock()
        self._writes = 0
        self._next_metrics_trim = 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Owner only: it holds task arguments, results and tracebacks. SQLite gives its
            # -wal and -shm files the mode of the database file.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
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
                for table in _METRICS_TABLES:
                    self._db.execute(table)
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

    # metrics ------------------------------------------------------------------------------
    def save_metrics(self, rollups: Mapping[RollupKey, Rollup]) -> None:
        """Add rollups to the stored ones (a minute seen by an earlier session adds up), and
        apply the retention once a minute."""
        rows = [(self.cluster, MINUTE, start, task, queue, *_columns(rollup))
                for (start, task, queue), rollup in rollups.items()]
        now = self.clock()
        if not rows and now < self._next_metrics_trim:
            return
        with self._lock, self._db:
            if rows:
                self._db.executemany(_UPSERT_METRICS, rows)
            if now >= self._next_metrics_trim:
                self._next_metrics_trim = now + METRICS_TRIM_INTERVAL
                self._trim_metrics(now)

    def save_queue_depths(self, when: float, depths: Mapping[str, tuple[int | None,
                                                                      float | None]]) -> None:
        """One poll's (depth, oldest message's age in seconds) per queue: each minute keeps the
        deepest and oldest its polls saw."""
        start = int(when // MINUTE) * MINUTE
        rows = [(self.cluster, MINUTE, start, queue, depth, age)
                for queue, (depth, age) in depths.items()]
        if not rows:
            return
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO queue_depths (cluster, period, start, queue, depth, oldest_age) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (cluster, period, start, queue) "
                f"DO UPDATE SET {_DEEPEST}", rows)

    def trim_metrics(self) -> None:
        """Apply the retention now (it also runs by itself as metrics are saved)."""
        with self._lock, self._db:
            self._trim_metrics(self.clock())

    def _trim_metrics(self, now: float) -> None:
        """Minute rows older than ``metrics_hours`` become ten-minute rows (whole ten minutes
        only); rows older than ``metrics_days`` go."""
        fine_until = int(now - self.metrics_hours * 3600) // COARSE * COARSE
        keep_from = now - self.metrics_days * 86400
        sums = ", ".join(f"sum({c})" for c in _SUMMED)
        self._db.execute(
            f"INSERT INTO metrics (cluster, period, start, task, queue, {', '.join(_SUMMED)}) "
            f"SELECT cluster, {COARSE}, start / {COARSE} * {COARSE}, task, queue, {sums} "
            "FROM metrics WHERE cluster = ?1 AND period = ?2 AND start < ?3 "
            f"GROUP BY start / {COARSE}, task, queue "
            f"ON CONFLICT (cluster, period, start, task, queue) DO UPDATE SET {_ADD_UP}",
            (self.cluster, MINUTE, fine_until))
        self._db.execute(
            "INSERT INTO queue_depths (cluster, period, start, queue, depth, oldest_age) "
            f"SELECT cluster, {COARSE}, start / {COARSE} * {COARSE}, queue, max(depth), "
            "max(oldest_age) FROM queue_depths WHERE cluster = ?1 AND period = ?2 "
            f"AND start < ?3 GROUP BY start / {COARSE}, queue "
            f"ON CONFLICT (cluster, period, start, queue) DO UPDATE SET {_DEEPEST}",
            (self.cluster, MINUTE, fine_until))
        for table in ("metrics", "queue_depths"):
            self._db.execute(f"DELETE FROM {table} WHERE cluster = ? AND period = ? "
                             "AND start < ?", (self.cluster, MINUTE, fine_until))
            self._db.execute(f"DELETE FROM {table} WHERE cluster = ? AND start < ?",
                             (self.cluster, keep_from))

    def metrics(self, since: float, until: float, by: str) -> dict[str, Rollup]:
        """Rollups from ``since`` to ``until`` merged per task name (``by="task"``) or per queue
        (``by="queue"``), from minute and ten-minute rows alike."""
        column = _grouping(by)
        sums = ", ".join(f"sum({c})" for c in _SUMMED)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {column}, {sums} FROM metrics WHERE {_IN_RANGE} GROUP BY {column}",
                (self.cluster, int(since), until)).fetchall()
        return {row[0]: _rollup(row[1:]) for row in rows}

    def metrics_series(self, since: float, until: float, step: int, by: str,
                       key: str | None = None) -> dict[int, Rollup]:
        """Rollups from ``since`` to ``until`` merged per ``step`` seconds (a multiple of the
        rows' periods in that range), of one task name or queue (``key``) or of all."""
        column = _grouping(by)
        sums = ", ".join(f"sum({c})" for c in _SUMMED)
        where = "" if key is None else f" AND {column} = ?"
        with self._lock:
            rows = self._db.execute(
                f"SELECT start / {int(step)} * {int(step)} AS slot, {sums} FROM metrics "
                f"WHERE {_IN_RANGE}{where} GROUP BY slot",
                (self.cluster, int(since), until, *(() if key is None else (key,)))).fetchall()
        return {row[0]: _rollup(row[1:]) for row in rows}

    def metrics_pairs(self, since: float, until: float) -> list[tuple[str, str]]:
        """The (task name, queue) pairs counted from ``since`` to ``until``."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT DISTINCT task, queue FROM metrics WHERE {_IN_RANGE}",
                (self.cluster, int(since), until)).fetchall()
        return [(task, queue) for task, queue in rows]

    def queue_depths(self, since: float, until: float) -> dict[str, tuple[int | None,
                                                                         float | None]]:
        """The deepest each queue was, and its oldest message's age, from ``since`` to
        ``until``."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT queue, max(depth), max(oldest_age) FROM queue_depths WHERE {_IN_RANGE} "
                "GROUP BY queue",
                (self.cluster, int(since), until)).fetchall()
        return {queue: (depth, age) for queue, depth, age in rows}

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


def _columns(rollup: Rollup) -> list[float]:
    """A rollup's values in the order of :data:`_SUMMED`."""
    return [*rollup.counts, rollup.runtime.total, rollup.wait.total, *rollup.runtime.counts,
            *rollup.wait.counts]


def _rollup(values: Iterable[Any]) -> Rollup:
    """The rollup of values in the order of :data:`_SUMMED`."""
    row = list(values)
    counted = len(COUNTED)
    runtime_sum, wait_sum = row[counted], row[counted + 1]
    buckets = row[counted + 2:]
    return Rollup(row[:counted], Histogram(buckets[:BUCKETS], runtime_sum),
                  Histogram(buckets[BUCKETS:], wait_sum))


def _grouping(by: str) -> str:
    if by not in ("task", "queue"):
        raise ValueError(f"metrics are grouped by task or queue, not {by!r}")
    return by


def _dump(task: TaskState) -> str:
    """A task as a row's JSON: its known fields (what is unknown comes back as unknown)."""
    data = {name: value for name, value in zip(_FIELDS, _field_values(task), strict=True)
            if value is not None}
    # The file keeps a list of steps, as it did before timelines were flat in memory.
    data["timeline"] = timeline_steps(task.timeline)
    return json.dumps(data, default=repr)


def _load(data: str, max_field: int) -> TaskState | None:
    """The task a row holds, or None when it is damaged or holds what no event may say."""
    try:
        values: dict[str, Any] = json.loads(data)
        values = {k: v for k, v in values.items() if k in _FIELDS}
        values["timeline"] = tuple(tuple(step) for step in values.get("timeline") or ())
        if not _sound(values):
            return None
        values["timeline"] = tuple(item for step in values["timeline"]
                                   for item in (*step, "")[:TIMELINE_STEP])
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
