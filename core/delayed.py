"""The delayed (ETA) store as any qtui process sees it: its layout on each broker, and how many
tasks it holds, what they are, purging them, and releasing them to their queues.

qtui workers put ETA tasks that are far off into the broker (see ``qtui.workers.eta``); this
module names where they are, and each broker family reads its own (``delayed.py`` in its
package under ``core/brokers/``), so ``qtui status``, ``qtui purge``, ``qtui eta release``, the
console and the workers' ``inspect scheduled`` read the same thing:

- Redis: the sorted set ``qtui.delayed.<queue>`` scored by due time; each member is the list the
  message goes back to, a newline, and the complete kombu envelope.
- RabbitMQ: the delay queues ``qtui.delay.<queue>.<N>s`` (a ladder of TTLs) dead-letter into
  the due queue ``qtui.due.<queue>``, which every qtui worker consuming ``<queue>`` consumes too,
  so a due task does not wait behind the backlog of ``<queue>``. A message nobody takes from the
  due queue within :data:`DUE_TTL` seconds (no qtui worker left) dead-letters to ``<queue>``
  itself, where Celery workers take it.
- The embedded SQLite broker: rows of the due queue ``qtui.due.<queue>`` that stay invisible
  until their not-before time.

*Releasing* hands every held task back to its queue as a plain message, with its ``eta`` header,
so any worker -- a Celery worker too, which holds it in memory until due -- runs it. *Running
now* hands some held tasks back by id without their ETA, so the next worker runs them at once;
*deleting* discards some by id. Both take each task out of the store in one atomic step, so a
task run now runs once however many operators press the key. RabbitMQ cannot take one message
out of a queue without taking those before it: there, only releasing and purging all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Queue

from .brokers.family import family_for
from .exceptions import QtuiError

DELAYED_KEY = "qtui.delayed.{queue}"
DELAY_QUEUE = "qtui.delay.{queue}.{seconds}s"
DUE_QUEUE = "qtui.due.{queue}"
LADDER = (1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
#: Seconds a due message waits in a RabbitMQ due queue before it goes to the task queue itself
#: (for the Celery workers there when no qtui worker consumes the due queue).
DUE_TTL = 60
#: Seconds a due queue nobody uses lives on: longer than the longest step of the ladder, whose
#: messages dead-letter into it (it is declared again with every message put on the ladder).
DUE_QUEUE_EXPIRES = 2 * LADDER[-1] + 300
#: Prefixes of the queues the store is made of: not user queues.
INTERNAL_PREFIXES = ("qtui.delay.", "qtui.due.")


def is_store_queue(name: str) -> bool:
    """Whether ``name`` is one of the queues the delayed store is made of."""
    return name.startswith(INTERNAL_PREFIXES)


class NotByTask(QtuiError):
    """The broker's store cannot take out one held task by its id (RabbitMQ)."""


@dataclass(frozen=True)
class HeldTask:
    """A task the broker holds until its ETA."""

    id: str | None
    name: str | None
    eta: str | None
    args: str | None
    kwargs: str | None
    priority: int


class DelayedTasks(ABC):
    """What one broker's delayed store holds, read through a connection the caller owns."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @property
    def channel(self) -> Any:
        """The connection's default channel, an instance of this broker's own Channel class
        (kombu annotates it as the base virtual Channel, which has no ``client`` or ``db``)."""
        return self.connection.default_channel

    @abstractmethod
    def count(self, queue: str) -> int:
        """How many tasks of ``queue`` the store holds."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Discard the tasks of ``queue`` the store holds; returns how many."""

    @abstractmethod
    def release(self, queue: str) -> int:
        """Hand every held task of ``queue`` back to it as a plain message (``eta`` header kept);
        returns how many."""

    def tasks(self, queue: str, limit: int = 100) -> list[HeldTask] | None:
        """The first ``limit`` held tasks of ``queue`` by due time; None where the broker cannot
        show them without taking them (RabbitMQ)."""
        return None

    def run_now(self, queue: str, task_ids: Collection[str]) -> list[str]:
        """Hand the held tasks of ``queue`` with these ids back to it without their ETA, so the
        next worker runs them at once; returns the ids handed back (each once, however many
        callers race)."""
        raise NotByTask(self._not_by_task(queue))

    def delete(self, queue: str, task_ids: Collection[str]) -> list[str]:
        """Discard the held tasks of ``queue`` with these ids; returns the ids discarded."""
        raise NotByTask(self._not_by_task(queue))

    @staticmethod
    def _not_by_task(queue: str) -> str:
        return (f"this broker cannot take one held task out of its delayed store: `qtui eta "
                f"release -Q {queue}` hands all of {queue}'s back, `qtui purge -Q {queue}` "
                "discards them with the queue's messages")


def without_eta(headers: dict[str, Any], drop: Collection[str] = ()) -> dict[str, Any]:
    """A held message's headers for running it now: no ETA (and none of ``drop``, the store's
    own headers), the rest as sent."""
    return {**{k: v for k, v in headers.items() if k not in drop}, "eta": None}


def held_task(headers: dict[str, Any], priority: Any) -> HeldTask:
    """What a held message's task headers and priority say, as the console shows it."""
    def text(key: str) -> str | None:
        value = headers.get(key)
        return None if value is None else str(value)
    return HeldTask(text("id"), text("task"), text("eta"), text("argsrepr"), text("kwargsrepr"),
                    priority if isinstance(priority, int) else 0)


def delayed_for(connection: Connection) -> DelayedTasks | None:
    """The reader of ``connection``'s delayed store (its broker family's), or None: this broker
    has none (workers hold every ETA task themselves)."""
    return family_for(connection).delayed(connection)


def counts(connection: Connection, queues: Iterable[str]) -> dict[str, int]:
    """How many tasks the delayed store holds per queue (empty: this broker has no store)."""
    reader = delayed_for(connection)
    return {} if reader is None else {name: reader.count(name) for name in queues}


def due_queue(connection: Connection, queue: str, queue_type: str = "classic") -> Queue | None:
    """The due queue a worker consuming ``queue`` consumes too, on brokers whose store has one
    (RabbitMQ, the embedded broker); None elsewhere."""
    return family_for(connection).due_queue(queue, queue_type)
