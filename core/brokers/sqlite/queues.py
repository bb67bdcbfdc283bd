"""Queue inspection on the embedded broker: the file lists its queues and depths itself; peeking
is a SELECT of the ready rows in delivery order, and deleting or moving one changes its row
unless a consumer holds it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...pauses import Pause
from ...peek import PAGE, Peek, WaitingMessage, rerouted
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

    peek_method = "a SELECT of the ready rows in delivery order (nothing taken, nothing reordered)"

    def peek(self, name: str, offset: int = 0, limit: int = PAGE) -> Peek:
        channel: Any = self.connection.default_channel
        rows = channel.db.ready_page(name, offset, limit)
        return Peek(name, [WaitingMessage.from_envelope(offset + i, (row_id, payload),
                                                        json.loads(payload), created_at)
                           for i, (row_id, payload, created_at) in enumerate(rows)],
                    self.peek_method)

    def delete(self, name: str, messages: Sequence[WaitingMessage]) -> int:
        channel: Any = self.connection.default_channel
        return int(channel.db.delete_rows(name, [m.handle[0] for m in messages]))

    def move_found(self, name: str, messages: Sequence[WaitingMessage],
                   to: Callable[[WaitingMessage], str], without_headers: Iterable[str] = ()
                   ) -> list[WaitingMessage]:
        channel: Any = self.connection.default_channel
        without = set(without_headers)
        moves = [(m.handle[0], rerouted(m.handle[1], to(m), without), to(m)) for m in messages]
        moved = set(channel.db.move_rows(name, moves))
        return [m for m in messages if m.handle[0] in moved]

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
