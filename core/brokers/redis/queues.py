"""Queue inspection on Redis: LLEN over each queue's priority lists, and every queue kombu bound
found in its ``_kombu.binding.<exchange>`` sets, so queues nobody consumes are listed too."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...events import EVENT_QUEUE_PREFIX
from ...queues import QueueInfo, QueueInspector, is_internal


class RedisQueues(QueueInspector):
    """Redis: LLEN over each queue's priority lists; queues found in kombu's binding sets."""

    lists_all = True
    BINDING_PREFIX = "_kombu.binding."

    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        channel: Any = self.connection.default_channel  # kombu types it as the base Channel
        client = channel.client
        found = set(names) | self._bound_queues(channel)
        ordered = sorted(found)
        with client.pipeline() as pipe:
            for name in ordered:
                for key in self.priority_keys(channel, name):
                    pipe.llen(key)
            sizes = pipe.execute()
        per_queue = len(sizes) // len(ordered) if ordered else 0
        return [QueueInfo(name, sum(sizes[i * per_queue:(i + 1) * per_queue]))
                for i, name in enumerate(ordered)]

    @staticmethod
    def priority_keys(channel: Any, name: str) -> list[str]:
        """The lists holding one queue: its name for priority 0, then one per priority step."""
        return [name] + [f"{name}{channel.sep}{step}" for step in channel.priority_steps if step]

    def _bound_queues(self, channel: Any) -> set[str]:
        prefix = channel.global_keyprefix or ""
        client = channel.client
        found: set[str] = set()
        for raw_key in client.scan_iter(match=f"{prefix}{self.BINDING_PREFIX}*", count=500):
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            key = key[len(prefix):]
            exchange = key[len(self.BINDING_PREFIX):]
            if exchange == EVENT_QUEUE_PREFIX or exchange.endswith(".pidbox"):
                continue
            for member in client.smembers(key):  # the client adds the prefix itself
                text = member.decode() if isinstance(member, bytes) else member
                queue = text.split(channel.sep)[-1]
                if queue and not is_internal(queue):
                    found.add(queue)
        return found
