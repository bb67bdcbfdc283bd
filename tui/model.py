"""The console's own copy of the cluster, built from feed snapshots on the UI thread.

It holds plain rows only (no I/O, no locks): the feed's threads produce snapshots, the console
applies them here, and views read from here when they refresh.
"""

from __future__ import annotations

from collections import deque

from qtui.core.alerts import RuleStatus

from .family import Family
from .rows import QueueRow, Snapshot, TaskRow, ThroughputSeries, WorkerRow

#: Changed task ids the model keeps, from the newest snapshots back (6 s at 10,000 events/s):
#: a view that drew within them takes in only those tasks (:meth:`ConsoleModel.changed_since`);
#: one that did not starts afresh, which costs about the same by then.
CHANGES_KEPT = 20_000


class ConsoleModel:
    def __init__(self, max_tasks: int = 100_000) -> None:
        self.max_tasks = max_tasks
        self.workers: dict[str, WorkerRow] = {}
        self.tasks: dict[str, TaskRow] = {}
        """By id, the least recently changed first. A plain dict, whose order is insertion
        order: an OrderedDict's links cost 5 MB more at 100,000 tasks."""
        self.queues: dict[str, QueueRow] = {}
        self.queue_notice = ""
        """What the latest queue poll could not read (the pauses): the Queues view says it."""
        self.throughput = ThroughputSeries(1.0)
        self.events_seen = 0
        self.connected = False
        self.error = ""
        self.bad_events = 0
        self.last_bad_event = ""
        self.feed_failures = 0
        self.last_feed_failure = ""
        self.family = Family()
        """Parents, roots and children of the tasks held, for the task detail's family tree."""
        self.version = 0
        """Bumped by every applied snapshot, so a view knows whether it is stale."""
        self.alerts: tuple[RuleStatus, ...] = ()
        """Every alert rule's status, as the feed last evaluated them."""
        self._changes: deque[tuple[int, list[str]]] = deque()
        """(version, ids of the tasks that version added, changed or forgot), oldest first."""
        self._changes_kept = 0

    def apply(self, snapshot: Snapshot) -> None:
        self.workers = {w.hostname: w for w in snapshot.workers}
        changed = list(snapshot.removed)
        for task_id in snapshot.removed:
            if (gone := self.tasks.pop(task_id, None)) is not None:
                self.family.remove(gone)
        for task in snapshot.tasks:
            # Taken out and put back: the task goes to the young end.
            self.family.add(task, self.tasks.pop(task.id, None))
            self.tasks[task.id] = task
            changed.append(task.id)
        # The state forgets first (snapshot.removed); this bound holds a smaller model only.
        while len(self.tasks) > self.max_tasks:
            oldest = next(iter(self.tasks))
            self.family.remove(self.tasks.pop(oldest))
            changed.append(oldest)
        if snapshot.queues or not self.queues:
            self.queues = {q.name: q for q in snapshot.queues}
        self.queue_notice = snapshot.queue_notice
        self.throughput = snapshot.throughput
        self.events_seen = snapshot.events_seen
        self.connected = snapshot.connected
        self.error = snapshot.error
        self.bad_events, self.last_bad_event = snapshot.bad_events, snapshot.last_bad_event
        self.feed_failures = snapshot.feed_failures
        self.last_feed_failure = snapshot.last_feed_failure
        if snapshot.alerts:
            self.alerts = snapshot.alerts
        self.version += 1
        self._changes.append((self.version, changed))
        self._changes_kept += len(changed)
        while self._changes_kept > CHANGES_KEPT and len(self._changes) > 1:
            self._changes_kept -= len(self._changes.popleft()[1])

    def changed_since(self, version: int) -> list[str] | None:
        """Ids of the tasks added, changed or forgotten after ``version``, in that order (an id
        may come more than once); None when the model no longer knows (too long ago)."""
        if version == self.version:
            return []
        if not self._changes or self._changes[0][0] > version + 1 or version > self.version:
            return None
        return [task_id for at, ids in self._changes if at > version for task_id in ids]

    def recent_failures(self, limit: int = 10) -> list[TaskRow]:
        failures = []
        for task in reversed(self.tasks.values()):
            if task.state == "FAILURE":
                failures.append(task)
                if len(failures) >= limit:
                    break
        return failures

    def alive_workers(self) -> list[str]:
        """Hostnames of the workers online now: the only ones an action can expect to answer."""
        return sorted(w.hostname for w in self.workers.values() if w.alive)

    def workers_consuming(self, queue: str) -> list[str]:
        return sorted(w.hostname for w in self.workers.values() if queue in w.queues)
