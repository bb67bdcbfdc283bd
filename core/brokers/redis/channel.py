"""kombu's Redis transport with less work per message: what every qtui connection to Redis uses.

kombu's Redis channel builds a new ``redis.Redis`` client (with its ~170 response callbacks) for
every command, and publishing a message to an exchange costs two round trips: the exchange's
binding set (``SMEMBERS``), then an ``LPUSH`` to each queue it routes to. This channel keeps
kombu's data layout and routing rules, so kombu and Celery on the same Redis see nothing
different, and:

* keeps one command client per connection pool (redis-py clients are thread-safe);
* never restores other clients' deliveries by their age (see :class:`QoS`);
* publishes to a direct exchange in one round trip: a Lua script reads the binding set and pushes
  the message to every queue bound with its routing key (its priority list), atomically. The
  bindings are read at publish time as kombu reads them -- nothing is cached -- so a queue bound
  a moment ago by another process gets the message;
* can make its fanout subscriptions live at once (:meth:`Channel.subscribe_now`): kombu sends
  ``PSUBSCRIBE`` on the first poll, and a fanout message published before that is lost.

Topic and fanout exchanges, queues declared with an expiry, batches (``Producer.batch``) and
``global_keyprefix`` go through kombu's own code. The script touches queue keys it is not given
as ``KEYS`` (it learns them from the binding set), which plain Redis allows and Redis Cluster
does not -- kombu's transport does not support Redis Cluster either.
"""

from __future__ import annotations

import logging
import select
import socket
import time
import warnings
from collections.abc import Sequence
from queue import Empty
from typing import Any

import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual.base import UNDELIVERABLE_FMT, UndeliverableWarning
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps
from redis.sentinel import SentinelManagedConnection

from ..dropped import warn_dropped
from ..envelope import Envelope, NotAnEnvelope, ReadsEnvelopes, ReplyLost
from . import wire
from .urls import REDIS_SCHEMES, SENTINEL_SCHEME, scheme

#: Route a message as kombu's direct exchange does and push it, in one round trip.
#: KEYS[1] the exchange's binding set; ARGV: routing key, message, separator, priority suffix.
_PUBLISH_DIRECT = """
local sep = ARGV[3]
local pushed = {}
local count = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local first = string.find(member, sep, 1, true)
  if first and string.sub(member, 1, first - 1) == ARGV[1] then
    local second = string.find(member, sep, first + #sep, true)
    if second then
      local queue = string.sub(member, second + #sep)
      if not pushed[queue] then
        pushed[queue] = true
        redis.call('LPUSH', queue .. ARGV[4], ARGV[2])
        count = count + 1
      end
    end
  end
end
return count
"""

#: Push a batch of envelopes (:mod:`..envelope`) in one round trip, each routed as
#: :data:`_PUBLISH_DIRECT` routes one (a binding set is read once per batch). ARGV: the
#: separator, then runs of messages with one destination: the exchange's binding set ('' for
#: the default exchange: the routing key is the queue), routing key, priority suffix, how many
#: messages, the messages. One LPUSH takes many messages, first pushed first (as one LPUSH
#: each, in order). Returns the 1-based positions of the messages no queue was bound for.
_PUSH_ENVELOPES = """
local sep = ARGV[1]
local routes = {}
local unrouted = {}
local position = 0
local i = 2
while i <= #ARGV do
  local bindings, rkey, suffix = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local first = i + 4
  local last = first + tonumber(ARGV[i + 3]) - 1
  local queues
  if bindings == '' then
    queues = {rkey}
  else
    queues = routes[bindings .. sep .. rkey]
    if not queues then
      queues = {}
      local seen = {}
      for _, member in ipairs(redis.call('SMEMBERS', bindings)) do
        local at = string.find(member, sep, 1, true)
        if at and string.sub(member, 1, at - 1) == rkey then
          local second = string.find(member, sep, at + #sep, true)
          if second then
            local queue = string.sub(member, second + #sep)
            if not seen[queue] then
              seen[queue] = true
              table.insert(queues, queue)
            end
          end
        end
      end
      routes[bindings .. sep .. rkey] = queues
    end
  end
  if #queues == 0 then
    for n = 1, last - first + 1 do
      table.insert(unrouted, position + n)
    end
  end
  for _, queue in ipairs(queues) do
    for start = first, last, 1000 do
      redis.call('LPUSH', queue .. suffix, unpack(ARGV, start, math.min(start + 999, last)))
    end
  end
  position = position + last - first + 1
  i = last + 1
end
return unrouted
"""

logger = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """Never restore by age: kombu's restore (run whenever a consumer's poll comes back
        empty, the console's and ``qtui inspect``'s too) gives back every delivery of the
        database older than the visibility timeout, Celery workers' included. qtui workers
        give back only what dead qtui workers held (:mod:`.worker_channel`)."""


class Channel(ReadsEnvelopes, kombu_redis.Channel):
    QoS = QoS

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """kombu's get (the highest priority first), reading the item with :meth:`_item`."""
        with self.conn_or_acquire() as client:
            for priority in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, priority))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    return self._item(item, queue)
            self._maybe_update_queues_expire(client, queue)
            raise Empty()

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's read of a BRPOP reply, reading the item with :meth:`_item`."""
        try:
            try:
                found = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next poll connects again
                raise
            if not found:
                raise Empty()
            dest, item = found
            queue = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            self.connection._deliver(self._item(item, queue), queue)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu's own sets None too
            self._flush_brpop_reauth()

    def _item(self, item: bytes, queue: str) -> dict[str, Any]:
        """A queue item as kombu's envelope; Empty, with a warning, for one that is none
        (:func:`~..envelope.read_envelope`: built into a message it raises past every ``except``
        of kombu's loop; a control reply so made ended ``qtui inspect``). The worker's channel
        dead-letters such items of task queues before they come here."""
        try:
            return self.read_envelope(item)
        except NotAnEnvelope as exc:
            warn_dropped(logger, queue, f"Dropped a message of queue {queue!r}: {exc}")
            raise Empty() from None

    def _receive_one(self, c: Any) -> bool | None:
        """kombu's read of one reply of the subscription, with a published message (events,
        remote control: anyone can publish one) decoded once by
        :func:`~..envelope.read_envelope`; one that is no envelope is dropped with a warning
        (kombu would raise past its own ``except``, and the receiver's loop would end)."""
        try:
            response = c.parse_response()
        except self.connection_errors:
            self._in_listen = None  # type: ignore[assignment]  # kombu's own sets None too
            raise
        if not isinstance(response, (list, tuple)):
            return None
        payload = self._handle_message(c, response)  # redis-py's bookkeeping of unsubscribes
        if not bytes_to_str(payload["type"]).endswith("message") or not payload["data"]:
            return None
        channel = published_on = bytes_to_str(payload["channel"])
        if channel[0] == "/":  # the database prefix of fanout patterns: /{db}.exchange/key
            channel = channel.partition(".")[2]
        exchange = channel.split("/", 1)[0]
        try:
            message = self.read_envelope(payload["data"])
        except NotAnEnvelope as exc:
            warn_dropped(logger, exchange, f"Dropped a message published to exchange "
                                           f"{exchange!r} (Redis channel {published_on!r}): {exc}")
            return False  # not Empty: kombu's loop would leave the next replies read unhandled
        return bool(self._deliver_fanout_message(message, exchange))

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self.__dict__.get("_command_client")
        if cached is None or cached[0] is not pool:
            cached = self.__dict__["_command_client"] = (pool, super()._create_client())
        return cached[1]

    def _script(self, name: str, source: str) -> Any:
        """A registered Lua script (EVALSHA, loaded again if the server lost it)."""
        scripts = self.__dict__.setdefault("_scripts", {})
        if name not in scripts:
            scripts[name] = self._create_client().register_script(source)
        return scripts[name]

    def basic_publish(self, message: Any, exchange: str, routing_key: str, **kwargs: Any) -> Any:
        if (not exchange or kwargs.get("_publish_batch") is not None or self._expires
                or self.global_keyprefix or self.typeof(exchange).type != "direct"):
            return super().basic_publish(message, exchange, routing_key, **kwargs)
        self._inplace_augment_message(message, exchange, routing_key)
        priority = self.priority(self._get_message_priority(message, reverse=False))
        suffix = f"{self.sep}{priority}" if priority else ""
        client = self._create_client()
        pushed = self._script("publish_direct", _PUBLISH_DIRECT)(
            keys=[self.keyprefix_queue % (exchange,)],
            args=[routing_key, dumps(message), self.sep, suffix], client=client)
        if not pushed:
            self._undeliverable(exchange, routing_key,
                                self._get_message_priority(message, reverse=False),
                                dumps(message))
        return None

    def accepts_envelopes(self, exchange: str, routing_key: str) -> bool:
        """The default exchange or a direct one, on a connection without a key prefix, to a
        queue declared here without an expiry: what :meth:`put_envelopes` routes as kombu does."""
        if self.global_keyprefix:
            return False
        if not exchange:
            return not self._expires or routing_key not in self._expires
        return not self._expires and self.typeof(exchange).type == "direct"

    def put_envelopes(self, envelopes: Sequence[Envelope], deadline: float | None = None
                      ) -> None:
        """Push every envelope in one command: one round trip, all or none (one LPUSH, or a
        script, which Redis runs whole; one refused before its first write, out of memory,
        writes nothing). Envelopes for one queue and priority on the default exchange (a
        ``delay()``, most batches) take one LPUSH of them all, first pushed first, as one
        LPUSH each in order would push them; ``deadline`` bounds the wait for its reply (a
        script's waits as long as the connection's ``socket_timeout``)."""
        first = envelopes[0]
        if not first.exchange and all(
                not e.exchange and e.routing_key == first.routing_key
                and e.priority == first.priority for e in envelopes):
            self._push(self._q_for_pri(first.routing_key, self._priority_of(first)),
                       [e.payload for e in envelopes], deadline)
            return
        args: list[Any] = [self.sep]
        run: list[Any] = []  # the current run: exchange key, routing key, suffix, count, messages
        destination: tuple[str, str, str] | None = None
        suffixes: dict[int, str] = {}  # priority list suffix by message priority
        for envelope in envelopes:
            suffix = suffixes.get(envelope.priority)
            if suffix is None:
                level = self.priority(self._priority_of(envelope))
                suffix = suffixes[envelope.priority] = f"{self.sep}{level}" if level else ""
            if destination != (envelope.exchange, envelope.routing_key, suffix):
                destination = (envelope.exchange, envelope.routing_key, suffix)
                args += run
                run = [self.keyprefix_queue % (envelope.exchange,) if envelope.exchange else "",
                       envelope.routing_key, suffix, 0]
            run[3] += 1
            run.append(envelope.payload)
        args += run
        unrouted = self._script("push_envelopes", _PUSH_ENVELOPES)(
            keys=[], args=args, client=self._create_client())
        for position in unrouted:
            envelope = envelopes[int(position) - 1]
            self._undeliverable(envelope.exchange, envelope.routing_key, envelope.priority,
                                envelope.payload)

    def _push(self, key: str, payloads: list[str], deadline: float | None) -> None:
        """``LPUSH key *payloads`` on a connection of the pool that this channel keeps for its
        pushes: redis-py's command path (a pool checkout, retry and metrics hooks, for each
        command) costs more than the push. As a checkout does, a connection Redis closed
        meanwhile (a restart, an idle timeout) is opened again before the push is sent. A
        push that fails drops the connection (a reply may be left unread in it). The reply
        is awaited until ``deadline`` at most (TimeoutError past it); a connection that fails
        after the push went out raises :class:`ReplyLost`."""
        pool = self.pool
        held = self.__dict__.get("_push_connection")
        if held is None or held[0] is not pool:
            held = self.__dict__["_push_connection"] = (pool, pool.get_connection())
        connection = held[1]
        if _readable(connection):
            # connected again here: send_packed_command would, but to the same address, where
            # connect() asks a Sentinel pool for the master's
            connection.disconnect()
            connection.connect()
        command = wire.command(connection, ["LPUSH", key, *payloads])
        # a master Sentinel names may turn out a replica (a failover under way): pushed again
        retries = iter(_FAILOVER_WAITS if isinstance(connection, SentinelManagedConnection)
                       else ())
        try:
            while True:
                connection.send_packed_command([command])
                try:
                    wire.read_reply(connection, None if deadline is None
                                    else max(deadline - time.monotonic(), 0.001))
                except redis.exceptions.TimeoutError as exc:
                    raise TimeoutError(f"Redis did not answer the push in time: {exc}") from exc
                except redis.exceptions.ConnectionError as exc:
                    raise ReplyLost(f"the connection failed after the push went out: {exc}"
                                    ) from exc
                except redis.exceptions.ReadOnlyError:
                    # Nothing was written. Through Sentinel, the master this connection was
                    # made to is now a replica: connected again (the pool asks the sentinels
                    # for the master), it is pushed again, as redis-py's Sentinel connection
                    # and client retry such a command, for a little while within the deadline.
                    wait = next(retries, None)
                    if wait is None or (deadline is not None
                                        and time.monotonic() + wait >= deadline):
                        raise
                    connection.disconnect()
                    time.sleep(wait)
                    connection.connect()
                    continue
                break
        except BaseException:
            del self.__dict__["_push_connection"]
            connection.disconnect()
            pool.release(connection)
            raise

    def _priority_of(self, envelope: Envelope) -> int:
        """The envelope's priority clamped as kombu's channel clamps a message's."""
        return int(self._get_message_priority({"properties": {"priority": envelope.priority}},
                                              reverse=False))

    def _undeliverable(self, exchange: str, routing_key: str, priority: int,
                       payload: str) -> None:
        """What kombu does with a message no queue is bound for: into the dead-letter queue of
        the transport options, with a warning, when there is one; else nowhere."""
        if self.deadletter_queue is None:
            return
        warnings.warn(UndeliverableWarning(UNDELIVERABLE_FMT.format(
            exchange=exchange, routing_key=routing_key)), stacklevel=2)
        self._new_queue(self.deadletter_queue)
        self._create_client().lpush(self._q_for_pri(self.deadletter_queue, priority), payload)

    def subscribe_now(self, timeout: float) -> None:
        """Subscribe to the fanout queues consumed so far and wait until Redis confirms it, so
        that what is published from now on reaches them. kombu would subscribe on the first
        poll; this takes the poller's own path (it then finds the channel listening already).
        Raises ``redis.exceptions.TimeoutError`` when Redis does not confirm within
        ``timeout`` seconds."""
        topics = [topic for queue in self.active_fanout_queues
                  for topic in self._get_subscribe_topics(queue)]
        if not topics or self._in_listen:  # nothing to listen to, or kombu subscribed already
            return
        self.connection.cycle._register_LISTEN(self)  # connects, registers, sends PSUBSCRIBE
        # Redis answers one PSUBSCRIBE with a confirmation per pattern, before any message.
        unconfirmed = len(topics)
        deadline = time.monotonic() + timeout
        while unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.exceptions.TimeoutError(
                    f"Redis did not confirm the subscription to {', '.join(topics)} "
                    f"within {timeout}s")
            reply = self.subclient.parse_response(block=False, timeout=remaining)
            if isinstance(reply, (list, tuple)) and bytes_to_str(reply[0]) == "psubscribe":
                unconfirmed -= 1


def _readable(connection: Any) -> bool:
    """Whether an idle redis-py connection has something to read: the end of the stream (Redis
    closed it) or a stray reply; either way it cannot carry a command. Never waits: a plain
    socket is polled; any other (TLS) is asked through redis-py, which reads what TLS holds and
    raises for a connection Redis closed."""
    sock = connection._sock
    if sock is None:
        return False
    try:
        if type(sock) is socket.socket:
            poller = select.poll()  # not select(): it refuses a descriptor past 1023
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(connection.can_read(timeout=0))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return True  # closed, or broken: it cannot carry a command either


#: Seconds between pushes through Sentinel that a replica refused (a failover under way).
_FAILOVER_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8)


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """qtui's channel on the master a Redis Sentinel names: kombu's Sentinel connection pool
    (it asks the sentinels for the master on every new connection, so a failover is followed
    once the old master's connections fail) under qtui's sends and reads."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


class _Connection(Connection):
    """kombu's Connection, keeping the transport class it is given for a ``redis+socket://``
    URL: kombu takes the URL's prefix (``redis``) for the transport, on every clone too."""

    def __init__(self, hostname: Any = "localhost", transport: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(hostname, transport=transport, **kwargs)
        self._kept_transport = None
        if transport is not None and not isinstance(transport, str):
            self.transport_cls = self._kept_transport = transport

    def switch(self, conn_str: str) -> None:
        """kombu's switch to the next failover URL, keeping the transport class: kombu re-parses
        the URL and would put its own ``redis`` transport (without qtui's channel) back."""
        super().switch(conn_str)
        if self._kept_transport is not None:
            self.transport_cls = self._kept_transport


def connection(url: str, transport: type[kombu_redis.Transport] = Transport,
               sentinel_transport: type[kombu_redis.Transport] = SentinelTransport,
               **kwargs: Any) -> Connection:
    """A kombu Connection to ``url``; a Redis one (:data:`REDIS_SCHEMES`) uses ``transport``,
    a Sentinel one ``sentinel_transport`` (qtui's channels unless told otherwise), every other
    URL its usual kombu transport."""
    conn = Connection(url, **kwargs)
    if scheme(url) == SENTINEL_SCHEME:
        transport = sentinel_transport
    elif scheme(url) not in REDIS_SCHEMES:
        return conn
    return _Connection(url, transport=transport, ssl=conn.ssl, **kwargs)
