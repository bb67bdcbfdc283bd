"""Queue inspection on the embedded broker: the file lists its queues and depths itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...pauses import Pause
from ...queues import QueueHead, QueueInfo, QueueInspector, is_internal


class SqliteQueues(QueueInspector):
    """qtui's embedded broker: its ``Channel.list_queues()`` gives (name, ready, unacked) for
    every queue in the file."""

    lists_all = True

    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        channel: Any = self.connection.default_channel  # kombu types it as the base Channel
        listed = {name: QueueInfo(name, ready, None, unacked)
                  for name, ready, unacked in channel.list_queues()
                  if not is_internal(name)}
        for name in names:
            listed.setdefault(name, QueueInfo(name, 0, None, 0))
        return sorted(listed.values(), key=lambda q: q.name)

    def heads(self, names: Iterable[str]) -> dict[str, list[QueueHead]]:
        channel: Any = self.connection.default_channel  # kombu types it as the base Channel
        heads: dict[str, list[QueueHead]] = {}
        for name in set(names):
            enqueued = channel.db.oldest_ready(name)
            if enqueued is not None:
                heads[name] = [QueueHead(None, enqueued)]
        return heads

    def pauses(self) -> dict[str, Pause]:
        channel: Any = self.connection.default_channel
        return {queue: Pause(queue, since, by, consumers)
                for queue, since, by, consumers in channel.db.paused()}

    def pause(self, pause: Pause) -> Pause:
        channel: Any = self.connection.default_channel
        channel.db.pause(pause.queue, pause.since, pause.by, pause.consumers)
        return self.pauses()[pause.queue]

    def resume(self, queue: str) -> Pause | None:
        channel: Any = self.connection.default_channel
        found = channel.db.resume(queue)
        return None if found is None else Pause(queue, *found)

    def note_paused_consumer(self, queue: str, hostname: str) -> None:
        channel: Any = self.connection.default_channel
        channel.db.note_paused_consumer(queue, hostname)
