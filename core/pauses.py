"""Pausing a queue across the cluster: no worker consumes it until it is resumed.

The pause is stored in the broker itself (each family's queue inspector keeps it: a Redis hash,
a table of the embedded broker's file, a RabbitMQ stream), because the broker is the one thing
every worker and console of a cluster already shares, and a pause must outlive the process that
made it. Each pause also keeps the workers to give the queue back to on resume: those that
consumed it when it was paused, and every qtui worker that would have consumed it since.

Who stops consuming, and when:

- running workers, qtui's and Celery's: ``cancel_consumer`` broadcast by :func:`pause_queue`;
- a qtui worker reads the pauses each time it connects (start and reconnect) and leaves the
  paused queues out, noting itself for the resume; it never takes a paused queue back on its
  own, so it cannot fight the operator;
- a Celery worker that starts while the pause lasts consumes its configured queues: the console,
  and ``qtui pause --watch``, send it ``cancel_consumer`` again when they see its
  ``worker-online`` event (:func:`reapply`). Between its start and that command it may take a
  few messages (at most its prefetch). qtui workers do not re-apply pauses to other workers:
  a worker does not read the event stream, and one watcher is enough.

:func:`resume_queue` removes the pause and sends ``add_consumer`` to the workers the pause noted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kombu.exceptions import ChannelError

from .exceptions import QtuiError

if TYPE_CHECKING:
    from .app import App
    from .control import Replies
    from .queues import QueueInspector

logger = logging.getLogger(__name__)

#: Seconds a worker that came online is asked what it consumes until it answers (see
#: :func:`reapply`): Celery's Heart bootstep sends worker-online before its Tasks and Control
#: steps start, so the first ask may come before it listens.
ONLINE_ANSWER_WAIT = 10.0

class PauseUnsupported(QtuiError):
    """The broker has no place for a pause that every worker would read."""


@dataclass(frozen=True)
class Pause:
    """A paused queue: since when, who paused it (``user@host``), and the workers to give it
    back to on resume."""

    queue: str
    since: float
    by: str
    consumers: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class PauseOutcome:
    """What pausing or resuming did: the stored pause, and each worker's reply to the
    ``cancel_consumer`` / ``add_consumer`` sent (empty when none was asked)."""

    pause: Pause | None
    replies: dict[str, Any]


def pause_queue(app: App, queue: str, by: str, timeout: float = 1.0) -> PauseOutcome:
    """Store the pause of ``queue``, noting the workers that consume it now, then tell every
    worker to stop consuming it."""
    consumers = consumers_of(app, queue, timeout)
    with _inspector(app) as inspector:
        pause = inspector.pause(Pause(queue, time.time(), by, tuple(sorted(consumers))))
    replies = app.control.cancel_consumer(queue, reply=True, timeout=timeout)
    return PauseOutcome(pause, _by_worker(replies))


def resume_queue(app: App, queue: str, timeout: float = 1.0) -> PauseOutcome:
    """Remove the pause of ``queue`` and give the queue back to the workers it noted; a queue
    that was not paused is left as it is (``pause`` None)."""
    with _inspector(app) as inspector:
        pause = inspector.resume(queue)
    if pause is None or not pause.consumers:
        return PauseOutcome(pause, {})
    replies = app.control.add_consumer(queue, destination=list(pause.consumers), reply=True,
                                       timeout=timeout)
    return PauseOutcome(pause, _by_worker(replies))


def paused_queues(app: App) -> dict[str, Pause]:
    """Every stored pause, by queue (empty on a broker that cannot keep them)."""
    with _inspector(app) as inspector:
        try:
            return inspector.pauses()
        except PauseUnsupported:  # nothing can have been paused there
            return {}


def reapply(app: App, hostname: str, timeout: float = 1.0) -> dict[str, Any]:
    """A worker came online: tell it to stop consuming each paused queue it consumes, noting it
    for the resume. Returns its replies by queue (empty when it never answered)."""
    pauses = paused_queues(app)
    if not pauses:
        return {}
    consumed = _queues_of_new_worker(app, hostname, timeout)
    done: dict[str, Any] = {}
    for queue in sorted(consumed & set(pauses)):
        with _inspector(app) as inspector:
            inspector.note_paused_consumer(queue, hostname)
        replies = app.control.cancel_consumer(queue, destination=[hostname], reply=True,
                                              timeout=timeout)
        done[queue] = _by_worker(replies).get(hostname)
    return done


def _queues_of_new_worker(app: App, hostname: str, timeout: float) -> set[str]:
    """The queues a worker that came online consumes, asked again (each ask waits ``timeout``)
    until it answers or :data:`ONLINE_ANSWER_WAIT` has passed: a Celery worker sends
    worker-online before its remote control listens, and what is broadcast before then never
    reaches it."""
    deadline = time.monotonic() + ONLINE_ANSWER_WAIT
    while True:
        reply = app.control.inspect(destination=[hostname], timeout=timeout).active_queues() or {}
        if hostname in reply or time.monotonic() >= deadline:
            return {q["name"] for q in reply.get(hostname) or ()
                    if isinstance(q, dict) and isinstance(q.get("name"), str)}


def leave_out_paused(app: App, queues: Iterable[str], hostname: str) -> set[str]:
    """The names among ``queues`` that are paused, each noting ``hostname`` for the resume: a
    worker that connects does not consume them (see the module docstring). A note that fails
    (no write permission, the writers' lock held too long) is logged: the queue is left out all
    the same, and the resume will not give it back to this worker by itself."""
    from .queues import QueueInspectionError  # queues.py imports this module's Pause

    with _inspector(app) as inspector:
        try:
            pauses = inspector.pauses()
        except PauseUnsupported:  # nothing can have been paused there
            return set()
        paused = set(queues) & set(pauses)
        for queue in sorted(paused):
            try:
                inspector.note_paused_consumer(queue, hostname)
            except (QueueInspectionError, ChannelError) as exc:
                logger.warning("Queue %s is paused and this worker is not noted for the resume "
                               "(%s): after `qtui resume %s`, give it back with `qtui control -d "
                               "%s add_consumer %s`", queue, exc, queue, hostname, queue)
    return paused


def consumers_of(app: App, queue: str, timeout: float = 1.0) -> set[str]:
    """The workers whose ``active_queues`` reply names ``queue``."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return {host for host, queues in replies.items()
            if any(isinstance(q, dict) and q.get("name") == queue for q in queues or ())}


def _inspector(app: App) -> QueueInspector:
    from .queues import inspector_for  # queues.py imports this module's Pause
    return inspector_for(app)


def _by_worker(replies: Replies | None) -> dict[str, Any]:
    return {} if replies is None else replies.by_worker()
