"""What the rest of qtui asks of a Redis broker
(:class:`~qtui.core.brokers.family.BrokerFamily`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from kombu import Connection

from ..family import BrokerFamily
from .delayed import RedisDelayed
from .queues import RedisQueues
from .refusals import describe

#: The visibility timeout of a worker's connection unless the user sets one: the TTL of a
#: worker's life when its liveness helper dies with it (see :mod:`qtui.workers.leases`).
WORKER_VISIBILITY_TIMEOUT = 60.0


class RedisFamily(BrokerFamily):
    """Redis: delivery tags are keys in Redis, valid on any connection; the worker owns its
    deliveries (:mod:`.worker_channel`); events and remote control ride PUBLISH (fanout)."""

    event_exchange_type = "fanout"
    keeps_deliveries = True
    owns_deliveries = True
    polls_with_waits = True
    stores_envelopes = True
    worker_transport_options: Mapping[str, Any] = {
        "visibility_timeout": WORKER_VISIBILITY_TIMEOUT}

    def retried_errors(self) -> tuple[type[BaseException], ...]:
        # Redis refusing writes (out of memory, a replica after a failover, a failed snapshot)
        # answers with an error reply, not a broken connection.
        return (redis.exceptions.ResponseError,)

    def refusal(self, error: BaseException) -> str | None:
        return describe(error)

    def write_refusals(self) -> tuple[type[BaseException], ...]:
        # Out of memory or read-only, Redis refuses a script at its first write: it stores
        # none of it (one that has written runs to the end).
        return (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)

    def queue_inspector(self, connection: Connection,
                        management_url: str | None = None) -> RedisQueues:
        return RedisQueues(connection)

    def delayed(self, connection: Connection) -> RedisDelayed:
        return RedisDelayed(connection)


REDIS = RedisFamily()
