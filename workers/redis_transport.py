"""kombu's Redis transport as the worker uses it: fewer round trips per message.

kombu's Redis channel spends three round trips on every message -- BRPOP one message, record it
as unacked (ZADD + HSET), ack it (ZREM + HDEL) -- and builds a new ``redis.Redis`` object for
each of the last two. On a queue with work waiting that is the whole cost of a no-op task. The
worker's channel adds two verbs and keeps kombu's data layout, so kombu (and Celery workers on
the same queues) restore, ack and inspect these messages as their own:

* :meth:`Channel.fetch_many` -- one Lua script acks the deliveries finished since the last call,
  pops up to N messages (priority sublists in kombu's order) and records each in
  ``unacked``/``unacked_index`` exactly as kombu's QoS does, atomically; the messages then go
  through kombu's usual delivery path to the consumer. A busy worker so spends one round trip
  per batch, whatever the batch holds.
* :meth:`Channel.ack_many` -- one pipeline acks a batch (when there is nothing to fetch).

A fetch whose reply is lost (Redis shut down or the connection broke after the script ran) has
still recorded its messages as unacked, for a worker that never received them: nothing renews
or settles them, so they would wait out the visibility timeout. Each fetch stamps its messages
with its own time, which the worker keeps when the call fails; after reconnecting,
:func:`qtui.workers.leases.reclaim` puts back what carries that stamp and is not held.

Blocking waits still use kombu's BRPOP, so an idle worker wakes at once. It builds on
:mod:`qtui.core.brokers.redis` (one command client per connection pool, one round trip per
published message).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import loads

from qtui.core.brokers import redis as redis_broker

_FETCH = """
for i = 4, 3 + tonumber(ARGV[3]) do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
local limit = tonumber(ARGV[1])
local out = {}
for i = 3, #KEYS do
  while #out < limit do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    local props = cjson.decode(item)['properties']
    local info = props['delivery_info']
    redis.call('ZADD', KEYS[1], ARGV[2], props['delivery_tag'])
    redis.call('HSET', KEYS[2], props['delivery_tag'], '[' .. item .. ',' ..
               cjson.encode(info['exchange']) .. ',' .. cjson.encode(info['routing_key']) .. ']')
    out[#out + 1] = item
  end
end
return out
"""


class QoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()
        """Tags fetch_many already recorded as unacked in Redis."""

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)


#: An idle worker's BRPOP wait (kombu's is 1 s). A shutdown waits for the pending BRPOP's reply
#: (a message it popped must not be dropped), so this bounds how long SIGTERM takes to act.
#: Redis takes fractions of a second from 6.0 on; older servers keep kombu's whole second.
BRPOP_TIMEOUT = 0.25


class Channel(redis_broker.Channel):
    QoS = QoS

    #: The stamp (``unacked_index`` score) of the last :meth:`fetch_many` call.
    fetch_stamp: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        version = str(self.client.info("server").get("redis_version", "0"))
        if int(version.split(".")[0] or 0) >= 6:
            self.brpop_timeout = BRPOP_TIMEOUT

    def fetch_many(self, queue: str, limit: int, acks: list[str] | None = None) -> int:
        """Ack ``acks``, then deliver up to ``limit`` waiting messages of ``queue`` to its
        consumer, all in one round trip; returns how many messages there were."""
        acks = acks or []
        self.fetch_stamp = None
        if limit <= 0 and not acks:
            return 0
        client = self._create_client()
        script = self._script("fetch", _FETCH)
        lists = [self._q_for_pri(queue, pri) for pri in self.priority_steps]
        self.fetch_stamp = time.time()
        items = script(keys=[self.unacked_index_key, self.unacked_key, *dict.fromkeys(lists)],
                       args=[max(limit, 0), self.fetch_stamp, len(acks), *acks], client=client)
        for tag in acks:
            virtual.QoS.ack(self.qos, tag)
        for item in items:
            payload = loads(item)
            self.qos.recorded.add(payload["properties"]["delivery_tag"])
            self.connection._deliver(payload, queue)
        return len(items)

    def ack_many(self, tags: Iterable[str]) -> None:
        """Ack a batch of deliveries in one pipeline."""
        tags = list(tags)
        if not tags:
            return
        self._create_client().pipeline(transaction=False) \
            .zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        for tag in tags:
            virtual.QoS.ack(self.qos, tag)


class Transport(redis_broker.Transport):
    Channel = Channel
