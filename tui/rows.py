"""What the console shows, as plain immutable rows: views render these and never touch I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from qtui.core.alerts import RuleStatus, Transition
from qtui.core.pauses import Pause
from qtui.core.queue_rates import Rate
from qtui.core.queues import Age
from qtui.core.state import TaskState, timeline_steps


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
    pid: int | None = None
    """The process its events came from: a restart under the same hostname changes it."""


class TaskEvent(NamedTuple):
    """One step of a task's life, for its timeline."""

    type: str
    timestamp: float
    hostname: str = ""
    detail: str = ""


class TaskRow:
    """One task as the tables show it: a read-only view of the feed state's record of it.

    Not a copy: the State never changes a record once a snapshot has handed it out (an event
    about the task replaces it with a changed copy: :meth:`~qtui.core.state.State.take_changes`),
    so the UI thread reads it without a lock. At 100,000 tasks a copy of each cost the console
    20 MB; this view costs 48 bytes a task. What a task lacks reads as ``""`` (texts), ``0``
    (retries) or None (times).
    """

    __slots__ = ("task",)

    def __init__(self, task: TaskState) -> None:
        self.task = task

    def __repr__(self) -> str:
        return f"TaskRow({self.task!r})"

    @property
    def id(self) -> str:
        return self.task.uuid

    @property
    def name(self) -> str:
        return self.task.name or ""

    @property
    def state(self) -> str:
        return self.task.state

    @property
    def worker(self) -> str:
        return self.task.worker or ""

    @property
    def received(self) -> float | None:
        """When a worker received the task, else when it was sent."""
        return self.task.received or self.task.sent

    @property
    def started(self) -> float | None:
        return self.task.started

    @property
    def runtime(self) -> float | None:
        return self.task.runtime

    @property
    def args(self) -> str:
        return _text(self.task.args)

    @property
    def kwargs(self) -> str:
        return _text(self.task.kwargs)

    @property
    def reprs(self) -> tuple[str | None, str | None]:
        """The argsrepr and kwargsrepr the events carried, each None when none did (the
        console missed ``task-received``), where :attr:`args` shows ''."""
        args, kwargs = self.task.args, self.task.kwargs
        return (None if args is None else self.args, None if kwargs is None else self.kwargs)

    @property
    def result(self) -> str:
        return _text(self.task.result)

    @property
    def exception(self) -> str:
        return _text(self.task.exception)

    @property
    def traceback(self) -> str:
        return self.task.traceback or ""

    @property
    def retries(self) -> int:
        return self.task.retries or 0

    @property
    def eta(self) -> str:
        return self.task.eta or ""

    @property
    def queue(self) -> str:
        return self.task.queue or ""

    @property
    def exchange(self) -> str:
        return self.task.exchange or ""

    @property
    def routing_key(self) -> str:
        """Where the task was sent ('' unless a task-sent event said): a retry goes there too."""
        return self.task.routing_key or ""

    @property
    def root_id(self) -> str:
        """The first task of the task's workflow."""
        return self.task.root_id or ""

    @property
    def parent_id(self) -> str:
        """The task that sent this one."""
        return self.task.parent_id or ""

    @property
    def timeline(self) -> tuple[Any, ...]:
        """Event type, timestamp, hostname and detail of each event, one after the other."""
        return self.task.timeline

    @property
    def updated(self) -> float:
        """Local time of the last event about the task."""
        return self.task.updated

    def steps(self) -> list[TaskEvent]:
        """The timeline's steps, oldest first."""
        return [TaskEvent._make(step) for step in timeline_steps(self.task.timeline)]

    def filter_values(self) -> dict[str, str]:
        """The texts the filter language matches against."""
        task = self.task  # read directly: a filter reads every task held, each redraw
        return {"id": task.uuid, "name": task.name or "", "state": task.state,
                "worker": task.worker or "", "args": f"{_text(task.args)} {_text(task.kwargs)}",
                "result": f"{_text(task.result)} {_text(task.exception)}"}


def _text(value: Any) -> str:
    """A field as text: '' when unknown, the repr of anything not a string."""
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value)


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
