"""Paused queues on RabbitMQ (:mod:`qtui.core.pauses`): an append-only log in a stream queue.

A pause must be kept where every worker and console of the cluster reads it, and on RabbitMQ
that is a queue; an ordinary queue gives each message to one reader, which takes it away. A
*stream* queue (``x-queue-type: stream``, RabbitMQ 3.9 and later) keeps its messages: any
number of consumers read it from an offset, and nothing is consumed away. So the pauses are the
stream ``qtui.paused``, and each record in it holds the *whole* current pause set (queue ->
since, by, consumers), not a change: the last record alone says what is paused, which keeps a
read to one message and makes the stream's truncation harmless (RabbitMQ drops whole old
segments past ``x-max-length-bytes``; the last segment, with the last record, always stays).

Writers (pause, resume, a worker noting itself for the resume) read the last record, change it
and append the new set while holding an exclusive queue, ``qtui.paused.lock``: RabbitMQ lets
one connection at a time declare it, and deletes it when that connection goes, so a writer that
dies never leaves it held. Each change runs on a connection of its own with a heartbeat, so a
writer that freezes holding the lock loses it (and cannot append after) once RabbitMQ misses
its heartbeats. Writers are one at a time and wait for the broker's confirm of each record, so
each record is a chunk of its own and a read from offset ``last`` (the last chunk) starts at
the last record. A change that changes nothing writes nothing, not even the stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import amqp
from amqp.exceptions import PreconditionFailed, ResourceLocked
from kombu import Connection
from kombu.exceptions import ChannelError

from ...pauses import Pause
from ...queues import QueueInspectionError, _close_quietly, queue_exists

#: The stream of pause records, one per vhost (the cluster's).
PAUSE_STREAM = "qtui.paused"
#: Its size bound (``x-max-length-bytes``) and segment size (``x-stream-max-segment-size-bytes``;
#: RabbitMQ's default, 500 MB, would keep every record for ever). A record of a few paused
#: queues is a few hundred bytes, so a segment rolls once in tens of thousands of changes: on
#: RabbitMQ 3.10.8 the stream's retention crashed (``osiris_retention``, ``missing_file``) and,
#: after a few crashes, took the node down when segments rolled every few records (or a stream
#: was deleted just after a roll), and 100 kB segments rolled every few hundred changes. Only
#: the last record is read, so the size of the log costs a read nothing. These sizes apply to
#: a stream made from now on; one made before keeps its own until it is deleted.
MAX_BYTES = 20_000_000
SEGMENT_BYTES = 10_000_000
#: Seconds a read waits for the last record of a stream once its consumer is set up, and a
#: writer for the lock.
READ_TIMEOUT = 5.0
LOCK_TIMEOUT = 10.0
#: Seconds a read retries setting up its consumer while the node answers 406 (a stream declared
#: a moment ago not started here yet; for good: no replica of it on this node of a cluster).
CONSUME_TIMEOUT = 2.0
#: The heartbeat (seconds) of a writer's connection: RabbitMQ closes it, and so frees the lock,
#: when a writer frozen while holding it sends nothing for about that long. A change takes well
#: under it (a read, a declare, a confirmed publish).
LOCK_HEARTBEAT = 30

Pauses = dict[str, Pause]
T = TypeVar("T")


class PausesUnavailable(QueueInspectionError):
    """RabbitMQ cannot give or take the pause set for now (the stream's node is not ready, it
    sends no record, or another writer holds the lock too long): a worker connecting waits and
    tries again rather than consume a queue that may be paused."""


def is_pause_queue(name: str) -> bool:
    """The stream of pauses and its writers' lock: qtui's own, left out of queue listings."""
    return name in (PAUSE_STREAM, lock_name(PAUSE_STREAM))


def lock_name(stream: str) -> str:
    """The exclusive queue a writer of ``stream`` holds while it appends."""
    return f"{stream}.lock"


class PauseStream:
    """The pause set kept in one stream queue, read and changed through ``connection`` (which
    the caller owns)."""

    def __init__(self, connection: Connection, name: str = PAUSE_STREAM,
                 max_bytes: int = MAX_BYTES, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.connection = connection
        self.name = name
        self.arguments = {"x-queue-type": "stream", "x-max-length-bytes": max_bytes,
                          "x-stream-max-segment-size-bytes": segment_bytes}

    def read(self) -> Pauses:
        """The current pause set: the stream's last record (none when there is no stream)."""
        if not queue_exists(self.connection, self.name):
            return {}
        return self._last()

    def change(self, edit: Callable[[Pauses], Pauses]) -> Pauses:
        """Append ``edit`` of the current set, one writer at a time, on a connection of its own
        (:data:`LOCK_HEARTBEAT`); returns the new set. An edit that changes nothing appends
        nothing and makes no stream (a worker noted already does not grow the log at each
        reconnect; a resume of a queue not paused leaves no empty stream behind)."""
        with self.connection.clone(heartbeat=LOCK_HEARTBEAT) as writing:
            return self._on(writing)._change(edit)

    def _on(self, connection: Connection) -> PauseStream:
        """This stream, read and changed through ``connection``."""
        other = PauseStream(connection, self.name)
        other.arguments = dict(self.arguments)
        return other

    def _change(self, edit: Callable[[Pauses], Pauses]) -> Pauses:
        with self._locked() as channel:
            exists = queue_exists(self.connection, self.name)
            current = self._last() if exists else {}
            changed = edit(dict(current))
            if changed != current:
                if not exists:
                    self._create()
                channel.basic_publish_confirm(  # waits for the broker's confirm
                    amqp.Message(_record(changed), content_type="application/json",
                                 delivery_mode=2),
                    exchange="", routing_key=self.name, mandatory=True,
                    confirm_timeout=LOCK_TIMEOUT)
            return changed

    def delete(self) -> None:
        """Remove the stream, with every pause in it."""
        channel = self.connection.channel()
        try:
            channel.queue_delete(self.name)
        finally:
            _close_quietly(channel)

    def first_offset(self) -> int | None:
        """The offset of the oldest record RabbitMQ still keeps (None: none), to see truncation."""
        return self._first_delivered("first", lambda message: int(
            message.headers["x-stream-offset"]))

    def _last(self) -> Pauses:
        """The last record of a stream that exists. None coming is not taken as "no pause": a
        writer would then drop every pause, a worker consume paused queues."""
        found = self._first_delivered("last", lambda message: _pauses(message.body))
        if found is None:
            raise PausesUnavailable(
                f"RabbitMQ sent no record of the stream {self.name!r} within {READ_TIMEOUT:.0f}s "
                "(a node slow to answer, or a stream left empty by a writer that died as it "
                "made it). Deleting the stream resumes EVERY paused queue: only if it stays "
                f"so, and `rabbitmqctl list_queues name messages` shows {self.name} with 0 "
                f"messages (a count a few seconds old), `rabbitmqctl delete_queue {self.name}`, "
                "then pause again what should be paused")
        return found

    def _first_delivered(self, offset: str, take: Callable[[amqp.Message], T]) -> T | None:
        """``take`` of the first record delivered from ``offset`` within :data:`READ_TIMEOUT`
        of its consumer's setup (a deadline of its own); None when none came."""
        delivered: list[amqp.Message] = []
        channel = self._consumer(offset, delivered.append)
        deadline = time.monotonic() + READ_TIMEOUT
        try:
            while not delivered and (left := deadline - time.monotonic()) > 0:
                try:
                    self.connection.drain_events(timeout=left)
                except TimeoutError:  # nothing came in time: the caller says what that means
                    break
        finally:
            _close_quietly(channel)
        return take(delivered[0]) if delivered else None

    def _consumer(self, offset: str, callback: Callable[[amqp.Message], Any]) -> Any:
        """A channel consuming the stream from ``offset``. A stream declared a moment ago may
        not have started on this node yet (406, "does not have a replica on the local node"):
        that is retried for :data:`CONSUME_TIMEOUT`, with a growing pause between tries. A node
        of a cluster without a replica answers so for ever: then the error says what to do."""
        deadline, pause = time.monotonic() + CONSUME_TIMEOUT, 0.02
        while True:
            channel = self.connection.channel()
            try:
                channel.basic_qos(0, 1, False)  # a stream consumer needs a prefetch; one will do
                channel.basic_consume(self.name, callback=callback,
                                      arguments={"x-stream-offset": offset})
                return channel
            except PreconditionFailed as exc:
                _close_quietly(channel)
                if time.monotonic() + pause > deadline:
                    raise PausesUnavailable(
                        f"RabbitMQ does not let the stream {self.name!r} be read here ({exc}). "
                        "A stream is read from a replica on the node the client is connected "
                        "to: in a cluster, every node needs one (`rabbitmq-streams "
                        f"add_replica {self.name} NODE`; `rabbitmq-streams "
                        f"stream_status {self.name}` lists them)") from exc
                time.sleep(pause)
                pause *= 2

    def _create(self) -> None:
        """Declare the stream (by a writer holding the lock, about to append its first
        record)."""
        channel = self.connection.channel()
        try:
            channel.queue_declare(queue=self.name, durable=True, auto_delete=False,
                                  arguments=self.arguments)
        except ChannelError as exc:
            raise QueueInspectionError(
                f"RabbitMQ would not make the stream {self.name!r} that keeps the pauses "
                f"({exc}): pausing on RabbitMQ needs streams (RabbitMQ 3.9 or later, feature "
                "flag stream_queue enabled), or use `qtui control cancel_consumer QUEUE` to "
                "stop the running workers instead") from exc
        finally:
            _close_quietly(channel)

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """A channel of the connection that holds the writers' lock until the block ends (the
        connection's end, a heartbeat missed included, ends it too)."""
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            channel = self.connection.channel()
            try:
                channel.queue_declare(queue=lock_name(self.name), exclusive=True,
                                      auto_delete=True)
                break
            except ResourceLocked:  # another writer holds it: wait for its turn
                _close_quietly(channel)
                if time.monotonic() > deadline:
                    raise PausesUnavailable(
                        f"another qtui has been changing the pauses (it holds the queue "
                        f"{lock_name(self.name)!r}) for {LOCK_TIMEOUT:.0f}s: try again; if it "
                        "stays, close the connection that holds it (RabbitMQ management "
                        "UI)") from None
                time.sleep(0.05)
        try:
            yield channel
        finally:
            try:
                channel.queue_delete(lock_name(self.name))
            finally:
                _close_quietly(channel)


def kept(pauses: Pauses, pause: Pause) -> Pauses:
    """``pauses`` with ``pause`` stored: a queue paused already keeps its first since and by,
    with ``pause``'s consumers added to its own."""
    first = pauses.get(pause.queue, pause)
    consumers = tuple(sorted({*first.consumers, *pause.consumers}))
    return {**pauses, pause.queue: Pause(pause.queue, first.since, first.by, consumers)}


def _record(pauses: Mapping[str, Pause]) -> bytes:
    return json.dumps({queue: {"since": p.since, "by": p.by, "consumers": list(p.consumers)}
                       for queue, p in sorted(pauses.items())}).encode()


def _pauses(body: bytes | str) -> Pauses:
    """A record read back (entries that are not qtui's are left out, as on Redis)."""
    try:
        record = json.loads(body)
    except ValueError:  # not a record qtui wrote: nothing in it is a pause
        return {}
    found = {}
    for queue, entry in (record.items() if isinstance(record, dict) else ()):
        try:
            found[queue] = Pause(queue, float(entry["since"]), str(entry["by"]),
                                 tuple(sorted(str(c) for c in entry.get("consumers", ()))))
        except (TypeError, KeyError, ValueError, AttributeError):  # not a record qtui wrote
            continue
    return found
