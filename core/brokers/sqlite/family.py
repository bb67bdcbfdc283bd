"""What the rest of qtui asks of the embedded broker
(:class:`~qtui.core.brokers.family.BrokerFamily`)."""

from __future__ import annotations

from kombu import Connection, Queue

from ..family import BrokerFamily
from .delayed import SqliteDelayed, sqlite_due_queue
from .queues import SqliteQueues


class SqliteFamily(BrokerFamily):
    """The embedded broker: a delivery is a row held by this process, valid on any connection
    to the file, whose visibility lease the worker renews."""

    keeps_deliveries = True
    renews_leases = True
    stores_envelopes = True

    def queue_inspector(self, connection: Connection,
                        management_url: str | None = None) -> SqliteQueues:
        return SqliteQueues(connection)

    def delayed(self, connection: Connection) -> SqliteDelayed:
        return SqliteDelayed(connection)

    def due_queue(self, queue: str, queue_type: str = "classic") -> Queue:
        return sqlite_due_queue(queue)


SQLITE = SqliteFamily()
