"""Queue inspection on Redis: LLEN over each queue's priority lists, and every queue kombu bound
found in its ``_kombu.binding.<exchange>`` sets, so queues nobody consumes are listed too."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ...events import EVENT_QUEUE_PREFIX
from ...queues import QueueHead, QueueInfo, QueueInspector, is_internal


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

    def heads(self, names: Iterable[str]) -> dict[str, list[QueueHead]]:
        channel: Any = self.connection.default_channel
        ordered = sorted(set(names))
        keys = [(name, key) for name in ordered for key in self.priority_keys(channel, name)]
        with channel.client.pipeline() as pipe:
            for _, key in keys:
                pipe.lindex(key, -1)  # kombu pushes on the left and pops on the right
            found = pipe.execute()
        heads: dict[str, list[QueueHead]] = {}
        for (name, _), raw in zip(keys, found, strict=True):
            if raw is not None:
                heads.setdefault(name, []).append(QueueHead(_envelope_task_id(raw)))
        return heads

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


def _envelope_task_id(raw: bytes | str) -> str | None:
    """The task id of a kombu Redis envelope (protocol v2 ``id`` header, else the
    correlation id); None for a message of another shape."""
    try:
        envelope = json.loads(raw)
    except ValueError:  # not kombu's JSON envelope: a message qtui cannot date
        return None
    if not isinstance(envelope, Mapping):
        return None
    headers, properties = envelope.get("headers"), envelope.get("properties")
    found = headers.get("id") if isinstance(headers, Mapping) else None
    if found is None and isinstance(properties, Mapping):
        found = properties.get("correlation_id")
    return found if isinstance(found, str) else None
