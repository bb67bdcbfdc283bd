"""What the console shows, as plain immutable rows: views render these and never touch I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from qtui.core.alerts import RuleStatus, Transition
from qtui.core.pauses import Pause
from qtui.core.queue_rates import Rate
from qtui.core.queues import Age
from qtui.core.state import timeline_steps


@dataclass(frozen=True)
class WorkerRow:
    hostname: str
    alive: bool
    heartbeat_age: float | None
    pool: str = ""
    concurrency: int | None = None
    active: int = 0
    processed: int = 0
    loadavg: tuple[float, ...] = ()
    queues: tuple[str, ...] = ()
    software: str = ""


class TaskEvent(NamedTuple):
    """One step of a task's life, for its timeline."""

    type: str
    timestamp: float
    hostname: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task as the tables show it.

    ``timeline`` is the state's flat tuple of strings and numbers (:meth:`steps` names its
    steps), shared with it, not copied: Python's cyclic garbage collector stops tracking a
    plain tuple of strings and numbers, not a named tuple or any other object. With 100,000
    rows in the console every tracked object lengthens each full collection, and a full
    collection stops the UI thread along with everything else.
    """

    id: str
    name: str
    state: str
    worker: str = ""
    received: float | None = None
    started: float | None = None
    runtime: float | None = None
    args: str = ""
    kwargs: str = ""
    result: str = ""
    exception: str = ""
    traceback: str = ""
    retries: int = 0
    eta: str = ""
    queue: str = ""
    exchange: str = ""
    routing_key: str = ""
    """Where the task was sent ('' unless a task-sent event said): a retry goes there too."""
    root_id: str = ""
    parent_id: str = ""
    """The task's family: the first task of its workflow and the task that sent it."""
    timeline: tuple[Any, ...] = ()
    """Event type, timestamp, hostname and detail of each event, one after the other."""
    updated: float = 0.0

    def steps(self) -> list[TaskEvent]:
        """The timeline's steps, oldest first."""
        return [TaskEvent._make(step) for step in timeline_steps(self.timeline)]

    def filter_values(self) -> dict[str, str]:
        """The texts the filter language matches against."""
        return {"id": self.id, "name": self.name, "state": self.state, "worker": self.worker,
                "args": f"{self.args} {self.kwargs}",
                "result": f"{self.result} {self.exception}"}


@dataclass(frozen=True)
class QueueRow:
    name: str
    depth: int | None
    consumers: int | None = None
    rate: float | None = None
    workers: tuple[str, ...] = ()
    scheduled: int | None = None
    """ETA tasks held in the broker's delayed store (None: the broker has none)."""
    age: Age | None = None
    """How long the oldest waiting message has waited, exact or inferred (None: unknown)."""
    dead: int | None = None
    """Messages in the queue's dead-letter queue ``<queue>.dead`` (None: it has none)."""
    paused: Pause | None = None
    """The queue's cluster-wide pause (:mod:`qtui.core.pauses`), None when not paused."""
    inflow: Rate | None = None
    """Tasks sent to the queue per second, from task-sent events (None: unknown)."""
    outflow: Rate | None = None
    """Tasks taken from it per second, from task-received events (None: unknown); ``rate`` is
    the change of its depth between polls."""


@dataclass(frozen=True)
class ThroughputSeries:
    """Tasks per interval for each final state, oldest first, for the overview's sparklines."""

    interval: float
    series: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """Everything a refresh of the console needs, taken at one instant under the feed's lock.

    ``tasks`` holds only tasks changed since the previous snapshot (views keep their own
    table); ``removed`` the ids the state forgot (its LRU bound).
    """

    workers: tuple[WorkerRow, ...] = ()
    tasks: tuple[TaskRow, ...] = ()
    removed: tuple[str, ...] = ()
    queues: tuple[QueueRow, ...] = ()
    queue_notice: str = ""
    """What the latest queue poll could not read (the pauses), for the Queues view to say."""
    throughput: ThroughputSeries = field(default_factory=lambda: ThroughputSeries(1.0))
    task_count: int = 0
    events_seen: int = 0
    connected: bool = False
    error: str = ""
    bad_events: int = 0
    """Events refused as malformed, and why the latest was."""
    last_bad_event: str = ""
    feed_failures: int = 0
    """Times the event loop failed and was started again, and why it last failed."""
    last_feed_failure: str = ""
    alerts: tuple[RuleStatus, ...] = ()
    """Every alert rule's status, in the order of the rules."""
    alert_events: tuple[Transition, ...] = ()
    """Rules that started or stopped firing since the previous snapshot."""
