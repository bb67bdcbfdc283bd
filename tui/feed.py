"""The console's data layer: everything it knows about a cluster arrives through a Feed.

Two threads (run by the console as Textual thread workers, or by anything else) keep it
current without ever touching the UI:

* ``run`` receives the event stream, merges it into a :class:`~qtui.core.state.State` and,
  every ``interval`` seconds, hands a :class:`~qtui.tui.rows.Snapshot` of what changed to
  ``emit`` (the console posts it to the UI thread as a message);
* ``poll`` asks the broker for queue depths and the workers for their pool and queues
  (``stats`` and ``active_queues``), each with a short timeout, so a slow or dead worker costs
  one timeout per poll and never holds anything else up.

Blocking calls made for the UI on demand (inspect a worker, look up a task's full arguments
through :mod:`~qtui.tui.arguments`) are methods here too; the console runs them in thread
workers.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qtui.core import App
from qtui.core.alerts import (
    Alerts,
    Finished,
    FinishedCounts,
    Observation,
    QueueLevel,
    Transition,
    parse_rules,
)
from qtui.core.events import EventReceiver
from qtui.core.metrics import Recorder
from qtui.core.pauses import reapply
from qtui.core.queue_rates import QueueRates
from qtui.core.queues import LISTING_REUSE, QueueHead, inspector_for, oldest_age, oldest_wait
from qtui.core.state import State, WorkerState
from qtui.core.states import FAILURE

from . import arguments
from .alert_command import AlertCommand
from .arguments import Arguments
from .history import History
from .rows import QueueRow, Snapshot, TaskRow, ThroughputSeries, WorkerRow

logger = logging.getLogger("qtui.console")

#: Seconds between queue-depth and worker-details polls.
POLL_INTERVAL = 2.0
#: Seconds a worker has to answer the console's own inspect calls.
INSPECT_TIMEOUT = 1.0
#: Throughput buckets shown (one per second).
THROUGHPUT_SLOTS = 120
#: Seconds before a failed event loop starts again; doubled after each failure that comes
#: before a batch went through, up to the maximum.
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
#: Seconds between evaluations of the alert rules (at most: they run on the event thread).
ALERT_INTERVAL = 1.0
#: Characters that make a queue selector a glob: a plain name is also asked for by name, so a
#: queue the broker cannot list (RabbitMQ without the management API) is still measured.
GLOB_CHARACTERS = frozenset("*?[")


def worker_row(worker: WorkerState, details: Mapping[str, Any], now: float) -> WorkerRow:
    """A worker as the console shows it: heartbeat fields plus what ``stats`` and
    ``active_queues`` said (pool and queues are not in heartbeats). Replies come from anyone on
    the broker: parts of the wrong shape are left out."""
    stats = _mapping(details.get("stats"))
    pool = _mapping(stats.get("pool"))
    concurrency = pool.get("max-concurrency")
    implementation = pool.get("implementation")
    return WorkerRow(
        hostname=worker.hostname,
        alive=worker.alive(now),
        heartbeat_age=None if worker.last_heartbeat is None else now - worker.last_heartbeat,
        # "qtui.workers.pools.prefork:PreforkPool", "celery.concurrency.prefork:TaskPool"
        pool=implementation.partition(":")[0].rpartition(".")[2]
        if isinstance(implementation, str) else "",
        concurrency=concurrency
        if isinstance(concurrency, int) and not isinstance(concurrency, bool) else None,
        active=worker.active or 0,
        processed=worker.processed or 0,
        loadavg=tuple(worker.loadavg or ()),
        queues=tuple(consumed_queues(details.get("queues"))),
        software=" ".join(str(p) for p in (worker.sw_ident, worker.sw_ver) if p),
        pid=worker.pid if isinstance(worker.pid, int) and not isinstance(worker.pid, bool)
        else None,
    )


def consumed_queues(reply: Any) -> list[str]:
    """The queue names of an ``active_queues`` reply (a list of queue dicts); entries of another
    shape are left out."""
    if not isinstance(reply, list):
        return []
    return [q["name"] for q in reply
            if isinstance(q, Mapping) and isinstance(q.get("name"), str) and q["name"]]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class Feed:
    """One cluster's live data for the console. Thread-safe: the event thread writes the state
    under ``lock``; snapshots are taken under it."""

    def __init__(self, app: App, *, max_tasks: int = 100_000, history: History | None = None,
                 poll_interval: float = POLL_INTERVAL, reapply_pauses: bool = False,
                 on_reapplied: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.app = app
        self.reapply_pauses = reapply_pauses
        """Tell each worker that comes online to stop consuming the paused queues (a Celery
        worker started during a pause consumes them: :mod:`qtui.core.pauses`)."""
        self.on_reapplied = on_reapplied
        """Called (from a thread) with a worker and its replies by queue once it was told: the
        console records it in the audit trail, as any action it takes."""
        self.history = history
        self.poll_interval = poll_interval
        # Metrics live in the history file: without one there is nowhere to keep them.
        recorder = Recorder() if history is not None and app.conf.console_metrics else None
        self.state = State(max_tasks=max_tasks, throughput_slots=THROUGHPUT_SLOTS,
                           track_changes=True, max_workers=app.conf.console_max_workers,
                           max_field=app.conf.console_max_field, metrics=recorder,
                           queue_rates=QueueRates())
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.connected = False
        self.error = ""
        self.failures = 0
        """Times the event loop failed and started again."""
        self.last_failure = ""
        self._batches = 0
        """Batches of events applied: tells a failure that keeps coming back from a new one."""
        self._queues: tuple[QueueRow, ...] = ()
        self._queue_error = ""
        self._queue_notice = ""
        """What the latest queue poll could not read, though it answered (the pauses)."""
        self._details: dict[str, dict[str, Any]] = {}
        self._depths: dict[str, tuple[int | None, float]] = {}
        self._receiver: EventReceiver | None = None
        self.alerts = Alerts(parse_rules(app.conf.alerts))
        self.finished_counts = FinishedCounts(self.alerts.rules)
        self.state.track_finished = bool(self.finished_counts.rules)
        self.alert_command = AlertCommand.from_app(app)
        self.listening_since = time.time()
        self.last_event: float | None = None
        """Local time the latest event arrived (any kind: a heartbeat says the cluster talks)."""
        self._queues_fresh = False
        """Whether the latest queue poll answered (queue rules are unknown otherwise)."""
        self._heads: dict[str, list[QueueHead]] = {}
        """The next messages of the queues queue_age rules watch, from the latest poll."""
        self._alerts_at = 0.0
        self._transitions: list[Transition] = []
        """Rules that started or stopped firing since the previous snapshot."""
        if history is not None:
            self._restore()

    def _restore(self) -> None:
        assert self.history is not None
        try:
            tasks = self.history.load(self.state.max_tasks)
        except Exception as exc:  # a damaged history must not keep the console from starting
            logger.warning("console history unreadable (%s); starting without it", exc)
            return
        with self.lock:
            self.state.restore(tasks)

    # the event thread ---------------------------------------------------------------------------
    def run(self, emit: Callable[[Snapshot], None], interval: float = 0.25) -> None:
        """Receive events until :meth:`stop`; call ``emit`` with a snapshot every ``interval``.
        If the loop fails, the snapshot it emits says so and the loop starts again."""
        streak, batches = 0, -1
        try:
            while not self.stopped.is_set():
                try:
                    self._receive(emit, interval)
                except Exception as exc:  # noqa: BLE001 - anything: the console must hear of it
                    logger.exception("the console's event feed failed; starting it again")
                    streak = 1 if self._batches != batches else streak + 1
                    batches = self._batches
                    emit(self._failed(exc))
                    # A failure that comes back at once is waited out longer each time.
                    self.stopped.wait(min(RESTART_DELAY * 2 ** (streak - 1), MAX_RESTART_DELAY))
        finally:
            if self.history is not None:
                self.history.close()

    def _failed(self, exc: Exception) -> Snapshot:
        """The snapshot that tells the console the loop failed (a bare one if taking the
        snapshot is what fails)."""
        with self.lock:
            self.failures += 1
            self.last_failure = f"{type(exc).__name__}: {exc}"
            self.connected = False
            self.error = f"event feed failed ({self.last_failure}); restarting"
            try:
                return self.snapshot()
            except Exception:  # noqa: BLE001 - the snapshot itself failed: say what is known
                return Snapshot(error=self.error, feed_failures=self.failures,
                                last_feed_failure=self.last_failure)

    def _receive(self, emit: Callable[[Snapshot], None], interval: float) -> None:
        receiver = self._receiver = EventReceiver(self.app)
        try:
            for batch in receiver.batches(interval=interval):
                if self.stopped.is_set():
                    return
                emit(self.ingest(batch, receiver.connected, receiver.error))
                self._batches += 1
                if self.reapply_pauses:
                    self._reapply_pauses(batch)
        finally:
            receiver.close()

    def _reapply_pauses(self, batch: list[dict[str, Any]]) -> None:
        """Each worker that came online is told again about the paused queues, in a thread of
        its own: the broker and the worker's reply must not hold the event feed up."""
        for event in batch:
            hostname = event.get("hostname")
            if event.get("type") == "worker-online" and isinstance(hostname, str):
                threading.Thread(target=self._reapply, args=(hostname,), daemon=True,
                                 name=f"qtui-reapply-{hostname}").start()

    def _reapply(self, hostname: str) -> None:
        try:
            done = reapply(self.app, hostname)
        except Exception as exc:  # noqa: BLE001 - logged: the next worker-online tries again
            logger.warning("could not tell %s about the paused queues: %s", hostname, exc)
            return
        if done:
            logger.info("told %s again to stop consuming the paused %s", hostname,
                        ", ".join(sorted(done)))
            if self.on_reapplied is not None:
                self.on_reapplied(hostname, done)

    def ingest(self, batch: list[dict[str, Any]], connected: bool = True,
               error: str = "") -> Snapshot:
        """Apply a batch of events to the state, evaluate the alert rules (at most every
        ALERT_INTERVAL), then save what changed to the history and the metrics; returns the
        snapshot of what changed (the receiver's status with it)."""
        with self.lock:
            self._apply(batch)
            self.connected, self.error = connected, error
            self._evaluate_alerts()
            snapshot = self.snapshot()
        if snapshot.alert_events and self.alert_command is not None:
            self.alert_command.start(snapshot.alert_events)
        if self.history is not None and snapshot.tasks:
            self._save(snapshot)
        if self.state.metrics is not None:
            self._save_metrics()
        return snapshot

    def _save(self, snapshot: Snapshot) -> None:
        assert self.history is not None
        try:
            # The snapshot's records stay as they are (the State changes a copy): no lock.
            self.history.save(row.task for row in snapshot.tasks)
        except Exception as exc:
            logger.warning("console history not saved: %s", exc)

    def _save_metrics(self) -> None:
        assert self.history is not None and self.state.metrics is not None
        with self.lock:
            self.state.measure_unplaced(time.time())
            rollups = self.state.metrics.take()
        try:
            self.history.save_metrics(rollups)
        except Exception as exc:
            logger.warning("console metrics not saved: %s", exc)

    def snapshot(self) -> Snapshot:
        """What changed since the previous snapshot, plus the current workers and queues.
        Call with ``lock`` held."""
        state, now = self.state, time.time()
        changes = state.take_changes()
        return Snapshot(
            workers=tuple(worker_row(w, self._details.get(w.hostname, {}), now)
                          for w in state.workers.values()),
            tasks=tuple(TaskRow(t) for t in changes.tasks),
            removed=tuple(changes.removed),
            queues=self._queues,
            queue_notice=self._queue_notice,
            throughput=ThroughputSeries(state.throughput.interval, {
                key: state.throughput.series(key, now)
                for key in state.throughput.keys()}),  # noqa: SIM118 - Throughput is no mapping
            task_count=len(state),
            events_seen=state.event_count,
            connected=self.connected,
            error=self.error or self._queue_error,
            bad_events=state.bad_events,
            last_bad_event=state.last_bad_event,
            feed_failures=self.failures,
            last_feed_failure=self.last_failure,
            alerts=self.alerts.statuses(),
            alert_events=self._take_transitions(),
        )

    # alerts -------------------------------------------------------------------------------------
    def observe(self, now: float) -> Observation:
        """What the alert rules measure, from the state and the latest queue poll. Call with
        ``lock`` held."""
        return Observation(
            now=now, listening_since=self.listening_since, last_event=self.last_event,
            workers={host: w.alive(now) for host, w in self.state.workers.items()},
            queues={q.name: QueueLevel(q.depth, oldest_age(
                q.depth, self._heads.get(q.name, ()), self.state.sent_at, now)
                if self._age_watched(q.name) else None) for q in self._queues}
            if self._queues_fresh else None,
            finished=self.finished_counts.counts(now))

    def _apply(self, batch: list[dict[str, Any]]) -> None:
        """Apply a batch of events to the state, noting when the cluster last spoke and which
        tasks finished (for the alert rules). Call with ``lock`` held."""
        self.state.ingest(batch)
        if not batch:
            return
        self.last_event = time.time()
        for task in self.state.take_finished():
            self.finished_counts.add(Finished(task.name or "", task.worker or "",
                                              task.state == FAILURE, task.updated))

    def _evaluate_alerts(self) -> None:
        """Evaluate the rules (at most every ALERT_INTERVAL); keep what started or stopped
        firing for the next snapshot. Call with ``lock`` held."""
        now = time.time()
        if not self.alerts.rules or now - self._alerts_at < ALERT_INTERVAL:
            return
        self._alerts_at = now
        for transition in self.alerts.update(self.observe(now)):
            status = transition.status
            logger.info("alert %s %s: %s", status.rule.name, transition.event,
                           status.detail)
            self._transitions.append(transition)

    def _take_transitions(self) -> tuple[Transition, ...]:
        taken, self._transitions = tuple(self._transitions), []
        return taken

    def _age_watched(self, queue: str) -> bool:
        """Whether a queue_age rule looks at ``queue`` (only those queues' ages are observed)."""
        return any(r.kind == "queue_age" and fnmatch.fnmatchcase(queue, r.queue or "*")
                   for r in self.alerts.rules)

    def watched_queues(self) -> set[str]:
        """Queues the rules name plainly (no glob), to be asked for by name."""
        return {r.queue for r in self.alerts.rules
                if r.queue and not GLOB_CHARACTERS & set(r.queue)}

    # the polling thread -------------------------------------------------------------------------
    def poll(self) -> None:
        """Poll queue depths and worker details until :meth:`stop`."""
        while not self.stopped.is_set():
            self.poll_once()
            self.stopped.wait(self.poll_interval)

    def poll_once(self) -> None:
        self._poll_workers()
        self._poll_queues()

    def _poll_workers(self) -> None:
        with self.lock:
            alive = [w.hostname for w in self.state.alive_workers()]
        if not alive:
            return
        try:
            inspect = self.app.control.inspect(destination=alive, timeout=INSPECT_TIMEOUT)
            stats = inspect.stats() or {}
            queues = inspect.active_queues() or {}
        except Exception as exc:
            logger.info("worker details unavailable: %s", exc)
            return
        details = {host: {"stats": stats.get(host), "queues": queues.get(host)}
                   for host in set(stats) | set(queues)}
        with self.lock:
            self._details.update(details)

    def _poll_queues(self) -> None:
        with self.lock:
            consumers: dict[str, list[str]] = {}
            for host, detail in self._details.items():
                for name in consumed_queues(detail.get("queues")):
                    consumers.setdefault(name, []).append(host)
        try:
            with inspector_for(self.app) as inspector:
                poll = inspector.poll([*consumers, *self.watched_queues() - set(consumers)],
                                      LISTING_REUSE)
        except Exception as exc:
            self._queue_error = f"queue depths unavailable: {exc}"
            self._queues_fresh = False
            return
        self._queue_error = ""
        self._queue_notice = poll.pause_error
        now, rows = time.monotonic(), []
        with self.lock:
            sent_at, wall = self.state.sent_at, time.time()
            ages = {q.name: oldest_wait(q.messages, poll.heads.get(q.name, ()), sent_at, wall)
                    for q in poll.queues}
            rates = self.state.queue_rates
            assert rates is not None
            flows = {q.name: (rates.inflow(q.name, wall),
                              rates.outflow(q.name, consumers.get(q.name, ()), wall))
                     for q in poll.queues}
        for q in poll.queues:
            hosts = tuple(sorted(consumers.get(q.name, ())))
            # A broker that cannot count consumers (the embedded one): the workers that said
            # they consume the queue are its consumers.
            count = q.consumers if q.consumers is not None else len(hosts)
            rows.append(QueueRow(q.name, q.messages, count, self._rate(q.name, q.messages, now),
                                 hosts, q.scheduled, ages[q.name], poll.dead.get(q.name),
                                 poll.paused.get(q.name), *flows[q.name]))
            self._depths[q.name] = (q.messages, now)
        self._queues = tuple(rows)
        self._heads = poll.heads
        self._queues_fresh = True
        if self.state.metrics is not None:
            self._save_queue_depths(rows)

    def _save_queue_depths(self, rows: list[QueueRow]) -> None:
        """The poll's depths and oldest messages' ages (where known) into the metrics."""
        assert self.history is not None
        try:
            self.history.save_queue_depths(time.time(), {
                row.name: (row.depth, None if row.age is None else row.age.seconds)
                for row in rows})
        except Exception as exc:
            logger.warning("console queue depths not saved: %s", exc)

    def _rate(self, name: str, depth: int | None, now: float) -> float | None:
        """Change of depth per second since the previous poll (negative: draining)."""
        previous = self._depths.get(name)
        if depth is None or previous is None or previous[0] is None or now <= previous[1]:
            return None
        return (depth - previous[0]) / (now - previous[1])

    # on demand (blocking: call from a thread worker) --------------------------------------------
    def inspect(self, hostname: str, method: str, *arguments: Any, timeout: float = 2.0) -> Any:
        """One worker's reply to an inspect method, or None when it did not answer; raises
        BrokerUnavailable when the broker cannot be reached."""
        inspect = self.app.control.inspect(destination=[hostname], timeout=timeout)
        replies = getattr(inspect, method)(*arguments) or {}
        return replies.get(hostname)

    def full_arguments(self, task_id: str) -> Arguments | None:
        """A task's complete arguments, asked of the worker that ran it first (see
        :mod:`~qtui.tui.arguments`)."""
        with self.lock:
            task = self.state.task(task_id)
            worker = task.worker if task is not None else None
        return arguments.lookup(self.app, task_id, worker)

    def full_arguments_of(self, task_ids: Sequence[str]) -> dict[str, Arguments]:
        """:meth:`full_arguments` of several tasks, in one ``task_arguments`` broadcast (see
        :func:`~qtui.tui.arguments.lookup_many`); tasks whose arguments are unknown are left out."""
        return arguments.lookup_many(self.app, task_ids)

    def forget_worker(self, hostname: str) -> bool:
        """Drop a worker (one gone for good) from the state; its tasks stay."""
        with self.lock:
            self._details.pop(hostname, None)
            return self.state.remove_worker(hostname)

    def stop(self) -> None:
        self.stopped.set()
