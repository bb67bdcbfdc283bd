"""Events: what this worker tells monitors on Celery's ``celeryev`` stream.

Task events carry Celery's fields -- task-received (uuid, name, args and kwargs as their reprs,
root_id, parent_id, retries, eta, expires), task-started, task-succeeded (result repr, runtime),
task-failed and task-retried (exception, traceback), task-rejected (requeue), task-revoked
(terminated, signum, expired) -- and are batched as Celery batches them: held by the dispatcher
and sent as one ``task.multi`` list :data:`FLUSH_INTERVAL` after the first of them, or as soon as
:data:`BATCH_LIMIT` are held. Worker events: worker-online once consuming, worker-heartbeat every
:data:`HEARTBEAT_INTERVAL` seconds (freq, active, processed, loadavg, sw_ident, sw_ver, sw_sys),
worker-offline once the worker has stopped. Every event also carries the common stamp (type,
hostname, utcoffset, pid -- the worker's own --, clock, timestamp). task-received also names
the queue the task came from (qtui's addition, for metrics per queue).

``--without-events`` (``worker_send_task_events = false``) turns task events off and the
``enable_events`` / ``disable_events`` commands toggle them at run time; ``--without-heartbeat``
turns the worker events off. Everything here runs on the worker's main thread (hooks and timer),
except in the solo pool: a task there runs on the main thread, which sends nothing meanwhile, so a
small watcher thread sends the held events (the task's task-started among them) once a task has
run for about :data:`FLUSH_INTERVAL` -- short tasks cost no flush of their own.
Events ride a connection of their own: a broker that cannot take them costs dropped events
(monitors keep their own history and resynchronise from heartbeats), never a stalled worker.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from typing import TYPE_CHECKING, Any

from qtui.core import __version__
from qtui.core.brokers import broker_errors
from qtui.core.display import clip
from qtui.core.events import EventDispatcher
from qtui.core.protocol import ARGSREPR_MAXSIZE, KWARGSREPR_MAXSIZE

from .hooks import Observer

if TYPE_CHECKING:
    from kombu import Connection

    from .execution import Outcome
    from .job import Job
    from .timer import Entry
    from .worker import Worker

logger = logging.getLogger("qtui.worker")

#: Seconds between worker-heartbeat events (Celery's, and the ``freq`` they announce).
HEARTBEAT_INTERVAL = 2.0
#: Task events wait at most this long (seconds) before they go out as one ``task.multi``.
FLUSH_INTERVAL = 0.1
#: ... or go out as soon as this many are held.
BATCH_LIMIT = 100
#: After the broker refused an event, seconds before trying again (events meanwhile dropped).
RETRY_INTERVAL = 5.0

SOFTWARE_INFO = {"sw_ident": "qtui", "sw_ver": __version__, "sw_sys": platform.system()}


def load_average() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # not available on this platform
        return [0.0, 0.0, 0.0]


class Events(Observer):
    """Sends the worker's events; the worker calls it at its hooks and from its timer."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.task_events = bool(worker.send_events)
        """Task events on or off (``enable_events`` / ``disable_events`` change it)."""
        self.heartbeats = bool(worker.heartbeat)
        self.dispatcher: EventDispatcher | None = None
        self.dropped = 0
        """Events dropped because the broker could not take them."""
        self._connection: Connection | None = None
        self._flush_entry: Entry | None = None
        self._retry_at = 0.0
        self._started = 0
        """Tasks started so far (the solo watcher tells a long task from a new one by it)."""
        self._watcher_stop = threading.Event()

    # worker events ---------------------------------------------------------------------------
    def on_worker_ready(self, worker: Worker) -> None:
        if worker.pool_name == "solo":
            threading.Thread(target=self._watch_solo, name="qtui-events-solo",
                             daemon=True).start()
        if self.heartbeats:
            self._send("worker-online", self._worker_fields())
            worker.timer.call_repeatedly(HEARTBEAT_INTERVAL, self._beat)

    def on_worker_stopped(self, worker: Worker) -> None:
        self._watcher_stop.set()
        self.flush()
        if self.heartbeats:
            self._send("worker-offline", self._worker_fields())
        self._close()

    def _beat(self) -> None:
        if self.heartbeats and not self.worker.stopping:
            self._send("worker-heartbeat", self._worker_fields())

    def heartbeat_now(self) -> None:
        """Send a worker-heartbeat at once (the ``heartbeat`` command: a monitor that just
        started learns of this worker without waiting for the next beat)."""
        if self.heartbeats or self.task_events:
            self._send("worker-heartbeat", self._worker_fields())

    def _worker_fields(self) -> dict[str, Any]:
        return {"freq": HEARTBEAT_INTERVAL, "active": len(self.worker.active),
                "processed": self.worker.processed, "loadavg": load_average(), **SOFTWARE_INFO}

    # task events -----------------------------------------------------------------------------
    def on_task_received(self, job: Job) -> None:
        if not self.task_events:  # the fields are not worth building (see _task)
            return
        msg = job.message
        # A client chooses its argsrepr/kwargsrepr headers (Celery cuts its own at 1 KiB): a
        # worker forwards no more than that to every monitor.
        args = None if msg.argsrepr is None else clip(msg.argsrepr, ARGSREPR_MAXSIZE)
        kwargs = None if msg.kwargsrepr is None else clip(msg.kwargsrepr, KWARGSREPR_MAXSIZE)
        # ``queue`` is qtui's addition (Celery says it in task-sent only): monitors count
        # tasks per queue without the client's task-sent events.
        self._task("task-received", {
            "uuid": msg.id, "name": msg.task, "args": args, "kwargs": kwargs,
            "queue": job.queue, "root_id": msg.root_id, "parent_id": msg.parent_id,
            "retries": msg.retries, "eta": msg.eta.isoformat() if msg.eta else None,
            "expires": msg.expires.isoformat() if msg.expires else None})

    def on_task_started(self, job: Job, pid: int | None) -> None:
        self._started += 1
        if self.task_events:  # asked here too: once a task, twice with the call to _task
            self._task("task-started", {"uuid": job.message.id})

    def on_task_succeeded(self, job: Job, outcome: Outcome) -> None:
        if self.task_events:
            self._task("task-succeeded", {"uuid": job.message.id, "result": outcome.result,
                                          "runtime": outcome.runtime})

    def on_task_failed(self, job: Job, exception: str, traceback: str | None) -> None:
        self._task("task-failed", {"uuid": job.message.id, "exception": exception,
                                   "traceback": traceback})

    def on_task_retried(self, job: Job, outcome: Outcome) -> None:
        self._task("task-retried", {"uuid": job.message.id, "exception": outcome.exception,
                                    "traceback": outcome.traceback})

    def on_task_revoked(self, job: Job, *, expired: bool = False, terminated: bool = False,
                        signum: int | None = None) -> None:
        self._task("task-revoked", {"uuid": job.message.id, "terminated": terminated,
                                    "signum": signum, "expired": expired})

    def on_task_rejected(self, job: Job | None, reason: str) -> None:
        if job is not None:  # a message without a task id tells a monitor nothing
            self._task("task-rejected", {"uuid": job.message.id, "requeue": False})

    def _task(self, type: str, fields: dict[str, Any]) -> None:  # noqa: A002
        """Hold one task event (``fields`` start with its ``uuid``) for the next batch."""
        if not self.task_events:
            return
        self._send(type, fields)
        if self._flush_entry is None and self.dispatcher is not None:
            self._flush_entry = self.worker.timer.call_later(FLUSH_INTERVAL, self.flush)

    # switching task events -------------------------------------------------------------------
    def enable(self) -> bool:
        """Task events on; False if they were on already."""
        changed, self.task_events = not self.task_events, True
        return changed

    def disable(self) -> bool:
        """Task events off (held ones still go out); False if they were off already."""
        changed, self.task_events = self.task_events, False
        self.flush()
        return changed

    # sending ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Send the held task events now, as one ``task.multi`` message."""
        if self._flush_entry is not None:
            self._flush_entry.cancel()
            self._flush_entry = None
        if self.dispatcher is not None:
            try:
                self.dispatcher.flush()
            except Exception as exc:
                self._failed(exc)

    def _watch_solo(self) -> None:
        """Solo pool: send the held events when the same task is seen running twice in a row,
        half a flush interval apart (the main thread runs it and sends nothing meanwhile)."""
        seen = None
        while not self._watcher_stop.wait(FLUSH_INTERVAL / 2):
            running = self._started if self.worker.pool.active else None
            if running is not None and running == seen:
                dispatcher = self.dispatcher
                if dispatcher is not None:
                    try:
                        dispatcher.flush()  # thread-safe; the main thread is in the task
                    except Exception as exc:  # the main thread handles the broker on its next send
                        logger.debug("sending held events failed: %s", exc)
                running = None  # once per task
            seen = running

    def _send(self, type: str, fields: dict[str, Any]) -> None:  # noqa: A002
        dispatcher = self.dispatcher if self.dispatcher is not None else self._dispatcher()
        if dispatcher is None:
            self.dropped += 1
            return
        try:
            dispatcher.send(type, fields)
        except Exception as exc:
            self._failed(exc)

    def _dispatcher(self) -> EventDispatcher | None:
        if self.dispatcher is None and time.monotonic() >= self._retry_at:
            self._connection = self.worker.app.connection_for_write()
            self.dispatcher = EventDispatcher(
                self._connection, self.worker.hostname, clock=self.worker.clock,
                buffer_group="task", buffer_limit=BATCH_LIMIT)
        return self.dispatcher

    def _failed(self, exc: Exception) -> None:
        """A broker that fails costs the events in flight, and a pause before retrying; any
        other error is raised again."""
        connection = self._connection
        assert connection is not None
        # Worked out only on failure: sending runs for every task event.
        if not isinstance(exc, broker_errors(connection)):
            raise exc
        self.dropped += 1
        logger.warning("Cannot send events to the broker (%s); dropping them for %.0fs",
                       exc or type(exc).__name__, RETRY_INTERVAL)
        self._close()
        self._retry_at = time.monotonic() + RETRY_INTERVAL

    def _close(self) -> None:
        connection, self._connection, self.dispatcher = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception as exc:  # closing a broken connection can raise anything
                logger.debug("closing the events connection failed: %s", exc)
