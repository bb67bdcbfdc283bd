"""Revoked task ids: a bounded set with expiry, kept in the cluster ledger and in ``--statedb``.

A revoked task is never started: the worker checks the set when a message arrives, when its ETA
comes and right before the task would start. Revocations are written to the cluster ledger
(:mod:`qtui.core.ledger`) as they arrive, and read from it whenever the worker connects, so a
worker started later, or disconnected when the revoke was broadcast, refuses the task too. The
state database is a small SQLite file of this worker alone (one row per revoked id with its
expiry time), for clusters without a ledger. :class:`Revocation` is the worker's gate that
refuses revoked and expired tasks.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from qtui.core import states
from qtui.core.exceptions import TaskRevokedError
from qtui.core.files import create_private
from qtui.core.ledger import REVOKE_EXPIRES, REVOKED, Ledger

from .execution import store_state
from .hooks import Observer

if TYPE_CHECKING:
    from qtui.core.app import App

    from .hooks import Hooks
    from .job import Job
    from .settlement import Settlement

logger = logging.getLogger("qtui.worker")

REVOKES_MAX = 50_000


class Revoked:
    def __init__(self, statedb: str | None = None, expires: float = REVOKE_EXPIRES,
                 maxlen: int = REVOKES_MAX, ledger: Ledger | None = None) -> None:
        self.expires = expires
        self.maxlen = maxlen
        self.ledger = ledger
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        if statedb:
            self._open(Path(statedb).expanduser())

    def load(self) -> int:
        """Take in the revocations kept in the ledger; how many were new to this worker."""
        if self.ledger is None:
            return 0
        try:
            kept = self.ledger.load(REVOKED)
        except self.ledger.errors as exc:
            logger.warning("Cannot read revoked tasks from %s (%s)", self.ledger.where, exc)
            return 0
        new = [i for i in sorted(kept, key=kept.__getitem__) if i not in self]
        for task_id in new:
            self._ids[task_id] = kept[task_id]
        self._trim()
        return len(new)

    def _open(self, path: Path) -> None:
        create_private(path)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS revoked "
                         "(task_id TEXT PRIMARY KEY, expires REAL NOT NULL)")
        now = time.time()
        self._db.execute("DELETE FROM revoked WHERE expires <= ?", (now,))
        for task_id, expires in self._db.execute(
                "SELECT task_id, expires FROM revoked ORDER BY expires"):
            self._ids[task_id] = expires

    def add(self, task_ids: Iterable[str]) -> list[str]:
        expires = time.time() + self.expires
        added = []
        for task_id in task_ids:
            self._ids.pop(task_id, None)
            self._ids[task_id] = expires
            added.append(task_id)
        self._trim()
        if self._db is not None and added:
            self._db.executemany("INSERT OR REPLACE INTO revoked VALUES (?, ?)",
                                 [(i, expires) for i in added])
        if self.ledger is not None and added:
            try:
                self.ledger.put(REVOKED, dict.fromkeys(added, expires))
            except self.ledger.errors as exc:
                logger.warning("Cannot keep the revocation in %s (%s): workers started later "
                               "may run these tasks", self.ledger.where, exc)
        return added

    def _trim(self) -> None:
        while len(self._ids) > self.maxlen:
            self._ids.popitem(last=False)

    def __contains__(self, task_id: object) -> bool:
        if not isinstance(task_id, str):
            return False
        expires = self._ids.get(task_id)
        if expires is None:
            return False
        if expires <= time.time():
            del self._ids[task_id]
            return False
        return True

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        now = time.time()
        return [i for i, e in self._ids.items() if e > now]

    def close(self) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM revoked WHERE expires <= ?", (time.time(),))
            self._db.close()
            self._db = None


class Revocation(Observer):
    """The gate that refuses a task revoked or past its ``expires``: it is acked, stored as
    REVOKED and reported through the ``on_task_revoked`` hook, never run. A copy of a task
    this worker runs (delivered again) is acked alone: the running one's end is the result.
    The running task's own retry message waits for that end, then is refused as any other."""

    def __init__(self, app: App, revoked: Revoked, settlement: Settlement, hooks: Hooks,
                 running: Callable[[str], Job | None]) -> None:
        self.app = app
        self.revoked = revoked
        self.settlement = settlement
        self.hooks = hooks
        self.running = running
        """The job of that task id this worker runs now, if any."""

    def refuse_task(self, job: Job) -> bool:
        msg = job.message
        if msg.is_expired():
            self.discard(job, expired=True)
            return True
        if msg.id in self.revoked:
            self.discard(job)
            return True
        return False

    def discard(self, job: Job, expired: bool = False) -> None:
        """Settle ``job`` unrun: acked, stored as REVOKED (expired or revoked) and reported;
        a copy of a task that runs here is acked alone, and that task's retry message is held
        until the run ends."""
        msg = job.message
        why = "expired" if expired else "revoked"
        running = self.running(msg.id)
        if running is not None:
            if msg.retries > running.message.retries and running.held_retry is None:
                # Not a copy: the message the run's self.retry() sent. Refused now, its REVOKED
                # would be overwritten by the RETRY the run stores, and nothing would end it.
                logger.info("Task %s[%s] is %s: its retry waits for the running try's end",
                            msg.task, msg.id, why)
                running.held_retry = job
                return
            logger.warning("Discarding a copy of the %s task %s[%s], which runs here: its "
                           "result is the running one's", why, msg.task, msg.id)
            self.settlement.ack(job)
            self.settlement.forget(job)
            return
        logger.warning("Discarding %s task %s[%s]", why, msg.task, msg.id)
        store_state(self.app, msg, TaskRevokedError(why), states.REVOKED)
        self.settlement.ack(job)
        self.settlement.forget(job)
        self.hooks.on_task_revoked(job, expired=expired)
