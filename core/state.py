"""The cluster as seen through its events: workers, tasks and throughput. Pure Python, no I/O.

Feed it the decoded events of an :class:`~qtui.core.events.EventReceiver` (Celery's event
dicts) with :meth:`State.event` or :meth:`State.ingest`. Events arrive late, batched and out of
order; the merge rules below keep each task's state right anyway. Memory is bounded: at most
``max_tasks`` tasks are kept, finished ones forgotten first. Not thread-safe: one thread
ingests, and readers take what they need under the caller's own lock.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from itertools import islice
from operator import attrgetter, itemgetter
from sys import intern
from typing import Any

from . import states
from .display import clip
from .eventcheck import MAX_FIELD, BadEvent, check
from .metrics import Recorder
from .placement import Held
from .queue_rates import QueueRates

#: Seconds between a worker's heartbeats when its events do not say (Celery's default).
HEARTBEAT_FREQ = 2.0
#: A worker is offline once this many heartbeat periods pass without one.
HEARTBEAT_EXPIRE_FACTOR = 2.0
#: Seconds two hosts' clocks may disagree: events of different hosts further apart than this
#: are ordered by timestamp, closer ones by where their state sits in a task's life.
MAX_CLOCK_SKEW = 1.0
#: Events kept in one task's timeline (a task that retries forever stays bounded).
TIMELINE_MAX = 32
#: Items a timeline step takes in a task's flat timeline: event type, timestamp, hostname,
#: detail. One flat tuple a task instead of a tuple of 4-tuples: 13 MB less at 100,000 tasks.
TIMELINE_STEP = 4
#: Characters of a timeline entry's detail (the exception of a task-failed or task-retried).
TIMELINE_DETAIL_MAX = 200
#: Past ``max_tasks``, a State forgets this fraction of them at once (1/100: 1,000 of 100,000).
EVICT_FRACTION = 100
#: Workers kept (Flower's max_workers_in_memory): a flood of made-up hostnames stays bounded.
MAX_WORKERS = 1_000

TASK_EVENT_STATES = {
    "task-sent": states.PENDING,
    "task-received": states.RECEIVED,
    "task-started": states.STARTED,
    "task-retried": states.RETRY,
    "task-succeeded": states.SUCCESS,
    "task-failed": states.FAILURE,
    "task-revoked": states.REVOKED,
    "task-rejected": states.REJECTED,
}

#: Where each state sits in a task's life; RETRY starts the cycle again.
_RANK = {states.PENDING: 0, states.RECEIVED: 1, states.STARTED: 2, states.RETRY: 3,
         states.SUCCESS: 4, states.FAILURE: 4, states.REVOKED: 4, states.REJECTED: 4}

#: The task's own timestamp attribute set by each event type.
_STAMP = {"task-sent": "sent", "task-received": "received", "task-started": "started",
          "task-retried": "retried", "task-succeeded": "succeeded", "task-failed": "failed",
          "task-revoked": "revoked", "task-rejected": "rejected"}

#: Fields any event may set, when it is the newest word on the task.
_TASK_FIELDS = frozenset({"name", "args", "kwargs", "retries", "eta", "expires", "root_id",
                          "parent_id", "queue", "exchange", "routing_key", "result",
                          "exception", "traceback", "runtime"})
#: Fields an older event may still fill in: what describes the task, not what happened to it.
_IDENTITY_FIELDS = frozenset({"name", "args", "kwargs", "retries", "eta", "expires", "root_id",
                              "parent_id", "queue", "exchange", "routing_key"})

#: Fields shared between tasks where equal (see :meth:`State._compact`): names, always; free texts
#: up to SHORT_TEXT characters; ids equal to the task's own.
_NAMES = frozenset({"name", "queue", "exchange", "routing_key"})
_SHORT_TEXTS = frozenset({"args", "kwargs", "result"})
SHORT_TEXT = 16
#: Short texts a State shares at most: past it the table starts afresh, so texts that never
#: repeat (each task's own small result) cannot grow it as they grow ``sys.intern``'s table.
SHARED_TEXTS_MAX = 4096
_IDS = frozenset({"root_id", "parent_id"})

_Measure = tuple[str, float, str | None, float | None, float | None]
"""A task event held for the metrics: type, timestamp, the task's name then, runtime, wait."""
_measured_name: Callable[[_Measure], str | None] = itemgetter(2)

_WORKER_FIELDS = ("pid", "freq", "active", "processed", "loadavg", "sw_ident", "sw_ver",
                  "sw_sys")


@dataclass(slots=True)
class WorkerState:
    """One worker, known from its heartbeats and task events."""

    hostname: str
    pid: int | None = None
    freq: float = HEARTBEAT_FREQ
    last_heartbeat: float | None = None
    """Local time the last sign of life arrived (receiver's clock, so host clock skew is moot)."""
    offline: bool = False
    """The worker said goodbye (worker-offline); set again to False when it comes back."""
    clock: int = 0
    active: int | None = None
    processed: int | None = None
    loadavg: list[float] | None = None
    sw_ident: str | None = None
    sw_ver: str | None = None
    sw_sys: str | None = None

    @property
    def heartbeat_expires(self) -> float | None:
        if self.last_heartbeat is None:
            return None
        return self.last_heartbeat + self.freq * HEARTBEAT_EXPIRE_FACTOR

    def alive(self, now: float | None = None) -> bool:
        """Alive while ``now < last heartbeat + 2 x freq`` and it has not gone offline."""
        expires = self.heartbeat_expires
        return (not self.offline and expires is not None
                and (time.time() if now is None else now) < expires)


@dataclass(slots=True)
class TaskState:
    """One task, merged from all the events seen about it."""

    uuid: str
    state: str = states.PENDING
    name: str | None = None
    worker: str | None = None
    client: str | None = None
    args: str | None = None
    kwargs: str | None = None
    retries: int | None = None
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    result: Any = None
    exception: str | None = None
    traceback: str | None = None
    runtime: float | None = None
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    retried: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    revoked: float | None = None
    rejected: float | None = None
    timestamp: float | None = None
    """When the event that set ``state`` happened (sender's clock)."""
    clock: int = 0
    """Lamport clock of the event that set ``state``."""
    origin: str | None = None
    """Hostname that sent the event that set ``state``."""
    updated: float = 0.0
    """Local time of the last event about this task."""
    timeline: tuple[Any, ...] = ()
    """Event type, timestamp, hostname and detail of each event, in arrival order, one flat
    tuple (see :func:`timeline_steps`); the detail says what that event alone said (a
    failure's or a retry's exception, why it was revoked)."""

    @property
    def id(self) -> str:
        return self.uuid

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    @property
    def placed(self) -> bool:
        """Whether its queue is known, or no event will say it (its task-sent did not)."""
        return self.queue is not None or self.sent is not None

    def copy(self) -> TaskState:
        """Another record with the same fields (what the State changes once this one is out)."""
        return TaskState(*_task_fields(self))


_task_fields = attrgetter(*(f.name for f in fields(TaskState)))


@dataclass(frozen=True)
class Changes:
    """What changed since the last :meth:`State.take_changes`: tasks updated and ids forgotten.
    The State never changes these records again, so another thread may read them freely."""

    tasks: list[TaskState]
    removed: list[str]


class Throughput:
    """Events counted per key (a task state) in fixed time buckets: a ring of ``slots`` buckets
    of ``interval`` seconds, so memory is constant however long the console runs."""

    def __init__(self, interval: float = 1.0, slots: int = 300) -> None:
        self.interval = interval
        self.slots = slots
        self._counts: dict[str, list[int]] = {}
        self._bucket = 0
        """The newest bucket number seen (time // interval)."""

    def add(self, key: str, when: float, n: int = 1) -> None:
        bucket = int(when // self.interval)
        if bucket > self._bucket:
            self._advance(bucket)
        elif bucket <= self._bucket - self.slots:
            return  # older than the window
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0] * self.slots
        counts[bucket % self.slots] += n

    def _advance(self, bucket: int) -> None:
        stale = range(self._bucket + 1, bucket + 1) if bucket - self._bucket < self.slots \
            else range(self.slots)
        for counts in self._counts.values():
            for b in stale:
                counts[b % self.slots] = 0
        self._bucket = bucket

    def keys(self) -> list[str]:
        return sorted(self._counts)

    def series(self, key: str, now: float | None = None) -> list[int]:
        """Counts per bucket for the last ``slots`` buckets up to ``now``, oldest first."""
        end = int((time.time() if now is None else now) // self.interval)
        if end > self._bucket:
            self._advance(end)
        counts = self._counts.get(key)
        if counts is None:
            return [0] * self.slots
        oldest = self._bucket - self.slots
        return [counts[b % self.slots] if b > oldest else 0
                for b in range(end - self.slots + 1, end + 1)]

    def rate(self, key: str, window: float = 10.0, now: float | None = None) -> float:
        """Events per second over the last ``window`` seconds (whole buckets)."""
        buckets = max(1, min(self.slots, round(window / self.interval)))
        return sum(self.series(key, now)[-buckets:]) / (buckets * self.interval)


class State:
    """Workers and tasks of a cluster, kept up to date from its events.

    Task merge rules: an event is *newer* than the one that set the task's state if it comes
    from the same host with a higher Lamport clock. Across hosts (or without clocks): a
    client's task-sent is older than anything a worker says (unless after a retry); events
    more than :data:`MAX_CLOCK_SKEW` apart, or involving a retry (which starts the life over),
    are ordered by timestamp; closer ones by where their state sits in a task's life (PENDING
    < RECEIVED < STARTED < final), so host clocks that disagree a little cannot undo a
    success. A newer event sets the state and every field it carries; an older one only fills
    in what describes the task (name, arguments, routing) where still unknown. Each event type
    also stamps its own time (``received``, ``started``, ...) and joins the task's timeline.
    """

    def __init__(self, max_tasks: int = 100_000, throughput_interval: float = 1.0,
                 throughput_slots: int = 300, track_changes: bool = False,
                 max_workers: int = MAX_WORKERS, max_field: int = MAX_FIELD,
                 metrics: Recorder | None = None,
                 queue_rates: QueueRates | None = None) -> None:
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be at least 1, got {max_tasks}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_tasks = max_tasks
        self.max_workers = max_workers
        self.max_field = max_field
        """Characters kept of each free-text field of a task (args, result, traceback...)."""
        self.workers: OrderedDict[str, WorkerState] = OrderedDict()
        """Least recently heard from first; past ``max_workers`` the oldest is forgotten."""
        self.throughput = Throughput(throughput_interval, throughput_slots)
        self.event_count = 0
        self.bad_events = 0
        """Events refused by :func:`~qtui.core.eventcheck.check` (counted in event_count too)."""
        self.last_bad_event = ""
        """Why the latest of them was refused."""
        self.track_changes = track_changes
        self.metrics = metrics
        """Where task events are counted per minute, task name and queue (None: nowhere)."""
        self.queue_rates = queue_rates
        """Where task-sent and task-received are counted per queue (None: nowhere)."""
        self._unplaced: Held[_Measure] = Held()
        """Metrics of tasks whose queue no event has said yet."""
        # Two LRU orders, so running tasks outlive finished ones when memory runs out. Plain
        # dicts (insertion order; a task that changes is taken out and put back): an
        # OrderedDict's links cost 5 MB more at 100,000 tasks. See _evict for the catch.
        self._unready: dict[str, TaskState] = {}
        self._ready: dict[str, TaskState] = {}
        self._changed: dict[str, TaskState] = {}
        self._removed: set[str] = set()
        self.track_finished = False
        """Collect the tasks that reach SUCCESS or FAILURE for :meth:`take_finished`."""
        self._finished: list[TaskState] = []
        self._texts: dict[str, str] = {}
        """Short texts shared between tasks (see :meth:`_compact`)."""

    # ingesting -----------------------------------------------------------------------------
    def ingest(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Apply a batch of events; returns how many."""
        n = 0
        for event in events:
            self.event(event)
            n += 1
        return n

    def event(self, event: Mapping[str, Any]) -> None:
        """Apply one event (an event dict as Celery sends it, as the receiver yields it); one
        with wrong-typed or impossible fields is counted in :attr:`bad_events` and skipped."""
        self.event_count += 1
        try:
            event = check(event, self.max_field)
        except BadEvent as exc:
            self.bad_events += 1
            self.last_bad_event = str(exc)
            return
        kind = event["type"]
        if kind.startswith("task-"):
            self._task_event(kind, event)
        elif kind.startswith("worker-"):
            self._worker_event(kind, event)

    def _worker_event(self, kind: str, event: Mapping[str, Any]) -> None:
        hostname = event.get("hostname")
        if not hostname:
            return
        worker = self._worker(hostname)
        clock = event.get("clock") or 0
        if kind == "worker-offline":
            worker.offline = True
            worker.clock = max(worker.clock, clock)
            return
        same_process = event.get("pid") in (None, worker.pid)
        if kind == "worker-online" or not same_process:
            worker.clock = 0  # a new process (a restart): a Lamport clock of its own
        elif worker.offline and clock and clock < worker.clock:
            return  # a heartbeat from before it went offline, arriving late
        for name in _WORKER_FIELDS:
            value = event.get(name)
            if value is not None:
                setattr(worker, name, value)
        worker.offline = False
        worker.clock = max(worker.clock, clock)
        worker.last_heartbeat = _local_time(event)

    def _task_event(self, kind: str, event: Mapping[str, Any]) -> None:
        uuid = event.get("uuid")
        if not uuid:
            return
        # Interned: a hostname or type is repeated by every task and every timeline entry.
        kind, hostname = intern(kind), intern(event.get("hostname") or "")
        local = _local_time(event)
        timestamp = event.get("timestamp") or local
        clock = event.get("clock") or 0
        new_state = TASK_EVENT_STATES.get(kind)

        task = self._unready.get(uuid)
        if task is None:
            task = self._ready.get(uuid)
        created = task is None
        if task is None:
            task = TaskState(uuid)
        elif self.track_changes and uuid not in self._changed:
            # Handed out by take_changes: a reader on another thread may hold it.
            task = task.copy()
        was_ready = task.ready
        old_name = task.name

        newer = new_state is not None and _is_newer(task, new_state, hostname, clock, timestamp)
        if kind == "task-sent":
            task.client = hostname
        elif hostname:
            if newer or task.worker is None:
                task.worker = hostname
            worker = self._worker(hostname)
            if not worker.offline:
                worker.last_heartbeat = local  # a busy worker is a live one

        if newer and new_state is not None:
            task.state = new_state
            task.timestamp, task.clock, task.origin = timestamp, clock, hostname
            # Over the event's own fields (about a dozen), not over every field a task has.
            for name, value in event.items():
                if value is not None and name in _TASK_FIELDS:
                    setattr(task, name, self._compact(name, value, uuid))
        else:
            for name, value in event.items():
                if value is not None and name in _IDENTITY_FIELDS \
                        and getattr(task, name) is None:
                    setattr(task, name, self._compact(name, value, uuid))
        stamp = _STAMP.get(kind)
        if stamp is not None:
            setattr(task, stamp, timestamp)
        task.updated = local
        # A plain tuple, rebuilt on each event (timelines are short): the garbage collector
        # stops tracking it, where a list stays tracked; with 100,000 tasks that shortens
        # every full collection, which pauses every thread of a console.
        task.timeline = (*task.timeline[TIMELINE_STEP * (1 - TIMELINE_MAX):],
                         kind, timestamp, hostname, _detail(kind, event))

        self._store(task, created, was_ready)
        if task.name is not None and task.name != old_name:
            task.name = intern(task.name)
        if new_state is not None:
            self.throughput.add(new_state, local)
        if self.metrics is not None:
            self._measure(kind, task, timestamp, event, local)
        if self.queue_rates is not None and kind in ("task-sent", "task-received"):
            self._count_flow(kind, task, hostname, local, event.get("queue") or None)
        if self.track_changes:
            self._changed[uuid] = task
            if created:
                self._removed.discard(uuid)
        if self.track_finished and task.ready and not was_ready \
                and task.state in (states.SUCCESS, states.FAILURE):
            self._finished.append(task)
        if created and len(self._ready) + len(self._unready) > self.max_tasks:
            self._evict()

    def _measure(self, kind: str, task: TaskState, timestamp: float,
                 event: Mapping[str, Any], local: float) -> None:
        """Count the event in the metrics, under the task's name and queue as merged so far
        (task-started does not name them), with the runtime or wait it ends; held while no
        event has said the task's queue (see :mod:`.placement`)."""
        assert self.metrics is not None
        runtime = wait = None
        if kind == "task-started":
            # Sent, else received: a retry's new delivery waits from its own receipt.
            sent = task.sent if task.retried is None or (task.sent or 0) > task.retried else None
            begun = sent if sent is not None else task.received
            if begun is not None:
                wait = timestamp - begun
        elif kind == "task-succeeded":
            runtime = event.get("runtime")
        elif kind == "task-failed":
            runtime = event.get("runtime")
            if runtime is None and task.started is not None:
                runtime = timestamp - task.started
        for count in self._unplaced.counts(task.uuid, task.placed,
                                           (kind, timestamp, task.name, runtime, wait), local):
            self._record(count, task.name, task.queue)

    def _record(self, count: _Measure, name: str | None, queue: str | None) -> None:
        assert self.metrics is not None
        kind, timestamp, _, runtime, wait = count
        self.metrics.record(kind, timestamp, name or "", queue or "", runtime, wait)

    def measure_unplaced(self, now: float) -> None:
        """Count in the metrics the held events of tasks whose wait for their queue is over at
        ``now`` (local time), under what is known of them by then."""
        for count, name, queue in self._unplaced.due_placed(now, self.task, _measured_name):
            self._record(count, name, queue)

    def _count_flow(self, kind: str, task: TaskState, hostname: str, local: float,
                    queue: str | None) -> None:
        """Count a task into or out of its queue: the queue the event names, else (a Celery
        worker's task-received) the one its task-sent named, merged into ``task.queue``."""
        assert self.queue_rates is not None
        if kind == "task-sent":
            if queue is not None:
                self.queue_rates.sent(queue, local)
            return
        placed = queue if queue is not None else task.queue if task.sent is not None else None
        self.queue_rates.received(hostname, local, placed, exact=queue is not None)

    def _worker(self, hostname: str) -> WorkerState:
        """The worker of that name, made the most recently heard from (created if new, the
        least recent forgotten past ``max_workers``)."""
        worker = self.workers.get(hostname)
        if worker is None:
            worker = self.workers[hostname] = WorkerState(hostname)
            if len(self.workers) > self.max_workers:
                self.workers.popitem(last=False)
        else:
            self.workers.move_to_end(hostname)
        return worker

    def restore(self, tasks: Iterable[TaskState]) -> int:
        """Take back tasks kept from an earlier session (oldest first), without counting them as
        events or throughput; tasks already known are left as they are. Returns how many."""
        n = 0
        for task in tasks:
            if self.task(task.uuid) is not None:
                continue
            self._store(task, True, task.ready)
            if self.track_changes:
                self._changed[task.uuid] = task
            n += 1
            if len(self._ready) + len(self._unready) > self.max_tasks:
                self._evict()
        return n

    def _store(self, task: TaskState, created: bool, was_ready: bool) -> None:
        """Put the task at the young end of its LRU order (ready or unready), in place of the
        record it had (the same, or the copy that replaces a handed-out one)."""
        uuid, ready = task.uuid, task.ready
        if created:
            (self._ready if ready else self._unready)[uuid] = task
        elif ready == was_ready:
            tasks = self._ready if ready else self._unready
            del tasks[uuid]
            tasks[uuid] = task
        else:
            del (self._ready if was_ready else self._unready)[uuid]
            (self._ready if ready else self._unready)[uuid] = task

    def _evict(self) -> None:
        """Forget the least recently updated finished tasks, else the least recent of all, down
        to ``max_tasks`` less a hundredth (EVICT_FRACTION). A plain dict keeps a hole where a
        task left until it grows again, and finding its oldest task walks over the holes: once
        a batch, not once a task."""
        keep = self.max_tasks - self.max_tasks // EVICT_FRACTION
        for tasks in (self._ready, self._unready):
            excess = len(self) - keep
            if excess <= 0:
                break
            for uuid in list(islice(tasks, excess)):
                del tasks[uuid]
                if self.track_changes:
                    self._changed.pop(uuid, None)
                    self._removed.add(uuid)

    def _compact(self, name: str, value: Any, uuid: str) -> Any:
        """One string object for values many tasks repeat (routing names, ``{}`` kwargs, a
        ``None`` result) and for a root id that is the task's own id: with 100,000 tasks each
        copy costs megabytes."""
        if type(value) is not str:
            return value
        if name in _IDS:
            return uuid if value == uuid else value
        if name in _NAMES:
            return intern(value)
        if name in _SHORT_TEXTS and len(value) <= SHORT_TEXT:
            shared = self._texts.get(value)
            if shared is None:
                if len(self._texts) >= SHARED_TEXTS_MAX:
                    self._texts.clear()
                shared = self._texts[value] = value
            return shared
        return value

    # reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ready) + len(self._unready)

    def task(self, uuid: str) -> TaskState | None:
        return self._unready.get(uuid) or self._ready.get(uuid)

    def tasks(self) -> Iterator[TaskState]:
        """Every task kept: finished ones, then unfinished ones, least recently updated first."""
        yield from self._ready.values()
        yield from self._unready.values()

    # Found by a scan, not kept in indexes: the console asks seldom (a few milliseconds at
    # 100,000 tasks), and two indexes cost 6 MB and a dict update per event.
    def task_types(self) -> dict[str, int]:
        """Task names seen, with how many tasks of each are kept."""
        return dict(Counter(task.name for task in self.tasks() if task.name is not None))

    def tasks_by_type(self, name: str) -> list[TaskState]:
        return [task for task in self.tasks() if task.name == name]

    def tasks_by_worker(self, hostname: str) -> list[TaskState]:
        return [task for task in self.tasks() if task.worker == hostname]

    def sent_at(self, uuid: str) -> float | None:
        """When a task kept here was sent (its ``task-sent`` event), if known."""
        task = self.task(uuid)
        return None if task is None else task.sent

    def take_finished(self) -> list[TaskState]:
        """Tasks that succeeded or failed since the last call, each once (needs
        ``track_finished``)."""
        finished, self._finished = self._finished, []
        return finished

    def alive_workers(self, now: float | None = None) -> list[WorkerState]:
        now = time.time() if now is None else now
        return [w for w in self.workers.values() if w.alive(now)]

    def remove_worker(self, hostname: str) -> bool:
        """Forget a worker (one gone for good); its tasks stay. Returns whether it was known."""
        return self.workers.pop(hostname, None) is not None

    def take_changes(self) -> Changes:
        """Tasks changed and ids forgotten since the last call (needs ``track_changes``).

        The records returned are out for good: an event about one of them later changes a
        copy that takes its place, so a reader needs no lock and the console's model holds
        the same records as the State instead of copies of its own."""
        changes = Changes(list(self._changed.values()), sorted(self._removed))
        self._changed = {}
        self._removed = set()
        return changes


def timeline_steps(timeline: tuple[Any, ...]) -> list[tuple[str, float, str, str]]:
    """The steps of a flat timeline (:attr:`TaskState.timeline`), each (event type, timestamp,
    hostname, detail)."""
    steps = iter(timeline)
    return list(zip(steps, steps, steps, steps, strict=True))


def _detail(kind: str, event: Mapping[str, Any]) -> str:
    """What one event says that the task's fields keep only for the latest: each retry's
    exception, the failure's, and how a revocation or rejection happened."""
    if kind in ("task-failed", "task-retried"):
        exception = event.get("exception")
        return "" if exception is None else clip(str(exception), TIMELINE_DETAIL_MAX)
    if kind == "task-revoked":
        how = [word for word in ("terminated", "expired") if event.get(word)]
        signum = event.get("signum")
        if isinstance(signum, int) and not isinstance(signum, bool) and signum:
            how.append(f"signal {signum}")
        return ", ".join(how)
    if kind == "task-rejected" and event.get("requeue"):
        return "requeued"
    return ""


def _local_time(event: Mapping[str, Any]) -> float:
    return event.get("local_received") or event.get("timestamp") or time.time()


def _is_newer(task: TaskState, state: str, hostname: str, clock: int, timestamp: float) -> bool:
    """Whether an event in ``state`` happened after the event that set the task's state."""
    if task.timestamp is None:
        return True
    if hostname and hostname == task.origin and clock and task.clock:
        return clock > task.clock
    if state == states.PENDING and task.state not in (states.PENDING, states.RETRY):
        return False  # a task is sent before any worker hears of it
    if state == states.RETRY or task.state == states.RETRY \
            or abs(timestamp - task.timestamp) > MAX_CLOCK_SKEW:
        return timestamp >= task.timestamp
    rank, current = _RANK[state], _RANK[task.state]
    if rank != current:
        return rank > current
    return timestamp >= task.timestamp
