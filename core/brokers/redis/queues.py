"""Queue inspection on Redis: LLEN over each queue's priority lists, and every queue kombu bound
found in its ``_kombu.binding.<exchange>`` sets, so queues nobody consumes are listed too;
peeking reads the lists from the right, where kombu pops, without taking anything."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ...events import EVENT_QUEUE_PREFIX
from ...peek import PAGE, Peek, WaitingMessage, rerouted
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

    peek_method = ("LRANGE of each priority list from the head (nothing taken, nothing "
                   "reordered)")

    def peek(self, name: str, offset: int = 0, limit: int = PAGE) -> Peek:
        channel: Any = self.connection.default_channel
        client = channel.client
        keys = self.priority_keys(channel, name)
        with client.pipeline() as pipe:
            for key in keys:
                pipe.llen(key)
            sizes = pipe.execute()
        ranges = []  # (key, position of its head, first index from the head, how many)
        ahead = 0
        for key, size in zip(keys, sizes, strict=True):
            if limit > 0 and offset < size:
                take = min(limit, size - offset)
                ranges.append((key, ahead + offset, offset, take))
                offset, limit = 0, limit - take
            else:
                offset = max(0, offset - size)
            ahead += size
        with client.pipeline() as pipe:
            for key, _, start, take in ranges:
                pipe.lrange(key, -(start + take), -(start + 1))  # negative: read from the head
            found = pipe.execute()
        messages = [_waiting(position + i, key, raw)
                    for (key, position, _, _), raws in zip(ranges, found, strict=True)
                    for i, raw in enumerate(reversed(raws))]
        return Peek(name, messages, self.peek_method)

    def delete(self, name: str, messages: Sequence[WaitingMessage]) -> int:
        client = self.connection.default_channel.client  # type: ignore[attr-defined]
        with client.pipeline() as pipe:
            for message in messages:
                key, raw = message.handle
                pipe.lrem(key, -1, raw)  # from the head, where a peeked message is nearest
            return sum(pipe.execute())

    def move(self, name: str, messages: Sequence[WaitingMessage],
             to: Callable[[WaitingMessage], str], without_headers: Iterable[str] = ()) -> int:
        channel: Any = self.connection.default_channel
        script = channel.client.register_script(_MOVE)
        without = set(without_headers)
        moved = 0
        for start in range(0, len(messages), MOVE_BATCH):
            with channel.client.pipeline(transaction=False) as pipe:
                for message in messages[start:start + MOVE_BATCH]:
                    key, raw = message.handle
                    target = to(message)
                    priority = message.properties.get("priority") or 0
                    script(keys=[key, channel._q_for_pri(target, priority)],
                           args=[raw, rerouted(raw, target, without)], client=pipe)
                moved += sum(pipe.execute())
        return moved

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



#: Messages moved per pipelined round trip.
MOVE_BATCH = 1_000
#: Take one message out of a list and push it, rewritten, on the back of another, or nothing
#: if someone took it first.
_MOVE = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def _waiting(position: int, key: str, raw: bytes) -> WaitingMessage:
    try:
        envelope = json.loads(raw)
    except ValueError:  # not kombu's envelope: shown as a body nobody can read
        envelope = None
    if not isinstance(envelope, Mapping):
        return WaitingMessage(position, (key, raw), raw, None, None)
    return WaitingMessage.from_envelope(position, (key, raw), envelope)

