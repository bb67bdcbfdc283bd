"""The dead letters: messages a worker moved to ``<queue>.dead`` (:mod:`qtui.workers.deadletter`)
with why (``x-qtui-dead-reason``), where from (``x-qtui-dead-queue``) and how often they were
delivered (``x-qtui-deliveries``). Read through the broker family's queue inspector, as any
queue is peeked; requeued to the queue they came from without those three headers, so a
requeued task keeps its id and arguments and its delivery count starts again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .peek import WaitingMessage
from .protocol import (
    DEAD_QUEUE_HEADER,
    DEAD_REASON_HEADER,
    DEAD_SUFFIX,
    DELIVERIES_HEADER,
    dead_queue_of,
    is_dead_letter_queue,
)
from .queues import QueueInspector

if TYPE_CHECKING:
    from .backends.base import ResultBackend

#: Headers a dead letter carries about its death, dropped when it is requeued.
DEATH_HEADERS = (DEAD_REASON_HEADER, DEAD_QUEUE_HEADER, DELIVERIES_HEADER)
#: Dead letters read from one queue at most (a dead-letter queue is read whole to act on it).
READ_MAX = 1_000_000


def dead_queues(inspector: QueueInspector, names: Sequence[str] = ()) -> list[str]:
    """The dead-letter queues that hold messages: those the broker lists, and those of every
    queue it lists or ``names`` names (a Redis dead-letter list is bound to no exchange, so
    only its name finds it)."""
    candidates = {dead_queue_of(q.name) for q in inspector.queues(names)}
    return [q.name for q in inspector.queues(sorted(candidates))
            if is_dead_letter_queue(q.name) and q.messages]


def read(inspector: QueueInspector, dead_queue: str, limit: int = READ_MAX
         ) -> list[WaitingMessage]:
    return inspector.peek(dead_queue, 0, limit).messages


def origin(dead_queue: str, message: WaitingMessage) -> str:
    """Where a dead letter goes back to: the queue its record names, else the dead-letter
    queue's name without ``.dead``."""
    return message.origin_queue or dead_queue[:-len(DEAD_SUFFIX)]


def requeue(inspector: QueueInspector, dead_queue: str, messages: Sequence[WaitingMessage],
            backend: ResultBackend | None = None) -> int:
    """Send dead letters back to the queue each came from, to the back of it, without their
    death record; returns how many were still there.

    The result ``backend`` forgets each one's stored result (the failure that dead-lettered
    it): the task is pending again, and a qtui worker does not drop it as already done when it
    comes back flagged redelivered (after a peek on RabbitMQ, say). A letter that was gone
    already (requeued or deleted by someone else) keeps its result."""
    moved = inspector.move_found(dead_queue, messages, lambda m: origin(dead_queue, m),
                                 DEATH_HEADERS)
    if backend is not None and backend.persistent:
        for message in moved:
            if message.task_id:
                backend.forget(message.task_id)
    return len(moved)
