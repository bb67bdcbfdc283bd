"""Broker families: what the rest of qtui asks of a broker, answered once per kind of broker.

kombu hides most differences between brokers. What it does not hide -- how to count a queue's
messages, where ETA tasks wait, whether a delivery outlives its connection, which exchange type
events use -- each family answers here, behind one small interface, as Huey's storage classes
and kombu's virtual ``Channel`` do for theirs. A family is one package: ``redis/``, ``amqp/``,
``sqlite/`` (each with its ``family.py``, ``queues.py`` and ``delayed.py``); any other kombu
transport (``memory://``, ``filesystem://``, ...) gets :class:`BrokerFamily`'s own answers,
which are what plain kombu offers.

Queue operations belong to the family's queue inspector (its ``queues.py``, a
:class:`~qtui.core.queues.QueueInspector` beside ``queues()`` and ``purge()``): a poll with the
heads that date each queue's oldest message, the pause state kept in the family's own broker
(a Redis hash, tables of the SQLite file, a RabbitMQ stream; :mod:`qtui.core.pauses`), and
peeking at the first messages of a queue (``peek``, ``delete``, ``move``; :mod:`qtui.core.peek`).

:func:`family_for` is the one place that maps a transport (kombu's ``driver_type``) to its
family: callers ask the family, never the transport's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING, Any

from kombu import Connection, Queue

if TYPE_CHECKING:
    from ..delayed import DelayedTasks
    from ..queues import QueueInspector


class BrokerFamily:
    """One kind of broker. The defaults are any kombu transport's: nothing beyond kombu."""

    event_exchange_type = "topic"
    """The type of the ``celeryev`` exchange (Celery declares it fanout on Redis)."""

    keeps_deliveries = False
    """Delivery tags outlive the connection: what a lost connection delivered is settled
    through the next one (its channel's ``settle(tags, requeue)``), and running tasks keep
    their deliveries; False: the broker gives them back when the connection goes."""

    takes_back_held = False
    """The broker takes back a delivery held unacked too long (RabbitMQ's consumer_timeout)."""

    renews_leases = False
    """A delivery's visibility lease must be renewed while it is held (the worker's lease
    thread calls the channel's ``renew(tags)``)."""

    owns_deliveries = False
    """The worker takes deliveries as a named owner whose life a helper process vouches for
    (the channel's ``own`` and ``liveness_keys``; :mod:`qtui.workers.liveness`)."""

    polls_with_waits = False
    """The worker's channel polls what its blocking wait does not watch (other queues, priority
    sublists) in the write of each wait, while the worker tells it it is idle (the channel's
    ``idle``): its idle turns need not poll."""

    stores_envelopes = False
    """The broker stores kombu's virtual envelope and the transport's channel takes a batch of
    them at once (:class:`~.envelope.EnvelopeChannel`): a client builds each one in one pass
    and sends a batch in one round trip or one transaction."""

    worker_transport_options: Mapping[str, Any] = {}
    """Transport options a worker's connection starts from (the user's settings win)."""

    def confirms_batches(self, connection: Connection) -> bool:
        """Whether a batch sent on ``connection`` (open) is published whole and its publisher
        confirms awaited once (:func:`~.amqp.connection.publish_confirmed`), rather than one
        publish, and one wait, per message."""
        return False

    worker_transport: type[Any] | None = None
    """The kombu transport class a worker's consuming connection uses instead of the URL's
    (None: the URL's own)."""

    reading_transport: type[Any] | None = None
    """The kombu transport class a connection that receives what anyone may publish (events,
    queue peeks) uses instead of the URL's: one that reads a message it cannot decode with
    its error rather than raising out of the read (None: the URL's own)."""

    def for_reading(self, connection: Connection) -> Connection:
        """``connection``, or a clone over :attr:`reading_transport` (``connection`` released)."""
        if self.reading_transport is None:
            return connection
        reading: Connection = connection.clone(transport=self.reading_transport)
        connection.release()
        return reading

    def retried_errors(self) -> tuple[type[BaseException], ...]:
        """Errors with which a reachable broker refuses an operation for a while (out of memory,
        a read-only replica): a worker waits and reconnects, as for a lost connection."""
        return ()

    def refusal(self, error: BaseException) -> str | None:
        """What ``error`` says when it is the broker refusing operations for a while (one line
        for the worker's log, naming the error and its cause); None for anything else."""
        return None

    def write_refusals(self) -> tuple[type[BaseException], ...]:
        """Errors with which the broker refuses a write before storing any of it: a bulk send
        refused so names its batch not sent rather than in doubt."""
        return ()

    def queue_inspector(self, connection: Connection,
                        management_url: str | None = None) -> QueueInspector:
        """Queue depths through ``connection`` (owned by the inspector from now on)."""
        from ..queues import DeclaredQueues
        return DeclaredQueues(connection)

    def delayed(self, connection: Connection) -> DelayedTasks | None:
        """The broker's delayed (ETA) store, read through ``connection``; None: the broker has
        none (workers hold every ETA task themselves)."""
        return None

    def due_queue(self, queue: str, queue_type: str = "classic") -> Queue | None:
        """The queue a worker consuming ``queue`` consumes too, where due ETA tasks come back
        ahead of the backlog of ``queue``; None: they come back to ``queue`` itself."""
        return None


#: Any kombu transport without a family of its own.
KOMBU = BrokerFamily()


#: Where each family is, by its transports' ``driver_type``: the module and its family's name.
_FAMILIES = {"redis": (".redis.family", "REDIS"), "amqp": (".amqp.family", "AMQP"),
             "sqlite": (".sqlite.family", "SQLITE")}


def family_for(connection: Connection) -> BrokerFamily:
    """The family of ``connection``'s transport (the connection need not be open)."""
    return _family(connection.transport.driver_type)


@cache
def _family(driver_type: str) -> BrokerFamily:
    """The family of transports of ``driver_type``, its package imported on first use: only the
    families a process uses are loaded (redis-py with Redis's), and each family's package
    imports the interfaces (queues, delayed) that ask this module for the family."""
    if driver_type not in _FAMILIES:
        return KOMBU
    module, name = _FAMILIES[driver_type]
    family: BrokerFamily = getattr(import_module(module, __package__), name)
    return family


def transport_name(connection: Connection) -> str:
    """The transport's own name, as Celery's ``stats`` reports it (``redis``, ``amqp``, ...)."""
    return str(connection.transport.driver_type)
