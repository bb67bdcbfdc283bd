"""``qtui exporter``: the cluster's metrics for Prometheus, under celery-exporter's names.

Metric names, types and labels are those of celery-exporter (danihodovic/celery-exporter), so
its Grafana dashboards and alert rules work unchanged; qtui adds its own under ``qtui_``. Two
threads keep the figures current, the way the console's feed does:

* events: an :class:`~qtui.core.events.EventReceiver` (the console's) feeds a bounded
  :class:`~qtui.core.state.State`, which checks every event and remembers each task's name and
  queue; every task event counts in ``celery_task_<state>_total``, and a success's runtime in
  the ``celery_task_runtime`` histogram;
* polls, every ``poll_interval`` seconds: the live workers' ``stats`` and ``active_queues``,
  and the broker's queue depths, delayed (ETA) store and queue heads, through the readers the
  console uses.

Worker and queue gauges are worked out when Prometheus scrapes, from the state and the latest
poll. prometheus_client serves them over HTTP.
"""

from __future__ import annotations

import argparse
import logging
import operator
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qtui.core.config import mask_url
from qtui.core.display import clip
from qtui.core.eventcheck import MAX_NAME
from qtui.core.events import EventReceiver
from qtui.core.exceptions import QtuiError
from qtui.core.pauses import Pause
from qtui.core.placement import Held
from qtui.core.queues import (
    LISTING_REUSE,
    QueueHead,
    QueueInfo,
    inspector_for,
    is_internal,
    oldest_age,
)
from qtui.core.state import State

from .feed import consumed_queues
from .metric_labels import OVERFLOW, LabelSets, LabelValues

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from qtui.core.app import App

logger = logging.getLogger("qtui.exporter")

#: celery-exporter's port, so a scrape config written for it finds qtui's.
DEFAULT_PORT = 9808
#: Only this host can scrape unless told otherwise: metrics name tasks, queues and hosts.
DEFAULT_ADDR = "127.0.0.1"
#: Upper bounds (seconds) of the runtime histogram's buckets: prometheus_client's defaults (as
#: celery-exporter uses) and longer ones for tasks that take minutes or an hour.
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                   10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
#: Distinct values each label may take before new ones count as "other".
MAX_TASK_NAMES = 1_000
MAX_HOSTNAMES = 1_000
MAX_QUEUES = 1_000
MAX_EXCEPTIONS = 200
#: Label sets each task metric may have before new ones count as all "other".
MAX_SERIES = 10_000
#: Tasks remembered (for the name and queue that later events of a task do not repeat).
MAX_TASKS = 50_000
#: Characters kept of a task's free-text fields: only an exception's class name is used.
MAX_FIELD = 200
#: Seconds a worker has to answer the exporter's inspect calls (the console's too).
INSPECT_TIMEOUT = 1.0
#: Seconds before a failed event loop starts again.
RESTART_DELAY = 1.0
#: The queue a task is counted under when no event said (celery-exporter's choice).
DEFAULT_QUEUE = "celery"
#: The name a task is counted under when no event said: celery-exporter's (Python's None as
#: text), which the celery-mixin's alert rules leave out with ``name!~"None"``.
UNKNOWN_NAME = "None"

#: Event type -> (counter name, help), as celery-exporter names and describes them.
TASK_COUNTERS = {
    "task-sent": ("celery_task_sent", "Sent when a task message is published."),
    "task-received": ("celery_task_received", "Sent when the worker receives a task."),
    "task-started": ("celery_task_started", "Sent just before the worker executes the task."),
    "task-succeeded": ("celery_task_succeeded", "Sent if the task executed successfully."),
    "task-failed": ("celery_task_failed", "Sent if the execution of the task failed."),
    "task-rejected": ("celery_task_rejected", "The task was rejected by the worker, possibly "
                      "to be re-queued or moved to a dead letter queue."),
    "task-revoked": ("celery_task_revoked", "Sent if the task has been revoked."),
    "task-retried": ("celery_task_retried",
                     "Sent if the task failed, but will be retried in the future."),
}
TASK_LABELS = ("name", "hostname", "queue_name")
#: Gauges per worker (label ``hostname``): key -> (name, help).
WORKER_GAUGES = {
    "up": ("celery_worker_up", "Indicates if a worker has recently sent a heartbeat."),
    "active": ("celery_worker_tasks_active",
               "The number of tasks the worker is currently processing"),
    "heartbeat": ("celery_worker_last_heartbeat_timestamp",
                  "Unix time the worker's last heartbeat arrived."),
}
#: Gauges per queue (label ``queue_name``): key -> (name, help); celery-exporter's, then qtui's.
QUEUE_GAUGES = {
    "length": ("celery_queue_length", "The number of message in broker queue."),
    "consumers": ("celery_active_consumer_count",
                  "The number of active consumer in broker queue."),
    "workers": ("celery_active_worker_count", "The number of active workers in broker queue."),
    "processes": ("celery_active_process_count",
                  "The number of active processes in broker queue."),
    "scheduled": ("qtui_queue_scheduled",
                  "ETA tasks of the queue held in the broker's delayed store."),
    "dead": ("qtui_queue_dead_letters",
             "Messages in the queue's dead-letter queue (<queue>.dead)."),
    "age": ("qtui_queue_oldest_message_age_seconds",
            "Seconds the oldest waiting message has waited (where known)."),
    "paused": ("qtui_queue_paused",
               "1 while the queue is paused across the cluster (qtui pause), else 0."),
}

_EXCEPTION_CLASS = re.compile(r"^(\w+)\(")


def exception_class(text: str | None) -> str:
    """``ValueError`` of ``"ValueError('boom')"`` (a worker's repr of the exception), as
    celery-exporter reads it; ``UnknownException`` for anything else."""
    found = _EXCEPTION_CLASS.match(text or "")
    return found.group(1) if found else "UnknownException"


def client_host(hostname: str) -> str:
    """The host part of a client's node name (``gen1234@web1`` -> ``web1``): a client's name
    carries its pid, so each process would be a series of its own."""
    return hostname.rpartition("@")[2] or hostname


@dataclass
class Poll:
    """What the latest poll found: the broker's queues (dead-letter queues apart), their
    heads, and each live worker's ``stats`` and ``active_queues``."""

    queues: list[QueueInfo] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)
    heads: dict[str, list[QueueHead]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    paused: dict[str, Pause] = field(default_factory=dict)
    """The paused queues' pauses (none on a broker that cannot keep them: a kombu transport
    other than Redis, RabbitMQ and the embedded broker)."""
    at: float | None = None
    """When the broker answered (None: not yet)."""


@dataclass(slots=True)
class _Count:
    """One task event to count, as it was when it arrived."""

    kind: str
    hostname: str
    name: str | None
    """The task's name then (a held count takes the name known when it is counted)."""
    exception: str
    """A failure's exception class ('' for other events)."""
    runtime: float | None
    """A success's runtime."""


_counted_name: Callable[[_Count], str | None] = operator.attrgetter("name")


class Exporter:
    """The metrics of one cluster. Thread-safe: the event thread and the poll thread write
    under ``lock``; a scrape reads under it."""

    def __init__(self, app: App, *, poll_interval: float = 5.0,
                 registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.app = app
        self.poll_interval = poll_interval
        self.registry = registry if registry is not None else CollectorRegistry()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.state = State(max_tasks=MAX_TASKS, max_workers=MAX_HOSTNAMES, max_field=MAX_FIELD)
        self.names = LabelValues("name", MAX_TASK_NAMES)
        self.hostnames = LabelValues("hostname", MAX_HOSTNAMES)
        self.queue_names = LabelValues("queue_name", MAX_QUEUES)
        self.exceptions = LabelValues("exception", MAX_EXCEPTIONS)
        self.series = LabelSets(MAX_SERIES)
        self.failed_series = LabelSets(MAX_SERIES)
        self.poll_result = Poll()
        self.unplaced: Held[_Count] = Held()
        """Counts of tasks whose queue no event has said yet (see :mod:`qtui.core.placement`)."""
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._shown: set[tuple[str, ...]] = set()
        """Label sets whose counters were all started at 0."""
        self._queues_seen: set[str] = set()
        """Queues named by workers or events: polled even when the broker cannot list them."""
        self.counters = {
            kind: Counter(name, doc, [*TASK_LABELS, "exception"] if kind == "task-failed"
                          else list(TASK_LABELS), registry=self.registry)
            for kind, (name, doc) in TASK_COUNTERS.items()}
        self.runtime = Histogram("celery_task_runtime", "Histogram of task runtime measurements.",
                                 list(TASK_LABELS), buckets=RUNTIME_BUCKETS,
                                 registry=self.registry)
        self.bad_events = Counter(
            "qtui_exporter_bad_events", "Events skipped because a field had the wrong type or "
            "an impossible value.", registry=self.registry)
        self.registry.register(_ClusterCollector(self))

    # events ------------------------------------------------------------------------------------
    def ingest(self, events: Iterable[Mapping[str, Any]], now: float | None = None) -> None:
        """Count a batch of events (as an EventReceiver yields them), then the held counts of
        tasks whose wait for their queue is over at ``now`` (default: the current time)."""
        now = time.time() if now is None else now
        with self.lock:
            for event in events:
                self._count(event, now)
            for count, name, queue in self.unplaced.due_placed(now, self.state.task,
                                                               _counted_name):
                self._add(count, name, queue)

    def _count(self, event: Mapping[str, Any], now: float) -> None:
        refused = self.state.bad_events
        self.state.event(event)
        if self.state.bad_events != refused:
            self.bad_events.inc()
            return
        kind = event["type"]
        uuid = event.get("uuid")
        if kind not in self.counters or not uuid:
            return
        task = self.state.task(clip(uuid, MAX_NAME))  # the state keeps ids cut as it checks them
        if task is None:
            return
        hostname = event.get("hostname") or ""
        count = _Count(kind, client_host(hostname) if kind == "task-sent" else hostname,
                       task.name,
                       exception_class(task.exception) if kind == "task-failed" else "",
                       task.runtime if kind == "task-succeeded" else None)
        for placed in self.unplaced.counts(task.uuid, task.placed, count, now):
            self._add(placed, task.name, task.queue)

    def _add(self, count: _Count, name: str | None, queue: str | None) -> None:
        labels = self.series((self.names(name or UNKNOWN_NAME), self.hostnames(count.hostname),
                              self._queue_label(queue)))
        if count.kind != "task-sent" and labels not in self._shown:
            self._show(labels)
        if count.kind == "task-failed":
            labels = self.failed_series((*labels, self.exceptions(count.exception)))
        self._child(count.kind, labels).inc()
        if count.runtime is not None:
            self._child("runtime", labels).observe(count.runtime)

    def _child(self, kind: str, labels: tuple[str, ...]) -> Any:
        """The counter (or, for "runtime", histogram) of one label set, kept at hand: looking
        it up through ``labels()`` takes a lock and rebuilds the key, for every event."""
        child = self._children.get((kind, labels))
        if child is None:
            metric = self.runtime if kind == "runtime" else self.counters[kind]
            child = self._children[kind, labels] = metric.labels(*labels)
        return child

    def _show(self, labels: tuple[str, ...]) -> None:
        """Start every worker-side counter of a task at 0, as celery-exporter does, so a
        failure ratio has both its series from a task's first event on (task-sent comes from
        clients, whose hostnames would multiply the series)."""
        self._shown.add(labels)
        for kind in self.counters:
            if kind != "task-sent":
                self._child(kind, (*labels, "") if kind == "task-failed" else labels).inc(0)

    def _queue_label(self, queue: str | None) -> str:
        if queue is None:
            return DEFAULT_QUEUE
        label = self.queue_names(queue)
        if label != OVERFLOW:
            self._queues_seen.add(queue)
        return label

    def receive(self, interval: float = 0.25) -> None:
        """Count events until :meth:`stop`; a failure is logged and the loop starts again (a
        lost broker is retried by the receiver itself)."""
        while not self.stopped.is_set():
            receiver = EventReceiver(self.app)
            try:
                for batch in receiver.batches(interval=interval):
                    if self.stopped.is_set():
                        return
                    self.ingest(batch)
            except Exception:  # noqa: BLE001 - anything: the exporter keeps serving
                logger.exception("the exporter's event loop failed; starting it again")
                self.stopped.wait(RESTART_DELAY)
            finally:
                receiver.close()

    # polls -------------------------------------------------------------------------------------
    def poll(self) -> None:
        """Poll workers and queues every ``poll_interval`` seconds until :meth:`stop`."""
        while not self.stopped.is_set():
            self.poll_once()
            self.stopped.wait(self.poll_interval)

    def poll_once(self) -> None:
        with self.lock:
            alive = [w.hostname for w in self.state.alive_workers()]
        details = self._worker_details(alive)
        consumed = {name for detail in details.values()
                    for name in consumed_queues(detail.get("queues"))}
        with self.lock:
            wanted = {q for q in (consumed | self._queues_seen)
                      if not is_internal(q) and self.queue_names(q, count=False) != OVERFLOW}
            self._queues_seen |= wanted
        try:
            result = self._read_queues(wanted)
        except Exception as exc:  # noqa: BLE001 - a broker error: keep the last figures, whose
            logger.warning("queue depths unavailable: %s", exc)  # age the scrape shows
            with self.lock:
                self.poll_result.details = details
            return
        result.details = details
        with self.lock:
            self.poll_result = result

    def _worker_details(self, alive: list[str]) -> dict[str, dict[str, Any]]:
        """Each live worker's ``stats`` and ``active_queues`` replies (as the console asks)."""
        if not alive:
            return {}
        try:
            inspect = self.app.control.inspect(destination=alive, timeout=INSPECT_TIMEOUT)
            stats = inspect.stats() or {}
            queues = inspect.active_queues() or {}
        except Exception as exc:  # noqa: BLE001 - no replies: the queue figures still count
            logger.info("worker details unavailable: %s", exc)
            return {}
        return {host: {"stats": stats.get(host), "queues": queues.get(host)}
                for host in set(stats) | set(queues)}

    def _read_queues(self, wanted: set[str]) -> Poll:
        with inspector_for(self.app) as inspector:
            found = inspector.poll(wanted, LISTING_REUSE)
        paused = found.paused
        if found.pause_error:  # the depths stand; the paused gauges keep their last figures
            logger.warning("queue pauses unavailable: %s", found.pause_error)
            paused = self.poll_result.paused
        return Poll(found.queues, found.dead, found.heads, paused=paused, at=time.time())

    # serving -----------------------------------------------------------------------------------
    def oldest_age(self, queue: QueueInfo, now: float) -> float | None:
        """Seconds the oldest waiting message of ``queue`` has waited: 0 when none waits; from
        when the broker says it was enqueued, else from the task's ``task-sent`` event; None
        when neither is known. Call with ``lock`` held."""
        return oldest_age(queue.messages, self.poll_result.heads.get(queue.name, ()),
                          self.state.sent_at, now)

    def stop(self) -> None:
        self.stopped.set()


class _ClusterCollector:
    """The gauges worked out at scrape time: workers from the state, queues from the latest
    poll."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def describe(self) -> list[Metric]:
        return []  # worked out at scrape time: nothing to check names against beforehand

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        exporter, now = self.exporter, time.time()
        workers = _gauges(WORKER_GAUGES, "hostname")
        with exporter.lock:
            for hostname, (alive, tasks, last) in sorted(_by_label(exporter, now).items()):
                workers["up"].add_metric([hostname], 1.0 if alive else 0.0)
                workers["active"].add_metric([hostname], float(tasks))
                if last is not None:
                    workers["heartbeat"].add_metric([hostname], last)
            queue_families = list(_queue_families(exporter, now))
            folded = CounterMetricFamily(
                "qtui_exporter_labels_folded",
                "Label values (or label sets) counted as 'other' because their bound was "
                "reached.", labels=["label"])
            for bound in (exporter.names, exporter.hostnames, exporter.queue_names,
                          exporter.exceptions):
                folded.add_metric([bound.label], float(bound.folded))
            folded.add_metric(["series"], float(exporter.series.folded
                                                + exporter.failed_series.folded))
            polled = GaugeMetricFamily(
                "qtui_exporter_queues_polled_timestamp",
                "Unix time the broker last answered the queue poll (the queue gauges are "
                "that old).")
            if exporter.poll_result.at is not None:
                polled.add_metric([], exporter.poll_result.at)
        yield from workers.values()
        yield from queue_families
        yield polled
        yield folded


def _by_label(exporter: Exporter, now: float) -> dict[str, tuple[bool, int, float | None]]:
    """Workers by hostname label (alive, active tasks, last heartbeat); workers folded into
    one label ('other') add up."""
    found: dict[str, tuple[bool, int, float | None]] = {}
    for worker in exporter.state.workers.values():
        label = exporter.hostnames(worker.hostname, count=False)
        alive = worker.alive(now)
        tasks = (worker.active or 0) if alive else 0
        was_alive, was_tasks, was_last = found.get(label, (False, 0, None))
        last = max((t for t in (was_last, worker.last_heartbeat) if t is not None), default=None)
        found[label] = (was_alive or alive, was_tasks + tasks, last)
    return found


def _gauges(specs: Mapping[str, tuple[str, str]], label: str) -> dict[str, Any]:
    from prometheus_client.core import GaugeMetricFamily

    return {key: GaugeMetricFamily(name, doc, labels=[label])
            for key, (name, doc) in specs.items()}


def _queue_families(exporter: Exporter, now: float) -> Iterator[Metric]:
    """The queue gauges of the latest poll. Call with ``lock`` held."""
    poll = exporter.poll_result
    families = _gauges(QUEUE_GAUGES, "queue_name")
    consuming: dict[str, list[int]] = {}
    for detail in poll.details.values():
        processes = _pool_processes(detail.get("stats"))
        for name in consumed_queues(detail.get("queues")):
            consuming.setdefault(name, []).append(processes)
    for queue in poll.queues:
        if is_internal(queue.name):
            continue
        label = exporter.queue_names(queue.name, count=False)
        if label == OVERFLOW:
            continue  # a gauge cannot add up what it folds: past the bound, queues go unreported
        per_worker = consuming.get(queue.name, [])
        values = {"length": queue.messages, "consumers": queue.consumers,
                  "workers": len(per_worker), "processes": sum(per_worker),
                  "scheduled": queue.scheduled,
                  "dead": poll.dead_letters.get(queue.name, 0),
                  "age": exporter.oldest_age(queue, now),
                  "paused": 1 if queue.name in poll.paused else 0}
        for key, value in values.items():
            if value is not None:  # None: this broker cannot tell
                families[key].add_metric([label], float(value))
    yield from families.values()


def _pool_processes(stats: Any) -> int:
    """A worker's pool processes from its ``stats`` reply (prefork lists them), else its
    concurrency (threads and solo pools run that many tasks at once)."""
    pool = stats.get("pool") if isinstance(stats, Mapping) else None
    if not isinstance(pool, Mapping):
        return 0
    if isinstance(pool.get("processes"), list):
        return len(pool["processes"])
    concurrency = pool.get("max-concurrency")
    return concurrency if isinstance(concurrency, int) and not isinstance(concurrency, bool) \
        else 0


# the command -----------------------------------------------------------------------------------
def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "exporter",
        description="Serve Prometheus metrics on http://ADDR:PORT/metrics: celery-exporter's "
                    "task, worker and queue metrics, plus qtui's own (qtui_*).")
    parser.add_argument("--port", type=int, default=None,
                        help=f"TCP port (default: exporter_port, {DEFAULT_PORT})")
    parser.add_argument("--addr", default=None,
                        help=f"address to listen on (default: exporter_addr, {DEFAULT_ADDR}; "
                             "0.0.0.0 for every interface)")
    parser.add_argument("--poll-interval", type=float, default=None, metavar="SECONDS",
                        help="seconds between queue and worker polls "
                             "(default: exporter_poll_interval, 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, app: App) -> int:
    """Serve until SIGTERM or Ctrl+C."""
    try:
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise QtuiError("qtui exporter needs prometheus_client: "
                        "pip install 'qtui[exporter]'") from exc
    conf = app.conf
    port = conf.exporter_port if args.port is None else args.port
    addr = conf.exporter_addr if args.addr is None else args.addr
    interval = conf.exporter_poll_interval if args.poll_interval is None else args.poll_interval
    if not 0 < port < 65536 or interval <= 0:
        raise QtuiError("--port must be 1-65535 and --poll-interval above 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    exporter = Exporter(app, poll_interval=interval)
    try:
        server, _ = start_http_server(port, addr=addr, registry=exporter.registry)
    except OSError as exc:
        raise QtuiError(f"cannot listen on {addr}:{port}: {exc}") from exc
    threads = [threading.Thread(target=exporter.receive, name="exporter-events", daemon=True),
               threading.Thread(target=exporter.poll, name="exporter-poll", daemon=True)]
    for thread in threads:
        thread.start()
    signal.signal(signal.SIGTERM, lambda *_: exporter.stop())
    print(f"qtui exporter for {mask_url(app.conf.broker_url or 'the embedded broker')} "
          f"serving http://{addr}:{port}/metrics", flush=True)
    try:
        while not exporter.stopped.wait(1.0):
            pass
    except KeyboardInterrupt:
        exporter.stop()
    server.shutdown()
    server.server_close()
    for thread in threads:
        thread.join(INSPECT_TIMEOUT * 3)
    return 0
