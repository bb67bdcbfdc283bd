"""The audit trail: who did what to which cluster, from the console or a scripted command.

Every action that changes a cluster (revoke, terminate, retry, limits, pool size, consumers,
shutdown, purge, ETA release, ETA run/delete, schedule run/pause/resume, queue pause/resume,
peek delete/move, dead-letter requeue/delete) is appended to its own table of the
console's history file, with each worker's reply cut to :data:`REPLY_MAX` characters. A write
that fails never stops the action: the caller reports :class:`AuditError` and carries on.
``:audit`` in the console and ``qtui audit`` read it back.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtui.core import App
from qtui.core.config import mask_url
from qtui.core.display import clip
from qtui.core.exceptions import QtuiError

from .history import default_history_path

#: Characters kept of each worker's reply (Celery's revoke reply repeats every id it was given).
REPLY_MAX = 2_000
#: Where a reply came from when no worker gave it (a purge, an ETA release, a schedule change).
LOCAL = "-"


class AuditError(QtuiError):
    """The audit trail could not be written or read; the action itself is not affected."""


@dataclass(frozen=True)
class AuditEntry:
    """One action as it was taken and answered."""

    time: float
    who: str
    """``user@host`` of the person who took it."""
    cluster: str
    """The broker URL, password masked."""
    source: str
    """``console`` or ``cli``."""
    action: str
    targets: tuple[str, ...]
    replies: tuple[tuple[str, str], ...]
    """(worker, its reply in words) per answer; :data:`LOCAL` for what no worker said."""
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "who": self.who, "cluster": self.cluster,
                "source": self.source, "action": self.action, "targets": list(self.targets),
                "replies": dict(self.replies), "ok": self.ok}


def current_user() -> str:
    """``user@host``: who is at this terminal, as well as the system can tell."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container): say which uid it was
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def entry(app: App, source: str, action: str, targets: Iterable[str],
          replies: Mapping[str, Any] | Iterable[tuple[str, Any]], ok: bool) -> AuditEntry:
    """An entry for an action taken now on ``app``'s cluster, each reply cut to size."""
    pairs = replies.items() if isinstance(replies, Mapping) else replies
    return AuditEntry(time.time(), current_user(), mask_url(app.broker_url), source, action,
                      tuple(str(t) for t in targets),
                      tuple((str(w), clip(r if isinstance(r, str) else json.dumps(r, default=str),
                                          REPLY_MAX)) for w, r in pairs), ok)


class AuditLog:
    """The ``audit`` table of one history file; keeps the newest ``keep`` entries."""

    def __init__(self, path: str | Path, keep: int = 10_000) -> None:
        self.path = Path(path).expanduser()
        self.keep = keep
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        """Open on first use, so that a console that never acts never touches the file."""
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Owner only, as the history: targets and replies name tasks and their arguments.
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
                db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
                db.execute("PRAGMA journal_mode=WAL")
                with db:
                    db.execute("CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, "
                               "time REAL NOT NULL, cluster TEXT NOT NULL, data TEXT NOT NULL)")
                    db.execute("CREATE INDEX IF NOT EXISTS audit_time ON audit (cluster, time)")
            except (sqlite3.Error, OSError) as exc:
                raise AuditError(f"audit trail {self.path} cannot be used ({exc})") from exc
            self._db = db
        return self._db

    def record(self, item: AuditEntry) -> None:
        """Append one entry (and drop the oldest beyond ``keep``); :class:`AuditError` if the
        file cannot take it."""
        data = json.dumps(item.to_json())
        with self._lock:
            db = self._open()
            try:
                with db:
                    row = db.execute("INSERT INTO audit (time, cluster, data) VALUES (?, ?, ?)",
                                     (item.time, item.cluster, data)).lastrowid
                    if row is not None and row % 100 == 0:  # trimming is a scan: now and then
                        db.execute("DELETE FROM audit WHERE id <= ?", (row - self.keep,))
            except sqlite3.Error as exc:
                raise AuditError(f"audit trail {self.path} not written ({exc})") from exc

    def entries(self, limit: int = 100, since: float | None = None,
                cluster: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first: of one cluster, or of all; those after
        ``since`` (a timestamp) only, when given."""
        query = "SELECT data FROM audit WHERE time >= ?"
        params: list[Any] = [since or 0.0]
        if cluster is not None:
            query += " AND cluster = ?"
            params.append(cluster)
        with self._lock:
            db = self._open()
            try:
                rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
            except sqlite3.Error as exc:
                raise AuditError(f"audit trail {self.path} cannot be read ({exc})") from exc
        return [e for e in (_load(data) for (data,) in rows) if e is not None]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _load(data: str) -> AuditEntry | None:
    """The entry a row holds, or None when it is damaged (the file is the user's to edit)."""
    try:
        v = json.loads(data)
        return AuditEntry(float(v["time"]), str(v["who"]), str(v["cluster"]), str(v["source"]),
                          str(v["action"]), tuple(map(str, v["targets"])),
                          tuple((str(w), str(r)) for w, r in dict(v["replies"]).items()),
                          bool(v["ok"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def audit_log_for(app: App) -> AuditLog | None:
    """The audit trail the app's config names, or None when ``audit = false``."""
    conf = app.conf
    if not conf.audit:
        return None
    return AuditLog(conf.console_history_file or default_history_path(),
                    keep=conf.audit_max_entries)


def record_command(app: App, action: str, targets: Iterable[str],
                   replies: Mapping[str, Any], ok: bool) -> None:
    """Record what a scripted command did; a failure to is said on stderr, nothing more."""
    log = audit_log_for(app)
    if log is None:
        return
    try:
        log.record(entry(app, "cli", action, targets, replies, ok))
    except AuditError as exc:
        print(f"warning: {exc}", file=sys.stderr)
    finally:
        log.close()
