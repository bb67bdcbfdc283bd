"""The console's own copy of the cluster, built from feed snapshots on the UI thread.

It holds plain rows only (no I/O, no locks): the feed's threads produce snapshots, the console
applies them here, and views read from here when they refresh.
"""

from __future__ import annotations

from qtui.core.alerts import RuleStatus

from .family import Family
from .rows import QueueRow, Snapshot, TaskRow, ThroughputSeries, WorkerRow


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

    def apply(self, snapshot: Snapshot) -> None:
        self.workers = {w.hostname: w for w in snapshot.workers}
        for task_id in snapshot.removed:
            if (gone := self.tasks.pop(task_id, None)) is not None:
                self.family.remove(gone)
        for task in snapshot.tasks:
            # Taken out and put back: the task goes to the young end.
            self.family.add(task, self.tasks.pop(task.id, None))
            self.tasks[task.id] = task
        # The state forgets first (snapshot.removed); this bound holds a smaller model only.
        while len(self.tasks) > self.max_tasks:
            self.family.remove(self.tasks.pop(next(iter(self.tasks))))
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
