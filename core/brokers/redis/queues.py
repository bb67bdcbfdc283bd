"""Queue inspection on Redis: LLEN over each queue's priority lists, and every queue kombu bound
found in its ``_kombu.binding.<exchange>`` sets, so queues nobody consumes are listed too;
peeking reads the lists from the right, where kombu pops, without taking anything.

A poll (:meth:`RedisQueues.poll`) is one pipelined round trip for all queues, whatever their
number and depth: per queue, LLEN and LINDEX of the head of each priority list, LLEN of its
dead-letter lists and ZCARD of its delayed set; never a read of a whole queue. Finding the queues
nobody named takes a SCAN of the binding keys, paged over the whole database, so a frequent
poller lets its answer be reused for a while (``listing_reuse``): a queue first bound by a
client no worker consumes from then appears within that time; queues named appear at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from ...delayed import DELAYED_KEY
from ...events import EVENT_QUEUE_PREFIX
from ...pauses import Pause
from ...peek import PAGE, Peek, WaitingMessage, rerouted
from ...protocol import dead_letter_queue_name, is_dead_letter_queue, sent_at_of
from ...queues import QueueHead, QueueInfo, QueueInspector, QueuePoll, is_internal

#: The paused queues (:mod:`qtui.core.pauses`): a hash of queue -> JSON {since, by}.
PAUSED_KEY = "qtui.paused"
#: The workers to give a paused queue back to on resume: a set of hostnames per queue.
PAUSED_CONSUMERS_KEY = "qtui.paused.consumers.{queue}"

#: Note a worker for the resume, only while the queue is still paused (a resume between a
#: worker's read and its note must not leave a stray set behind).
_NOTE_CONSUMER = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
end
"""


class RedisQueues(QueueInspector):
    """Redis: LLEN over each queue's priority lists; queues found in kombu's binding sets."""

    lists_all = True
    BINDING_PREFIX = "_kombu.binding."

    _discovered: ClassVar[dict[str, tuple[float, frozenset[str]]]] = {}
    """Queue names found by SCAN, by broker URL, with the monotonic time they were found."""
    _discovery_lock: ClassVar[threading.Lock] = threading.Lock()

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
        raw = _unprefixed_keys(channel)
        with channel.client.pipeline() as pipe:
            for _, key in keys:
                pipe.lindex(raw(key), -1)  # kombu pushes on the left and pops on the right
            found = pipe.execute()
        heads: dict[str, list[QueueHead]] = {}
        for (name, _), raw in zip(keys, found, strict=True):
            if raw is not None:
                heads.setdefault(name, []).append(_envelope_head(raw))
        return heads

    peek_method = ("LRANGE of each priority list from the head (nothing taken, nothing "
                   "reordered)")

    def peek(self, name: str, offset: int = 0, limit: int = PAGE) -> Peek:
        channel: Any = self.connection.default_channel
        client = channel.client
        prefixed = _unprefixed_keys(channel)
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
                pipe.lrange(prefixed(key), -(start + take), -(start + 1))  # negative: from the head
            found = pipe.execute()
        messages = [_waiting(position + i, key, raw)
                    for (key, position, _, _), raws in zip(ranges, found, strict=True)
                    for i, raw in enumerate(reversed(raws))]
        return Peek(name, messages, self.peek_method)

    def delete(self, name: str, messages: Sequence[WaitingMessage]) -> int:
        channel: Any = self.connection.default_channel
        prefixed = _unprefixed_keys(channel)
        with channel.client.pipeline() as pipe:
            for message in messages:
                key, raw = message.handle
                pipe.lrem(prefixed(key), -1, raw)  # from the head, where a peeked one is nearest
            return sum(pipe.execute())

    def move_found(self, name: str, messages: Sequence[WaitingMessage],
                   to: Callable[[WaitingMessage], str], without_headers: Iterable[str] = ()
                   ) -> list[WaitingMessage]:
        channel: Any = self.connection.default_channel
        script = channel.client.register_script(_MOVE)
        prefixed = _unprefixed_keys(channel)
        without = set(without_headers)
        moved: list[WaitingMessage] = []
        for start in range(0, len(messages), MOVE_BATCH):
            batch = messages[start:start + MOVE_BATCH]
            with channel.client.pipeline(transaction=False) as pipe:
                for message in batch:
                    key, envelope = message.handle
                    target = to(message)
                    priority = message.properties.get("priority") or 0
                    # kombu prefixes a script's first key only
                    script(keys=[key, prefixed(channel._q_for_pri(target, priority))],
                           args=[envelope, rerouted(envelope, target, without)], client=pipe)
                moved += [m for m, done in zip(batch, pipe.execute(), strict=True) if done]
        return moved
    def poll(self, names: Iterable[str] = (), listing_reuse: float = 0.0) -> QueuePoll:
        channel: Any = self.connection.default_channel
        raw = _unprefixed_keys(channel)
        ordered = sorted({name for name in names if not is_dead_letter_queue(name)}
                         | self._recent_bound_queues(channel, listing_reuse))
        with channel.client.pipeline(transaction=False) as pipe:
            for name in ordered:
                keys = self.priority_keys(channel, name)
                for key in keys:
                    pipe.llen(key)
                for key in keys:
                    pipe.lindex(raw(key), -1)  # kombu pushes on the left, pops on the right
                for key in self.priority_keys(channel, dead_letter_queue_name(name)):
                    pipe.llen(key)
                pipe.zcard(raw(DELAYED_KEY.format(queue=name)))
            pipe.hgetall(raw(PAUSED_KEY))
            replies = iter(pipe.execute())
        queues, dead, heads = [], {}, {}
        for name in ordered:
            steps = len(self.priority_keys(channel, name))
            depth = sum(next(replies) for _ in range(steps))
            found = [_envelope_head(raw) for raw in (next(replies) for _ in range(steps))
                     if raw is not None]
            dead_depth = sum(next(replies) for _ in range(steps))
            queues.append(QueueInfo(name, depth, scheduled=int(next(replies))))
            if found:
                heads[name] = found
            if dead_depth:
                dead[name] = dead_depth
        return QueuePoll(queues, dead, heads, _pauses(next(replies)))

    def pauses(self) -> dict[str, Pause]:
        channel: Any = self.connection.default_channel
        client = channel.client
        found = _pauses(client.hgetall(_unprefixed_keys(channel)(PAUSED_KEY)))
        if not found:
            return {}
        with client.pipeline(transaction=False) as pipe:
            for queue in found:
                pipe.smembers(PAUSED_CONSUMERS_KEY.format(queue=queue))
            members = pipe.execute()
        return {queue: _with_consumers(pause, hosts)
                for (queue, pause), hosts in zip(found.items(), members, strict=True)}

    def pause(self, pause: Pause) -> Pause:
        record = json.dumps({"since": pause.since, "by": pause.by})
        channel: Any = self.connection.default_channel
        client = channel.client
        consumers = PAUSED_CONSUMERS_KEY.format(queue=pause.queue)
        with client.pipeline(transaction=True) as pipe:
            pipe.hget(PAUSED_KEY, pause.queue)
            if pause.consumers:
                pipe.sadd(consumers, *pause.consumers)
            pipe.smembers(consumers)
            before, *_, hosts = pipe.execute()
        if before is None:
            client.hset(PAUSED_KEY, pause.queue, record)
            return _with_consumers(pause, hosts)
        return _with_consumers(_pause(pause.queue, before) or pause, hosts)

    def resume(self, queue: str) -> Pause | None:
        channel: Any = self.connection.default_channel
        client = channel.client
        consumers = PAUSED_CONSUMERS_KEY.format(queue=queue)
        with client.pipeline(transaction=True) as pipe:
            record, hosts, _, _ = (pipe.hget(PAUSED_KEY, queue).smembers(consumers)
                                   .hdel(PAUSED_KEY, queue).delete(consumers).execute())
        found = None if record is None else _pause(queue, record)
        return None if found is None else _with_consumers(found, hosts)

    def note_paused_consumer(self, queue: str, hostname: str) -> None:
        channel: Any = self.connection.default_channel
        raw = _unprefixed_keys(channel)
        channel.client.register_script(_NOTE_CONSUMER)(  # kombu prefixes the first key only
            keys=[PAUSED_KEY, raw(PAUSED_CONSUMERS_KEY.format(queue=queue))],
            args=[queue, hostname])

    @staticmethod
    def priority_keys(channel: Any, name: str) -> list[str]:
        """The lists holding one queue: its name for priority 0, then one per priority step."""
        return [name] + [f"{name}{channel.sep}{step}" for step in channel.priority_steps if step]

    def _recent_bound_queues(self, channel: Any, reuse: float) -> set[str]:
        """:meth:`_bound_queues`, an earlier answer reused if at most ``reuse`` seconds old."""
        url, now = self.connection.as_uri(include_password=True), time.monotonic()
        with self._discovery_lock:
            found = self._discovered.get(url)
        if found is not None and now - found[0] < reuse:
            return set(found[1])
        bound = {name for name in self._bound_queues(channel) if not is_dead_letter_queue(name)}
        with self._discovery_lock:
            self._discovered[url] = (now, frozenset(bound))
        return bound

    def _bound_queues(self, channel: Any) -> set[str]:
        """The queues in kombu's binding sets: SCAN pages for the sets' keys, then one
        pipelined SMEMBERS for all of them."""
        prefix = channel.global_keyprefix or ""
        client = channel.client
        keys = []
        for raw_key in client.scan_iter(match=f"{prefix}{self.BINDING_PREFIX}*", count=1000):
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            key = key[len(prefix):]
            exchange = key[len(self.BINDING_PREFIX):]
            if exchange != EVENT_QUEUE_PREFIX and not exchange.endswith(".pidbox"):
                keys.append(key)
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.smembers(key)  # the client adds the prefix itself
            bindings = pipe.execute()
        found: set[str] = set()
        for members in bindings:
            for member in members:
                text = member.decode() if isinstance(member, bytes) else member
                queue = text.split(channel.sep)[-1]
                if queue and not is_internal(queue):
                    found.add(queue)
        return found


def _envelope_head(raw: bytes | str) -> QueueHead:
    """The task id of a kombu Redis envelope (protocol v2 ``id`` header, else the correlation
    id) and the publish time a qtui client stamped on it; None for what a message of another
    shape does not say."""
    try:
        envelope = json.loads(raw)
    except ValueError:  # not kombu's JSON envelope: a message qtui cannot date
        return QueueHead(None)
    if not isinstance(envelope, Mapping):
        return QueueHead(None)
    headers, properties = envelope.get("headers"), envelope.get("properties")
    if not isinstance(headers, Mapping):
        headers = {}
    found = headers.get("id")
    if found is None and isinstance(properties, Mapping):
        found = properties.get("correlation_id")
    return QueueHead(found if isinstance(found, str) else None, sent_at_of(headers))


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



def _unprefixed_keys(channel: Any) -> Callable[[str], str]:
    """Adds the transport's ``global_keyprefix`` to a key, for the commands kombu's prefixing
    client passes through untouched (LINDEX, LRANGE, LREM, ZCARD, HGETALL, script keys after the
    first: see ``PREFIXED_SIMPLE_COMMANDS`` in kombu's Redis transport)."""
    prefix = channel.global_keyprefix or ""
    return lambda key: f"{prefix}{key}"


def _pauses(raw: Mapping[Any, Any]) -> dict[str, Pause]:
    """The ``qtui.paused`` hash read back (records that are not qtui's JSON are left out)."""
    found = {}
    for field_, value in raw.items():
        queue = field_.decode() if isinstance(field_, bytes) else str(field_)
        pause = _pause(queue, value)
        if pause is not None:
            found[queue] = pause
    return found


def _pause(queue: str, raw: bytes | str) -> Pause | None:
    try:
        record = json.loads(raw)
        return Pause(queue, float(record["since"]), str(record["by"]))
    except (ValueError, TypeError, KeyError):  # not a record qtui wrote: not a pause
        return None


def _with_consumers(pause: Pause, hosts: Iterable[bytes | str]) -> Pause:
    names = sorted(h.decode() if isinstance(h, bytes) else h for h in hosts)
    return Pause(pause.queue, pause.since, pause.by, tuple(names))
