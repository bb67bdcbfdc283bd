"""The delayed (ETA) store on the embedded broker: rows of the due queue ``qtui.due.<queue>``
that stay invisible until their not-before time (see :mod:`qtui.core.delayed`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

from kombu import Exchange, Queue

from ...delayed import DUE_QUEUE, DelayedTasks, HeldTask, held_task, without_eta

#: Message header: epoch seconds before which a published message stays invisible (delayed
#: delivery; the worker's ETA store on this transport).
NOT_BEFORE_HEADER = "x-qtui-not-before"


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

    def run_now(self, queue: str, task_ids: Collection[str]) -> list[str]:
        def again(row_id: int, message: dict[str, Any]) -> bool:
            headers = without_eta(message.get("headers") or {}, drop=(NOT_BEFORE_HEADER,))
            return bool(self._db().move_unheld_row(
                row_id, queue, json.dumps({**message, "headers": headers})))
        return self._take(queue, task_ids, again)

    def delete(self, queue: str, task_ids: Collection[str]) -> list[str]:
        return self._take(queue, task_ids, lambda row_id, _: bool(
            self._db().delete_unheld_row(row_id)))

    def _take(self, queue: str, task_ids: Collection[str],
              then: Callable[[int, dict[str, Any]], bool]) -> list[str]:
        """``then(row id, message)`` for each unheld row of these tasks; the ids it took."""
        wanted, taken = set(task_ids), []
        for row_id, payload in self._db().unheld_rows(DUE_QUEUE.format(queue=queue)):
            message = json.loads(payload)
            task_id = (message.get("headers") or {}).get("id")
            if task_id in wanted and then(row_id, message):
                taken.append(str(task_id))
        return taken
