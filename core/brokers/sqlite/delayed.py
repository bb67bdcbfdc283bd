"""The delayed (ETA) store on the embedded broker: rows of the due queue ``qtui.due.<queue>``
that stay invisible until their not-before time (see :mod:`qtui.core.delayed`)."""

from __future__ import annotations

import json
from typing import Any

from kombu import Exchange, Queue

from ...delayed import DUE_QUEUE, DelayedTasks, HeldTask, held_task


def sqlite_due_queue(queue: str) -> Queue:
    """The embedded broker's due queue of ``queue``: not-before rows wait there."""
    name = DUE_QUEUE.format(queue=queue)
    return Queue(name, Exchange(""), routing_key=name, durable=True)


class SqliteDelayed(DelayedTasks):
    """The embedded broker: the rows of the due queue that nobody holds."""

    def _db(self) -> Any:
        return self.channel.db

    def count(self, queue: str) -> int:
        return int(self._db().count_unheld(DUE_QUEUE.format(queue=queue)))

    def purge(self, queue: str) -> int:
        return int(self._db().delete_unheld(DUE_QUEUE.format(queue=queue)))

    def release(self, queue: str) -> int:
        return int(self._db().move_unheld(DUE_QUEUE.format(queue=queue), queue))

    def tasks(self, queue: str, limit: int = 100) -> list[HeldTask] | None:
        found = []
        for payload in self._db().peek_unheld(DUE_QUEUE.format(queue=queue), limit):
            message = json.loads(payload)
            found.append(held_task(message.get("headers") or {},
                               (message.get("properties") or {}).get("priority")))
        return found
