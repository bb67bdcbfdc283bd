"""Queue inspection: which queues a broker holds, how many messages wait in each, who consumes.

One small interface, :class:`QueueInspector` (``queues()``, ``purge()``, and ``peek()``,
``delete()``, ``move()`` of single messages: :mod:`qtui.core.peek`), and one
implementation per broker family (``queues.py`` in each package under ``core/brokers/``),
because each answers the question differently:

- Redis: a queue is up to four lists (the name, then ``name\\x06\\x16{3,6,9}`` for priorities),
  LLEN summed; every queue kombu bound is listed in its ``_kombu.binding.<exchange>`` sets, so
  queues nobody consumes are found too. Redis cannot count consumers.
- AMQP: passive ``queue_declare`` gives messages and consumers of a named queue; with
  ``broker_management_url`` the RabbitMQ management API lists every queue of the vhost.
- qtui's embedded SQLite broker lists its queues and depths itself.
- Any other kombu transport: passive declare of the named queues (:class:`DeclaredQueues`).

Queues that exist only for the protocol (event receivers ``celeryev.*``, remote-control
``*.pidbox`` mailboxes and reply queues, ``rpc://`` result queues named by a UUID) are left out
of listings.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kombu import Connection
from kombu.exceptions import ChannelError

from . import delayed
from .brokers.family import family_for, transport_name
from .delayed import is_store_queue
from .events import EVENT_QUEUE_PREFIX
from .exceptions import QtuiError
from .pauses import Pause, PauseUnsupported
from .peek import PAGE, SUMMARY_SAMPLE, Peek, PeekError, Summary, WaitingMessage, summarize
from .protocol import DEAD_SUFFIX, dead_letter_queue_name, is_dead_letter_queue

if TYPE_CHECKING:
    from .app import App


#: Seconds a frequent poller (the console, the exporter) lets a listing of queues be reused.
LISTING_REUSE = 30.0


class QueueInspectionError(QtuiError):
    """The broker could not say what its queues hold; the message says where it failed."""


@dataclass(frozen=True)
class QueueInfo:
    """One queue: messages waiting (ready to deliver), consumers, messages delivered but not
    yet acknowledged, and ETA tasks held in the broker's delayed store (``scheduled``); None
    where the broker cannot tell."""

    name: str
    messages: int | None
    consumers: int | None = None
    unacked: int | None = None
    scheduled: int | None = None


@dataclass(frozen=True)
class QueueHead:
    """A message a queue delivers next: its task id, and when it was put in the queue where
    the broker records that or the message says so (qtui's ``x-qtui-sent-at`` header); None
    where neither does: then only the task's ``task-sent`` event can date it."""

    task_id: str | None
    enqueued_at: float | None = None


@dataclass(frozen=True)
class Age:
    """How long a queue's oldest waiting message has waited. ``exact``: dated by the broker or
    by the message's own publish time; False: inferred from its ``task-sent`` event."""

    seconds: float
    exact: bool


@dataclass
class QueuePoll:
    """One look at a broker's queues: each queue (with its ``scheduled`` count), the depth of
    its dead-letter queue ``<queue>.dead`` where it has one, the heads of those that hold
    messages, and the paused queues (``pause_error``: why they could not be read this time,
    then ``paused`` is empty and says nothing)."""

    queues: list[QueueInfo]
    dead: dict[str, int]
    heads: dict[str, list[QueueHead]]
    paused: dict[str, Pause] = field(default_factory=dict)
    pause_error: str = ""


def oldest_wait(messages: int | None, heads: Iterable[QueueHead],
                sent_at: Callable[[str], float | None], now: float) -> Age | None:
    """How long the oldest waiting message of a queue has waited: 0 when none waits; from when
    the broker or the message says it was enqueued (exact), else from when the task was sent
    (``sent_at`` of its id: its ``task-sent`` event; inferred); None when neither is known."""
    if messages == 0:
        return Age(0.0, exact=True)
    ages = []
    for head in heads:
        since, exact = head.enqueued_at, True
        if since is None and head.task_id is not None:
            since, exact = sent_at(head.task_id), False
        if since is not None:
            ages.append(Age(max(0.0, now - since), exact))
    return max(ages, key=lambda age: age.seconds) if ages else None


def oldest_age(messages: int | None, heads: Iterable[QueueHead],
               sent_at: Callable[[str], float | None], now: float) -> float | None:
    """Seconds the oldest waiting message of a queue has waited (:func:`oldest_wait`'s
    figure, exact or inferred); None when unknown."""
    wait = oldest_wait(messages, heads, sent_at, now)
    return None if wait is None else wait.seconds


def is_internal(name: str) -> bool:
    """Queues the protocol makes for itself: event receivers, pidbox mailboxes and replies,
    the reply queues of ``rpc://`` result backends, and the queues of qtui's delayed (ETA)
    store (counted as their task queue's ``scheduled``)."""
    return name.startswith(f"{EVENT_QUEUE_PREFIX}.") or name.endswith(".pidbox") \
        or is_rpc_reply_queue(name) or is_store_queue(name)


def is_rpc_reply_queue(name: str) -> bool:
    """``rpc://`` clients (qtui's and Celery's) name their reply queue by a bare UUID."""
    if len(name) != 36:
        return False
    try:
        return str(uuid.UUID(name)) == name.lower()
    except ValueError:  # not a UUID: a user's queue
        return False


class QueueInspector(ABC):
    """Reads queue depths from one broker connection; use as a context manager."""

    lists_all: bool = False
    """Whether :meth:`queues` finds queues nobody named (False: only the names given)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def __enter__(self) -> QueueInspector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.release()

    @abstractmethod
    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        """Every queue the broker lists, plus each of ``names`` (0 messages if it has none),
        sorted by name."""

    def heads(self, names: Iterable[str]) -> dict[str, list[QueueHead]]:
        """The next message of each named queue (one per priority list where a broker keeps
        several); a queue this broker cannot look into without taking a message (AMQP) is
        left out."""
        return {}

    def poll(self, names: Iterable[str] = (), listing_reuse: float = 0.0) -> QueuePoll:
        """Everything the Queues view shows of the listed queues and ``names``: depths,
        scheduled counts, dead-letter depths, heads and pauses. A broker family may answer it
        in fewer round trips than the separate reads below (Redis: one), and reuse its listing
        of the broker's queues for up to ``listing_reuse`` seconds (a poller that asks often
        passes :data:`LISTING_REUSE`; queues in ``names`` are always read). Pauses that
        cannot be read leave the rest of the poll standing (:attr:`QueuePoll.pause_error`)."""
        paused: dict[str, Pause] = {}
        pause_error = ""
        try:
            paused = self.pauses()
        except PauseUnsupported:  # nothing can be paused on this broker
            pass
        except (QueueInspectionError, ChannelError) as exc:  # e.g. no read permission on them
            pause_error = f"pauses unknown: {exc}"
        # a paused queue is shown even where only named queues are (nobody consumes it now)
        wanted = {name for name in [*names, *paused] if not is_dead_letter_queue(name)}
        found = self.queues(wanted | {dead_letter_queue_name(name) for name in wanted})
        queues = [q for q in found if not is_dead_letter_queue(q.name)]
        dead = {q.name[:-len(DEAD_SUFFIX)]: q.messages for q in found
                if is_dead_letter_queue(q.name) and q.messages is not None}
        queues = self.with_scheduled(queues)
        return QueuePoll(queues, dead, self.heads(q.name for q in queues if q.messages), paused,
                         pause_error)

    # pauses (see qtui.core.pauses): kept by the families whose broker has a place for them
    def pauses(self) -> dict[str, Pause]:
        """Every paused queue's :class:`Pause`, by queue."""
        raise PauseUnsupported(self._no_pauses())

    def pause(self, pause: Pause) -> Pause:
        """Store ``pause`` (a queue paused already keeps its first record, with the new
        consumers added); returns the stored pause."""
        raise PauseUnsupported(self._no_pauses())

    def resume(self, queue: str) -> Pause | None:
        """Remove the pause of ``queue``; returns it (None: it was not paused)."""
        raise PauseUnsupported(self._no_pauses())

    def note_paused_consumer(self, queue: str, hostname: str) -> None:
        """Note a worker to give the paused ``queue`` back to on resume."""
        raise PauseUnsupported(self._no_pauses())

    def _no_pauses(self) -> str:
        return (f"{transport_name(self.connection)} brokers cannot keep a queue's pause "
                "where every worker would read it (Redis, RabbitMQ and the embedded broker "
                "can): use `qtui control cancel_consumer QUEUE` to stop the running workers "
                "instead")

    def with_scheduled(self, queues: list[QueueInfo]) -> list[QueueInfo]:
        """``queues`` with the number of ETA tasks the broker's delayed store holds for each
        (None on a broker without one)."""
        counts = delayed.counts(self.connection, [q.name for q in queues])
        return [replace(q, scheduled=counts.get(q.name)) for q in queues]

    def purge_scheduled(self, name: str) -> int:
        """Discard the ETA tasks of a queue held in the broker's delayed store; returns how
        many (0 on a broker without one)."""
        reader = delayed.delayed_for(self.connection)
        return 0 if reader is None else reader.purge(name)

    def purge(self, name: str) -> int:
        """Remove every waiting message of a queue; returns how many. An absent queue has none."""
        channel = self.connection.channel()
        try:
            return channel.queue_purge(name) or 0
        except ChannelError as exc:
            if _not_found(exc):
                return 0
            raise
        finally:
            _close_quietly(channel)

    peek_method = "cannot look into a queue on this transport"
    """What :meth:`peek` does to the queue, in words, for the view and the CLI to say."""

    def peek(self, name: str, offset: int = 0, limit: int = PAGE) -> Peek:
        """Up to ``limit`` waiting messages of ``name`` from position ``offset`` (0 is the
        next to be delivered), in delivery order."""
        raise PeekError(f"qtui cannot look into queues on the {transport_name(self.connection)} "
                        "transport (it can on Redis, RabbitMQ and its embedded SQLite broker)")

    def summary(self, name: str, sample: int = SUMMARY_SAMPLE) -> Summary:
        """The first ``sample`` waiting messages counted by task name."""
        return summarize(self.peek(name, 0, sample).messages, sample)

    def delete(self, name: str, messages: Sequence[WaitingMessage]) -> int:
        """Remove these peeked messages from ``name``; returns how many were still there."""
        raise PeekError("qtui cannot delete one message on the "
                        f"{transport_name(self.connection)} transport")

    def move(self, name: str, messages: Sequence[WaitingMessage], to: Callable[
            [WaitingMessage], str], without_headers: Iterable[str] = ()) -> int:
        """Move these peeked messages from ``name`` to the back of queue ``to(message)``,
        without ``without_headers`` (a requeued dead letter loses its death record); returns
        how many were still there to move."""
        return len(self.move_found(name, messages, to, without_headers))

    def move_found(self, name: str, messages: Sequence[WaitingMessage], to: Callable[
            [WaitingMessage], str], without_headers: Iterable[str] = ()) -> list[WaitingMessage]:
        """:meth:`move`, returning which of ``messages`` were still there and moved."""
        raise PeekError("qtui cannot move one message on the "
                        f"{transport_name(self.connection)} transport")

def _not_found(exc: ChannelError) -> bool:
    """404: AMQP's (and kombu's virtual transports') way to say there is no such queue."""
    return str(getattr(exc, "reply_code", "")) == "404"


def queue_exists(connection: Connection, name: str) -> bool:
    """Whether the broker has a queue ``name`` (a passive declare, on a channel of its own; on
    kombu's virtual transports an empty queue counts as none)."""
    channel = connection.channel()
    try:
        channel.queue_declare(queue=name, passive=True)
        return True
    except ChannelError as exc:
        if _not_found(exc):
            return False
        raise
    finally:
        _close_quietly(channel)


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # noqa: BLE001 - a channel the broker already closed (404) is fine
        pass


class DeclaredQueues(QueueInspector):
    """Passive ``queue_declare`` of named queues: messages, and consumers where the broker
    counts them (AMQP does; kombu's virtual transports always say 0, reported as unknown)."""

    counts_consumers = False

    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        return sorted((self._declare(name) for name in set(names)), key=lambda q: q.name)

    def _declare(self, name: str) -> QueueInfo:
        channel = self.connection.channel()
        try:
            ok = channel.queue_declare(queue=name, passive=True)
        except ChannelError as exc:
            if _not_found(exc):  # no such queue: nothing waits in it
                return QueueInfo(name, 0, 0 if self.counts_consumers else None)
            raise
        finally:
            _close_quietly(channel)
        return QueueInfo(name, ok.message_count,
                         ok.consumer_count if self.counts_consumers else None)


def inspector_for(app: App, connection: Connection | None = None) -> QueueInspector:
    """The inspector of the app's broker family (or the given connection's)."""
    conn = connection.clone() if connection is not None else app.connection_for_read()
    return family_for(conn).queue_inspector(conn, app.conf.broker_management_url)
