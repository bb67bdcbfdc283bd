"""kombu's Redis transport as the worker uses it: every message owned from the moment it leaves its
queue, fewer round trips per message.

kombu's Redis channel BRPOPs a message and only then records it as unacked (ZADD + HSET): a
worker killed between the two loses the message. Any consumer then restores every entry of the
database-wide ``unacked_index`` older than its visibility timeout, Celery workers' deliveries
included. The worker's channel keeps kombu's data layout (so kombu and Celery ack and inspect
these messages as their own) and changes who takes and who gives back:

* **Taking** is one server-side step. :meth:`Channel.fetch_many` is one Lua script that acks the
  deliveries finished since the last call, pops up to N messages round-robin over the worker's
  queues (priority sublists in kombu's order), and records each in ``unacked``/``unacked_index``
  and in the worker's own ``owned`` set, atomically. A popped item that is not a kombu envelope
  is wrapped and pushed to ``<queue>.dead`` with the reason, in the same script (a body kombu
  cannot decode, or JSON Python's decoder refuses where Lua's read it, by the worker right
  after, settled by the delivery tag the script returns beside the item:
  :meth:`Channel.read_fetch`). The same call records
  the starts of the batch the worker is about to run in the cluster ledger
  (:class:`~qtui.core.ledger.StartRecord`): sent before the batch starts
  (:meth:`Channel.send_fetch`), its reply read while it runs (a solo worker with the next task
  reserved reads it after it sent the next call: Redis has answered by then). A batch that
  starts with nothing to take or ack sends its record alone, one ``ZADD``.
* **Waiting** moves, then delivers at once. An idle worker blocks in ``BLMOVE``, which moves a
  message into the worker's processing list (not into the void), and delivers it straight from
  the wait's reply; a small script (:data:`_ADOPT`), sent without waiting for its reply, then
  moves it from there into ``unacked`` and ``owned``. An item that is not a plain kombu
  envelope (or whose body kombu cannot decode) is taken from there by the fetch script instead.
* **Giving back** is by ownership, never by age. Each worker is an owner with an ``alive`` key
  that a helper process (:mod:`qtui.workers.liveness`) refreshes, so a task holding the GIL
  cannot make its worker look dead. A worker restores only what dead owners hold (their
  ``owned`` deliveries and processing lists), never kombu's database-wide restore.

A fetch whose reply is lost (Redis shut down or the connection broke after the script ran) has
still recorded its messages as unacked and owned, for a worker that never received them, and an
idle wait's lost reply leaves its message in a processing list: after every lost connection
:meth:`Channel.reclaim_after_loss` puts back whatever the owner has and the worker does not hold.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from queue import Empty
from time import monotonic
from typing import Any, NamedTuple

from kombu.transport import virtual
from kombu.utils.json import dumps
from redis.exceptions import NoScriptError, ResponseError

from ...ledger import StartRecord
from ...protocol import (
    DEAD_QUEUE_HEADER,
    DEAD_REASON_HEADER,
    DEAD_SUFFIX,
    dead_letter_queue_name,
    json_loads,
)
from ..envelope import check_envelope, dead_letter_wrapping
from . import channel as redis_broker
from . import wire

logger = logging.getLogger("qtui.worker")

# An owner's (a worker's) keys on Redis.
OWNERS_KEY = "qtui.owners"
"""Every live or not yet restored owner, by id."""
ALIVE_KEY = "qtui.alive.{owner}"
"""Exists while the owner lives (a key with a TTL its liveness helper refreshes)."""
OWNED_KEY = "qtui.owned.{owner}"
"""The delivery tags the owner holds (also in kombu's ``unacked``)."""
PROCESSING_KEY = "qtui.processing.{owner}/{queue}"
"""Where the owner's idle wait moves a message of ``queue`` before it is recorded."""
PROCESSING_QUEUES_KEY = "qtui.processing.{owner}"
"""The queues the owner has a processing list for."""

#: How often a consumer looks for dead owners to restore (seconds).
RESTORE_INTERVAL = 1.0

#: The end of a queue item in kombu's layout: its ``properties`` whole, the last member of the
#: message, each a string without a quote or an escape, or a number, in kombu's order. From the
#: first :data:`_TAIL_START` in the item's last :data:`TAIL_WINDOW` bytes, the fetch script reads
#: the exchange, routing key and delivery tag there (a Lua pattern) instead of decoding the item:
#: a quote after a space is never inside a JSON string, so what it reads is the message's own
#: properties. The worker decodes the item and checks the rest
#: (:func:`~..envelope.check_envelope`); an item of any other layout is decoded by the script.
_TAIL_LUA = (', "properties": {"correlation_id": "[^"\\\\]*", "reply_to": "[^"\\\\]*", '
             '"delivery_mode": %d+, "delivery_info": {"exchange": "([^"\\\\]*)", '
             '"routing_key": "([^"\\\\]*)"}, "priority": %d+, "body_encoding": "base64", '
             '"delivery_tag": "([^"\\\\]*)"}}$')
_TAIL_START = ', "properties": {"correlation_id": "'
TAIL_WINDOW = 512

_FETCH = """
local b64chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = string.byte(data, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d = {math.floor(n / 262144) % 64, math.floor(n / 4096) % 64,
               math.floor(n / 64) % 64, n % 64}
    for j = 1, 4 do d[j] = string.sub(b64chars, d[j] + 1, d[j] + 1) end
    if not b then d[3] = '=' end
    if not c then d[4] = '=' end
    out[#out + 1] = table.concat(d)
  end
  return table.concat(out)
end
-- The delivery tag and the unacked record of an item, or nil and why it cannot be delivered as
-- a kombu message. Nothing here may raise: what the loop below popped is recorded after it.
-- A base64 body is checked by the worker (Channel.read_fetch), in C, not walked here. kombu's
-- layout is read at its end, not decoded (the worker checks the decoded message agrees).
local function envelope(item)
  local at = string.find(item, '@TAIL_START@', math.max(1, #item - @TAIL_WINDOW@), true)
  if at then
    local exchange, routing_key, tag = string.match(item, '^@TAIL@', at)
    if tag then return tag, '[' .. item .. ',"' .. exchange .. '","' .. routing_key .. '"]' end
  end
  local ok, msg = pcall(cjson.decode, item)
  if not ok or type(msg) ~= 'table' or msg[1] ~= nil then
    return nil, 'not a kombu message: not a JSON object' end
  if type(msg['body']) ~= 'string' then return nil, "not a kombu message: no 'body' string" end
  local props = msg['properties']
  if type(props) ~= 'table' then return nil, "not a kombu message: no 'properties' object" end
  -- a string: the key of its records (an integer tag, 7 and 7.0 alike to Lua, would share one)
  local tag = props['delivery_tag']
  if type(tag) ~= 'string' then
    return nil, "not a kombu message: no 'properties.delivery_tag' string" end
  if type(props['delivery_info']) ~= 'table' then
    return nil, "not a kombu message: no 'properties.delivery_info' object" end
  if msg['headers'] ~= nil and type(msg['headers']) ~= 'table' then
    return nil, "not a kombu message: 'headers' is not an object" end
  local info = props['delivery_info']
  local ok_exchange, exchange = pcall(cjson.encode, info['exchange'])
  local ok_key, routing_key = pcall(cjson.encode, info['routing_key'])
  if not (ok_exchange and ok_key) then
    return nil, "not a kombu message: 'properties.delivery_info' cannot be encoded" end
  return tag, '[' .. item .. ',' .. exchange .. ',' .. routing_key .. ']'
end
-- KEYS: unacked_index, unacked, owned, the ledger's started set, then per queue `size` lists:
--       its processing list (only when it may hold a message), its priority lists.
-- ARGV: limit, stamp, size, dead-letter tag prefix, #acks, #started, #settled, trim time (''
--       for none), '1' when RPOP takes a count (Redis 6.2), then acks, (expiry, key) per
--       started delivery, settled keys, the queue names.
-- Returns (group, delivery tag, item) per item taken, (-group, why, '') per item dead-lettered:
-- the worker settles a taken item it cannot decode by that tag, never decoding it again.
local limit, stamp, size = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local nacks, nstarted, nsettled = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
-- One command per key for values[first..last], in slices Lua's unpack can take.
local function each(command, key, first, last, step, values)
  for i = first, last, step do
    redis.call(command, key, unpack(values or ARGV, i, math.min(i + step - 1, last)))
  end
end
local at = 10
each('ZREM', KEYS[1], at, at + nacks - 1, 1000)
each('HDEL', KEYS[2], at, at + nacks - 1, 1000)
each('SREM', KEYS[3], at, at + nacks - 1, 1000)
at = at + nacks
each('ZADD', KEYS[4], at, at + 2 * nstarted - 1, 1000)
at = at + 2 * nstarted
each('ZREM', KEYS[4], at, at + nsettled - 1, 1000)
at = at + nsettled
if ARGV[8] ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[8]) end
local groups = (#KEYS - 4) / size
local names = at
local cursor = {}
for g = 1, groups do cursor[g] = 1 end
-- One queue: its lists are emptied in turn, several items a pop where Redis takes a count.
local many = groups == 1 and ARGV[9] == '1'
local out = {}
-- What is taken is recorded (unacked_index, unacked, owned) in one command each after the loop,
-- even when the loop fails half-way (a queue key of another type): nothing popped goes unrecorded.
local index, unacked, owned = {}, {}, {}
local function take()
  local taken, busy = 0, true
  while taken < limit and busy do
    busy = false
    for g = 1, groups do
      if taken >= limit then break end
      local items
      while cursor[g] <= size and not items do
        local list = KEYS[4 + (g - 1) * size + cursor[g]]
        if many then
          items = redis.call('RPOP', list, limit - taken)
        else
          items = redis.call('RPOP', list)
          if items then items = {items} end
        end
        if not items then cursor[g] = cursor[g] + 1 end
      end
      for _, item in ipairs(items or {}) do
        busy = true
        local tag, record = envelope(item)
        if not tag then
          local why = record
          local queue = ARGV[names + g - 1]
          local dead = queue .. '@DEAD_SUFFIX@'
          local headers = {}
          headers['@DEAD_REASON_HEADER@'] = why
          headers['@DEAD_QUEUE_HEADER@'] = queue
          redis.call('LPUSH', dead, cjson.encode({
            body = b64(item), ['content-encoding'] = 'binary',
            ['content-type'] = 'application/octet-stream', headers = headers,
            properties = {body_encoding = 'base64', delivery_mode = 2, priority = 0,
                          delivery_tag = ARGV[4] .. '-' .. #out,
                          delivery_info = {exchange = '', routing_key = dead}}}))
          out[#out + 1] = -g
          out[#out + 1] = why
          out[#out + 1] = ''
        else
          index[#index + 1] = stamp
          index[#index + 1] = tag
          unacked[#unacked + 1] = tag
          unacked[#unacked + 1] = record
          owned[#owned + 1] = tag
          out[#out + 1] = g
          out[#out + 1] = tag
          out[#out + 1] = item
          taken = taken + 1
        end
      end
    end
  end
end
local ok, err = pcall(take)
each('ZADD', KEYS[1], 1, #index, 1000, index)
each('HSET', KEYS[2], 1, #unacked, 1000, unacked)
each('SADD', KEYS[3], 1, #owned, 1000, owned)
if not ok then error(err) end
return out
""".replace("@DEAD_SUFFIX@", DEAD_SUFFIX).replace("@DEAD_REASON_HEADER@", DEAD_REASON_HEADER) \
    .replace("@DEAD_QUEUE_HEADER@", DEAD_QUEUE_HEADER).replace("@TAIL_WINDOW@", str(TAIL_WINDOW)) \
    .replace("@TAIL@", _TAIL_LUA).replace("@TAIL_START@", _TAIL_START)


# What an idle wait moved and the worker delivered from the wait's reply: recorded as unacked and
# owned, and taken off the processing list, in one step; 0 when it is no longer there (a
# restorer that found this worker dead gave it back meanwhile). Sent as EVAL (a few hundred
# bytes): Redis never answers that it lost the script after the calls behind it ran. Keys of
# another type refuse it before it changes anything.
_ADOPT = """
-- KEYS: the processing list, unacked_index, unacked, owned; ARGV: item, stamp, tag, record
local kinds = {'list', 'zset', 'hash', 'set'}
for i = 1, 4 do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= kinds[i] and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. kind)
  end
end
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[3])
return 1
"""


class _Item(NamedTuple):
    """A queue item in kombu's envelope, as the fetch script records it and the worker delivers
    it."""

    payload: dict[str, Any]
    """Its envelope."""
    tag: str
    """The key of its records: its delivery tag."""
    record: bytes
    """Its ``unacked`` record."""
    body: bytes | None
    """Its body decoded (see :func:`~..envelope.check_envelope`)."""


def _envelope(item: bytes) -> _Item | None:
    """A queue item as the fetch script's ``envelope`` takes it and the worker's check
    (:func:`~..envelope.check_envelope`) passes it; None for anything else, and for what that
    script rejects (an exchange or routing key JSON cannot encode back, such as infinity), left
    to the fetch script (which dead-letters what is not a kombu message)."""
    try:
        payload = json_loads(item)
        body = check_envelope(payload, fetched=True)
    except Exception:  # noqa: BLE001 - NotAnEnvelope, whatever Python's decode refuses
        return None
    properties = payload["properties"]
    tag, info = properties["delivery_tag"], properties.get("delivery_info")
    if not isinstance(info, dict):
        return None
    try:
        tag.encode()
    except UnicodeEncodeError:  # a lone surrogate (an escape Lua's JSON refuses): no Redis key
        return None
    try:
        exchange = json.dumps(info.get("exchange"), allow_nan=False).encode()
        routing_key = json.dumps(info.get("routing_key"), allow_nan=False).encode()
    except (TypeError, ValueError):  # what Lua's JSON cannot encode either
        return None
    return _Item(payload, tag, b"[%b,%b,%b]" % (item, exchange, routing_key), body)


def _decode_record(record: bytes) -> tuple[dict[str, Any], str, str]:
    """The payload, exchange and routing key of an ``unacked`` record, decoded as a fetched
    item is (kombu's restore replaced bytes that are not UTF-8, a delivery tag's too)."""
    payload, exchange, routing_key = json_loads(record)
    return payload, exchange, routing_key


def _tag(raw: bytes | str) -> str | bytes:
    """A delivery tag read from Redis as kombu knows it (a str); the bytes when they are not
    UTF-8 (a message's ``properties.delivery_tag`` Lua's JSON passed through): still the key of
    its records, to settle or restore it by, never delivered."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


@dataclass
class _Adoption:
    """An :data:`_ADOPT` call sent on the fetch connection, its reply not read yet."""

    tag: str


def _record_command(starts: StartRecord) -> list[Any]:
    """The ``ZADD`` that records ``starts`` (starts only) in the ledger."""
    return ["ZADD", starts.key, *(x for key, expires in starts.started.items()
                                  for x in (expires, key))]


@dataclass
class _PendingFetch:
    """A fetch call sent on ``conn`` (the channel's fetch connection), its reply not read yet."""

    conn: Any
    order: list[str]
    acks: list[str]
    keys: list[str]
    args: list[Any]
    script: bool = True
    """False: a plain command (a record of starts only), whose reply delivers nothing and is
    read with the next call's (see :meth:`Channel._read_unread`)."""
    during_wait: bool = False
    """Sent while an idle wait was under way: it may take what the wait moves."""
    given_back: int = 0
    """How many times the channel had given messages back when it was sent (see
    :meth:`Channel.gave_back`): one given back since may be in a list it found empty."""


class QoS(redis_broker.QoS):
    """kombu's QoS, but settling a delivery also drops it from the owner's ``owned`` set, and
    restoring gives back only what dead owners hold."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()
        """Tags fetch_many already recorded as unacked in Redis."""
        self._next_restore = 0.0

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self.channel.read_unread()  # the delivery's own record first, when it rides there
        super().ack(delivery_tag)

    def restore_by_tag(self, tag: str | bytes, client: Any = None,
                       leftmost: bool = False) -> None:
        """kombu's restore, a WATCH transaction on ``unacked``; a record Python cannot decode (a
        message Lua's JSON read, too deep or with too long an integer for Python's, or not
        UTF-8) is dead-lettered with the reason in the same transaction, its item kept whole:
        kombu's restore raised, and so every restorer did. Redis's errors are raised, the
        delivery left owned for the next try. ``tag`` is bytes when it is not UTF-8."""
        self.channel.read_unread()
        moved: list[tuple[str, str]] = []  # dead-letter queue and reason, of the try that ran

        def restore(pipe: Any) -> None:
            record = pipe.hget(self.unacked_key, tag)
            decoded = why = None
            moved.clear()
            if record:
                try:
                    decoded = _decode_record(record)
                except Exception as exc:  # noqa: BLE001 - whatever the decode of the record raises
                    why = f"not a kombu message: {exc}"
            pipe.multi()
            if why is not None:
                moved.extend((dead, why) for dead in
                             self.channel.dead_letter_record(pipe, tag, record, why))
                return
            self._remove_from_indices(tag, pipe)
            if decoded is not None:
                self.channel._do_restore_message(*decoded, pipe, leftmost)

        with self.channel.conn_or_acquire(client) as conn:
            conn.transaction(restore, self.unacked_key)
        self.channel.gave_back()
        for dead, why in moved:  # logged once it happened: a try that lost its WATCH did not
            logger.warning("Message moved to %s: %s", dead, why)

    def _remove_from_indices(self, delivery_tag: str | bytes, pipe: Any = None) -> Any:
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        owned = self.channel.owned_key
        return pipe if owned is None else pipe.srem(owned, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """What kombu calls to restore expired deliveries database-wide: here, the deliveries of
        dead owners only, at most every :data:`RESTORE_INTERVAL` seconds."""
        if self.channel.owner is None or monotonic() < self._next_restore:
            return
        self._next_restore = monotonic() + RESTORE_INTERVAL
        self.channel.restore_dead_owners()


#: An idle worker's blocking wait (kombu's BRPOP waits 1 s). A shutdown waits for the pending
#: wait's reply (a message it moved must be taken), so this bounds how long SIGTERM takes to act.
#: Redis takes fractions of a second from 6.0 on; older servers keep kombu's whole second. It is
#: the worker's idle turn too (``workers.worker.IDLE_WAIT``): a wait no longer than that may poll
#: in a turn's place (:meth:`Channel.send_fetch`).
BRPOP_TIMEOUT = 0.25
#: A fetch connection unused this long goes back to redis-py's pool, whose readiness check (a
#: poll) vets it before the next fetch: the server may have closed an idle connection.
FETCH_CONNECTION_IDLE = 1.0


class Channel(redis_broker.Channel):
    QoS = QoS

    owner: str | None = None
    """The worker that owns what this channel takes (see :meth:`own`); None: kombu's ways."""
    pipelines_fetches = True
    """A fetch may be sent before the reply to the one before is read (:meth:`read_fetch`
    reads the oldest)."""
    idle = False
    """Whether the worker runs and holds nothing (the worker says, each turn): then what the
    wait does not watch is polled with each wait (:meth:`_brpop_start`), not at each turn. A
    busy worker's turns poll as before: a poll's reply read in the main thread while a task
    runs in another would hold the GIL on that task's path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        version = str(self.client.info("server").get("redis_version", "0"))
        major, minor = (int(part or 0) for part in ([*version.split("."), "0"])[:2])
        if major >= 6:
            self.brpop_timeout = BRPOP_TIMEOUT
        self._blocking_move = "BLMOVE" if (major, minor) >= (6, 2) else "BRPOPLPUSH"
        self._pop_many = "1" if (major, minor) >= (6, 2) else ""
        """The fetch script's flag: RPOP takes a count (Redis 6.2)."""
        self._waiting_on: str | None = None
        """The queue a pending blocking move waits on."""
        self._pending_fetches: deque[_PendingFetch] = deque()
        """Fetches sent whose replies are not read yet, oldest first: a solo worker sends the
        next one before it reads the last (see :meth:`read_fetch`)."""
        self._packed: dict[tuple[str, ...], tuple[bytes, bytes]] = {}
        """The fetch script's unchanging arguments in Redis's wire format, by its keys (see
        :meth:`_pack_fetch`)."""
        self._tag_base = uuid.uuid4().hex
        self._fetches = 0
        self._fetch_conn: Any = None
        """The connection fetches ride while the worker is busy (see :meth:`_fetch_connection`)."""
        self._fetch_used_at = 0.0
        self._unread: deque[_Adoption | None] = deque()
        """Calls made on the fetch connection whose replies are not read yet, in order: start
        records (None: one ``ZADD`` each) and adoptions (see :meth:`_adopt`); read before the
        next call's, so that neither a start nor a delivery waits a round trip."""
        self._unsent: list[bytes] = []
        """Adoptions packed but not written yet (the last entries of :attr:`_unread`): they go
        out in the write of the next call on the fetch connection, or before any read of it."""
        self._adopt_packed: dict[str, bytes] = {}
        """:data:`_ADOPT`'s script and keys in Redis's wire format, by queue."""
        self._wait_packed: dict[tuple[str, float], bytes] = {}
        """The idle wait's command in Redis's wire format, by queue and timeout."""
        self._fetch_loaded = False
        self._unadopted: set[str] = set()
        """Delivery tags whose adoption Redis refused: their messages are still in a processing
        list, adopted again at the next idle turn (:meth:`_adopt_refused`); a fetch that takes
        one from there meanwhile records it, and does not deliver it again."""
        self._processing_known: set[str] = set()
        self._taken_while_waiting: set[str] = set()
        """Delivery tags of what fetches took while the pending wait was under way: the
        message the wait moved may be one of them, delivered already."""
        self._wait_poll: _PendingFetch | None = None
        """The fetch sent in the write of the pending wait (see :meth:`_brpop_start`), its
        reply not read yet."""
        self._polled_empty = False
        """The last fetch that could take found nothing, and nothing came since."""
        self._wait_polled = False
        """The pending wait's write carried a poll."""
        self._given_back = 0

    # ownership -------------------------------------------------------------------------------
    def own(self, owner: str, ttl: float) -> None:
        """Take and settle deliveries as ``owner``, announced alive for ``ttl`` seconds (its
        liveness helper keeps it so)."""
        self.owner = owner
        self._create_client().pipeline(transaction=False) \
            .set(ALIVE_KEY.format(owner=owner), "1", px=int(ttl * 1000)) \
            .sadd(OWNERS_KEY, owner).execute()

    @property
    def owned_key(self) -> str | None:
        return None if self.owner is None else OWNED_KEY.format(owner=self.owner)

    def restore_dead_owners(self) -> int:
        """Give back what owners whose ``alive`` key is gone held; returns how many messages.
        Every step is idempotent (a restore is a WATCH transaction, a move is atomic), so
        several consumers may restore one owner at once, and a restorer killed half-way leaves
        the owner registered for the next one to finish."""
        client = self._create_client()
        owners = [o.decode() if isinstance(o, bytes) else o for o in client.smembers(OWNERS_KEY)]
        owners = [o for o in owners if o != self.owner]
        if not owners:
            return 0
        pipe = client.pipeline(transaction=False)
        for owner in owners:
            pipe.exists(ALIVE_KEY.format(owner=owner))
        return sum(self._restore_owner(client, owner)
                   for owner, alive in zip(owners, pipe.execute(), strict=True) if not alive)

    def _restore_owner(self, client: Any, owner: str) -> int:
        restored = self._put_back_processing(client, owner)
        processing_queues = PROCESSING_QUEUES_KEY.format(owner=owner)
        owned = OWNED_KEY.format(owner=owner)
        for tag in client.smembers(owned):
            self.qos.restore_by_tag(_tag(tag), client)
            restored += 1
        client.pipeline(transaction=False).delete(owned, processing_queues) \
            .srem(OWNERS_KEY, owner).execute()
        if restored:
            logger.warning("Restored %d message(s) held by the dead worker %s", restored, owner)
        return restored

    def _put_back_processing(self, client: Any, owner: str) -> int:
        """Move what ``owner``'s idle waits moved and nobody took back to the consuming end of
        its queue, as it was (to the other end before Redis 6.2, which has no LMOVE); returns
        how many messages."""
        moved = 0
        for queue in client.smembers(PROCESSING_QUEUES_KEY.format(owner=owner)):
            queue = queue.decode() if isinstance(queue, bytes) else queue
            source = PROCESSING_KEY.format(owner=owner, queue=queue)
            while (client.lmove(source, queue, "RIGHT", "RIGHT")
                   if self._blocking_move == "BLMOVE"
                   else client.rpoplpush(source, queue)) is not None:
                moved += 1
        if moved:
            self.gave_back()
        return moved

    def reclaim_after_loss(self, held: Iterable[str]) -> int:
        """After a lost connection, put back everything this owner has on Redis and the worker
        does not hold, whichever call's reply was lost: what its set records
        (:meth:`reclaim_unheld`) and what an idle wait moved into its processing lists. Call it
        between fetches only. Returns how many came back."""
        if self.owner is None:
            return 0
        held = list(held)
        client = self._create_client()
        self._adopt_moved(client, held, self._unadopted.difference(held))
        self._unadopted.clear()
        return self.reclaim_unheld(held) + self._put_back_processing(client, self.owner)

    def _adopt_moved(self, client: Any, tags: list[str], settled: Iterable[str] = ()) -> None:
        """Adopt what this owner's processing lists still hold of ``tags``: delivered from an
        idle wait's reply, their adoption lost with a connection before Redis ran it (or
        refused). Called before such deliveries are settled or the lists given back, so a
        message that runs (or ran) here is neither put back nor left there; one of ``settled``
        (run and settled already) only leaves its list."""
        keep, drop = set(tags), set(settled)
        if not (keep or drop) or self.owner is None:
            return
        for queue in client.smembers(PROCESSING_QUEUES_KEY.format(owner=self.owner)):
            queue = queue.decode() if isinstance(queue, bytes) else queue
            processing = PROCESSING_KEY.format(owner=self.owner, queue=queue)
            for item in client.lrange(processing, 0, -1):
                found = _envelope(item)
                if found is not None and found.tag in keep:
                    self._script("adopt", _ADOPT)(keys=self._adopt_keys(self.owner, queue),
                                                  args=[item, time.time(), found.tag,
                                                        found.record], client=client)
                elif found is not None and found.tag in drop:
                    client.lrem(processing, -1, item)

    def _adopt_refused(self) -> None:
        """Adopt again the deliveries whose adoption Redis refused (see :meth:`_read_unread`),
        between fetches; refused again, they are tried at the next turn."""
        tags = set(self._unadopted)
        held = [tag for tag in tags if self._holds(tag)]
        try:
            self._adopt_moved(self._create_client(), held, tags.difference(held))
        except ResponseError as exc:
            logger.warning("Cannot record %d delivery(ies) as unacked (%s): tried again at the "
                           "next idle turn", len(tags), exc)
            return
        self._unadopted -= tags

    def _holds(self, tag: str) -> bool:
        """Whether ``tag`` is delivered and not settled yet (kombu's QoS drops what it acked
        from its deliveries only later)."""
        return tag in self.qos._delivered and tag not in self.qos._dirty

    def reclaim_unheld(self, held: Iterable[str]) -> int:
        """Put back, at the front of their queues, what this owner's set records and the worker
        does not hold: taken by a fetch whose reply never reached it (lost with its connection,
        or a reply to a first try that redis-py sent again). Call it between fetches only.
        Returns how many came back."""
        if self.owned_key is None:
            return 0
        keep = set(held)
        client = self._create_client()
        lost = [tag for tag in map(_tag, client.smembers(self.owned_key)) if tag not in keep]
        for tag in lost:
            self.qos.restore_by_tag(tag, client)
        return len(lost)

    # taking ----------------------------------------------------------------------------------
    def fetch_many(self, queues: list[str], limit: int, acks: list[str] | None = None,
                   starts: StartRecord | None = None, moved: bool = False) -> int:
        """Ack ``acks`` and write ``starts`` in the ledger, then deliver up to ``limit`` waiting
        messages of ``queues`` (one from each in turn) to their consumers, all in one round
        trip and one atomic step; returns how many there were."""
        return self.read_fetch() if self.send_fetch(queues, limit, acks, starts, moved) else 0

    def send_fetch(self, queues: list[str], limit: int, acks: list[str] | None = None,
                   starts: StartRecord | None = None, moved: bool = False) -> bool:
        """Send what :meth:`fetch_many` does without waiting for the reply (read it with
        :meth:`read_fetch`): the worker starts a batch meanwhile, whose record is then in
        Redis's hands. ``moved``: take what an idle wait moved into the processing list first
        (otherwise the processing lists are popped only while a wait is under way, the only
        time one may hold a message; after a lost reply, :meth:`reclaim_after_loss` empties
        them). False when there is nothing to send, or when it would only take while the
        worker is :attr:`idle`, the last fetch found nothing (nothing having come since) and
        the pending wait carried a poll: an idle worker's lists are polled with each wait, in
        the wait's own write (:meth:`_brpop_start`), not at every turn with a round trip. Only
        while a wait is no longer than an idle turn (:data:`BRPOP_TIMEOUT`): before Redis 6 it
        is kombu's whole second, and the turns poll as well."""
        acks = acks or []
        if (limit <= 0 or not queues) and not acks and starts is None:
            return False
        if self.idle and self._polled_empty and self._wait_polled \
                and self.brpop_timeout <= BRPOP_TIMEOUT and not (moved or acks or starts):
            return False
        assert self.owner is not None, "fetch_many takes messages for an owner"
        if (limit <= 0 or not queues) and not acks and starts is not None and starts.starts_only:
            # Only starts to record (a batch starts with nothing to take or ack): one ZADD,
            # far cheaper on both sides than the fetch script with its two dozen arguments.
            self._send_pending(_PendingFetch(self._fetch_connection(), [], [], [],
                                             _record_command(starts), script=False))
            return True
        # A processing list holds a message only between a wait's move and the fetch that
        # takes it (``moved``); a busy fetch while a wait is under way may take it first.
        self._send_pending(self._fetch_call(self._fetch_connection(), queues, limit, acks, starts,
                                            processing=moved or self._waiting_on is not None))
        return True

    def _fetch_call(self, conn: Any, queues: list[str], limit: int, acks: list[str],
                    starts: StartRecord | None, processing: bool) -> _PendingFetch:
        """The fetch script call on ``conn`` that acks ``acks``, records ``starts`` and takes up
        to ``limit`` messages of ``queues`` (and of their processing lists: ``processing``)."""
        order = [] if limit <= 0 else [
            q for q in self._queue_cycle.consume(len(self._queue_cycle.items))
            if q in queues] or list(queues)
        keys: list[str] = []
        for queue in order:
            if processing:
                keys.append(PROCESSING_KEY.format(owner=self.owner, queue=queue))
            keys.extend(dict.fromkeys(self._q_for_pri(queue, pri) for pri in self.priority_steps))
        size = len(keys) // len(order) if order else 1
        client = self._create_client()
        if not self._fetch_loaded:  # so that the first call's EVALSHA runs, not fails
            client.script_load(_FETCH)
            self._fetch_loaded = True
        started = [x for key, expires in (starts.started.items() if starts else ())
                   for x in (expires, key)]
        settled = starts.settled if starts else []
        trim = "" if starts is None or starts.trim_before is None else starts.trim_before
        keys = [self.unacked_index_key, self.unacked_key, OWNED_KEY.format(owner=self.owner),
                starts.key if starts else "", *keys]
        self._fetches += 1
        args = [max(limit, 0), time.time(), size, f"{self._tag_base}.{self._fetches}",
                len(acks), len(started) // 2, len(settled), trim, self._pop_many, *acks,
                *started, *settled, *order]
        return _PendingFetch(conn, order, acks, keys, args,
                             during_wait=processing and self._waiting_on is not None,
                             given_back=self._given_back)

    def gave_back(self) -> None:
        """Messages were given back to their queues: the next fetch that would only take is
        sent, and a fetch sent before does not tell that the lists are empty."""
        self._given_back += 1
        self._polled_empty = False

    def _send_pending(self, pending: _PendingFetch) -> None:
        """Send ``pending``'s command on its connection, to be read by :meth:`read_fetch`."""
        conn = pending.conn
        self._pending_fetches.append(pending)
        try:
            packed = self._pack_fetch(conn, pending) if pending.script \
                else wire.command(conn, pending.args)
            unsent, self._unsent = self._unsent, []
            conn.send_packed_command([b"".join([*unsent, packed])])  # one sendall a chunk
        except BaseException:
            self._release_fetch_connection(broken=True)
            raise

    def _pack_fetch(self, conn: Any, pending: _PendingFetch) -> bytes:
        """``pending``'s EVALSHA in Redis's wire format. Its key names and queue names are
        encoded once per queue order, not with every call (redis-py would encode all two dozen
        arguments each time); the few that change are encoded here."""
        keys, args = pending.keys, pending.args
        names = len(args) - len(pending.order)
        static = self._packed.get(tuple(keys))  # the keys name the queues, in their order
        if static is None:
            sha = self._script("fetch", _FETCH).sha
            static = self._packed[tuple(keys)] = (
                wire.arguments(conn, ["EVALSHA", sha, len(keys), *keys]),
                wire.arguments(conn, args[names:]))
        command, queues = static
        # args: limit, stamp, size, tag prefix, counts, trim, pop-many, tags, queue names
        return b"".join((b"*%d\r\n" % (3 + len(keys) + len(args)), command,
                         wire.arguments(conn, args[:names]), queues))

    def _fetch_connection(self) -> Any:
        """The connection for the next fetch, kept from one fetch to the next while they follow
        each other closely: taking one from redis-py's pool costs a readiness poll and two
        locked updates a call, and a busy worker makes a call for every task or two."""
        if self._fetch_conn is not None and not self._pending_fetches and \
                monotonic() - self._fetch_used_at > FETCH_CONNECTION_IDLE:
            try:
                self._read_unread(self._fetch_conn)
            except BaseException:
                self._release_fetch_connection(broken=True)
                raise
            self._release_fetch_connection()
        if self._fetch_conn is None:
            self._fetch_conn = self._create_client().connection_pool.get_connection()
        self._fetch_used_at = monotonic()
        return self._fetch_conn

    def _release_fetch_connection(self, broken: bool = False) -> None:
        """Give the fetch connection back to redis-py's pool; ``broken`` (or with replies
        still unread): closed first. Start records whose reply a broken connection took with
        it may not have reached Redis: that is logged, as a record Redis refused is."""
        conn, self._fetch_conn = self._fetch_conn, None
        unread, self._unread = self._unread, deque()
        self._pending_fetches.clear()
        self._unsent = []  # never reached Redis: completed as lost adoptions are
        records = sum(1 for call in unread if call is None)
        if broken and records:
            logger.warning("Cannot record started tasks in the ledger (the connection broke "
                           "before Redis confirmed %d record(s)): if this worker is lost now, "
                           "their delivery may not be counted", records)
        if conn is not None:
            if broken or unread:
                conn.disconnect()
            self._create_client().connection_pool.release(conn)

    def close(self) -> None:
        try:
            if self._wait_poll is not None and getattr(self, "_in_poll", None):
                try:  # the poll's reply first: kombu's close reads one, the wait's
                    self._read_poll()
                except Empty:  # took nothing
                    pass
                except self.connection_errors as exc:
                    # The wait is lost with its connection, as any lost wait: what it moved is
                    # given back (reclaim_after_loss, or restore_dead_owners once this owner is
                    # gone), and kombu's close has no reply left to read.
                    logger.debug("The wait's connection was lost before the channel closed: %r",
                                 exc)
        finally:
            self._release_fetch_connection()
        super().close()

    def read_fetch(self) -> int:
        """Read the reply to the oldest :meth:`send_fetch` not read yet and deliver its
        messages; returns how many."""
        assert self._pending_fetches, "read_fetch follows send_fetch"
        pending = self._pending_fetches.popleft()
        if not pending.script:  # a start record: its reply is read with the next call's
            self._unread.append(None)
            return 0
        client = self._create_client()
        try:
            self._read_unread(pending.conn)
            try:
                reply = pending.conn.read_response()
            except NoScriptError:  # flushed from Redis's cache: nothing of it ran, run it now
                reply = self._script("fetch", _FETCH)(keys=pending.keys, args=pending.args,
                                                      client=client)
        except BaseException:
            self._release_fetch_connection(broken=True)
            raise
        qos = self.qos  # a property of kombu's: asked once, not once an ack
        for tag in pending.acks:
            virtual.QoS.ack(qos, tag)
        if pending.order:
            self._queue_cycle.rotate(pending.order[0])
        return self._deliver_reply(pending, reply)

    def _deliver_reply(self, pending: _PendingFetch, reply: list[Any]) -> int:
        """Deliver what the fetch ``pending`` took (its ``reply``); returns how many."""
        order = pending.order
        if order:  # a call that could take: what it found tells whether the next one may
            self._polled_empty = not reply and pending.given_back == self._given_back
        taken = [(order[abs(int(group)) - 1], group, tag, item)
                 for group, tag, item in zip(reply[::3], reply[1::3], reply[2::3], strict=True)]
        delivered = 0
        for at, (queue, group, tag, item) in enumerate(taken):
            if group < 0:
                logger.warning("Message moved to %s: %s", dead_letter_queue_name(queue),
                               tag.decode() if isinstance(tag, bytes) else tag)
                continue
            try:
                delivered += self._deliver_taken(pending, queue, _tag(tag), item)
            except BaseException:
                self._put_back_taken(pending, taken[at + 1:])
                raise
        return delivered

    def _deliver_taken(self, pending: _PendingFetch, queue: str, tag: str | bytes,
                       item: bytes) -> int:
        """Deliver a message ``pending`` took, by the delivery tag the fetch script read (the
        key of its records); one Python cannot decode (a typed value kombu cannot build, an
        integer of more digits than Python converts, arrays nested deeper than its recursion
        limit, a tag that is not UTF-8: what Lua's JSON reads) or that is no kombu envelope
        (:func:`~..envelope.check_envelope`: the script does not decode one in kombu's layout)
        is dead-lettered instead. Returns how many were delivered (0 or 1)."""
        if isinstance(tag, bytes):
            self._dead_letter_taken(queue, item, tag,
                                    "not a kombu message: 'properties.delivery_tag' is not UTF-8")
            return 0
        try:
            payload = json_loads(item)
            body = check_envelope(payload, fetched=True)
        except Exception as exc:  # noqa: BLE001 - NotAnEnvelope, whatever Python's decode refuses
            self._dead_letter_taken(queue, item, tag, f"not a kombu message: {exc}")
            return 0
        if tag in self._unadopted:  # delivered from a wait already: now recorded
            self._unadopted.discard(tag)
            if not self._holds(tag):  # and settled since: drop the records
                self.qos._remove_from_indices(tag).execute()
            return 0
        self.qos.recorded.add(tag)
        if pending.during_wait:
            self._taken_while_waiting.add(tag)
        self.keep_decoded(payload, body)
        self.connection._deliver(payload, queue)
        return 1

    def _put_back_taken(self, pending: _PendingFetch,
                        rest: list[tuple[str, int, bytes, bytes]]) -> None:
        """Give back what a fetch took and the worker did not deliver, as the handling of an
        item before them failed: each to the consuming end of its queue (its highest priority),
        as it was and in the order they were taken, its records dropped, in one transaction,
        never decoded (it may be what failed). Those delivered from a wait already are the
        worker's; the dead-lettered are gone. One taken during a wait may be what the wait
        moved: its reply delivers it no more."""
        pipe = self._create_client().pipeline(transaction=True)
        for queue, group, tag, item in reversed(rest):  # the first taken is pushed last
            name = _tag(tag)
            if group > 0 and name not in self._unadopted:
                if pending.during_wait and isinstance(name, str):
                    self._taken_while_waiting.add(name)
                self.qos._remove_from_indices(name, pipe.rpush(queue, item))
        if pipe:
            pipe.execute()
            self.gave_back()

    def _dead_letter_taken(self, queue: str, item: bytes, tag: str | bytes, reason: str) -> None:
        """Move a message the fetch script recorded as taken (``tag``) to ``queue``'s dead-letter
        list, wrapped as the script wraps what is not an envelope, and drop its records, in one
        transaction. A worker lost before it leaves the message owned, to be restored and
        dead-lettered again; never lost."""
        dead = dead_letter_queue_name(queue)
        self._fetches += 1
        wrapped = dumps(dead_letter_wrapping(item, queue, reason,
                                             f"{self._tag_base}.{self._fetches}-0"))
        pipe = self._create_client().pipeline(transaction=True).lpush(dead, wrapped)
        self.qos._remove_from_indices(tag, pipe).execute()
        logger.warning("Message moved to %s: %s", dead, reason)

    def dead_letter_record(self, pipe: Any, tag: str | bytes, record: bytes,
                           reason: str) -> list[str]:
        """Queue on ``pipe`` (a transaction) the move of the message of the unacked record
        ``tag`` to the dead-letter queue of each queue its exchange and routing key lead to,
        wrapped whole, and the drop of its records; returns those dead-letter queues. The record
        is split, never decoded (see :func:`wire.split_record`). One that cannot be split stays
        where it is, never dropped."""
        parts = wire.split_record(record)
        if parts is None:
            logger.error("Cannot restore delivery %r (%s) nor find its queue in its unacked "
                         "record: left in unacked", tag, reason)
            return []
        item, exchange, routing_key = parts
        queues = self._lookup(exchange, routing_key)
        for queue in queues:
            self._fetches += 1
            pipe.lpush(dead_letter_queue_name(queue), dumps(dead_letter_wrapping(
                item, queue, reason, f"{self._tag_base}.{self._fetches}-0")))
        self.qos._remove_from_indices(tag, pipe)
        return [dead_letter_queue_name(queue) for queue in queues]

    def _read_unread(self, conn: Any) -> None:
        """Read the replies to the calls sent on ``conn`` and not read yet. A start record
        Redis refused (the ledger's key holds another type) is logged: the tasks ran without
        their record, as when a record cannot be sent. So is an adoption that found its message
        given back already; one that Redis refused is tried again (:meth:`_adopt_refused`).
        Adoptions not written yet go out first."""
        if self._unsent:
            unsent, self._unsent = self._unsent, []
            conn.send_packed_command([b"".join(unsent)])
        while self._unread:
            adoption = self._unread[0]
            try:
                reply = conn.read_response()
            except ResponseError as exc:
                self._unread.popleft()
                if adoption is None:
                    logger.warning("Cannot record started tasks in the ledger (%s): if this "
                                   "worker is lost now, their delivery may not be counted", exc)
                else:
                    logger.warning("Cannot record delivery %s as unacked (%s): it is still in "
                                   "this worker's processing list, recorded again at the next "
                                   "idle turn", adoption.tag, exc)
                    self._unadopted.add(adoption.tag)
                continue
            self._unread.popleft()
            if adoption is not None and not reply:
                logger.warning("Delivery %s was given back to its queue before this worker "
                               "recorded it (the worker looked lost): it may run twice",
                               adoption.tag)

    def read_unread(self) -> None:
        """Read the replies still unread on the fetch connection now: a delivery whose record
        rides there is recorded before another connection settles it."""
        if not self._unread or self._fetch_conn is None:
            return
        try:
            self._read_unread(self._fetch_conn)
        except BaseException:
            self._release_fetch_connection(broken=True)
            raise

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Wait for a message of the next queue in turn by moving it into this owner's
        processing list (``BLMOVE``): taken by Redis, it is never only in a socket buffer. The
        same write first polls every list of every queue for one message (the fetch script,
        :meth:`_read_poll`): the wait watches one list, not the other queues nor the priority
        sublists. That is while the worker is :attr:`idle` and the prefetch window has room
        for two; otherwise the wait goes alone and the worker's turns poll as before."""
        if self.owner is None:
            super()._brpop_start(timeout)
            return None
        if self._unadopted and not self._pending_fetches:
            self._adopt_refused()
        queues = self._queue_cycle.consume(1)
        if not queues:
            return None
        queue = queues[0]
        if queue not in self._processing_known:
            self._create_client().sadd(PROCESSING_QUEUES_KEY.format(owner=self.owner), queue)
            self._processing_known.add(queue)
        wait = self.brpop_timeout if timeout is None else timeout
        conn = self.client.connection
        packed = self._wait_packed.get((queue, wait))
        if packed is None:  # packed once per queue: redis-py would pack it for every wait
            target = PROCESSING_KEY.format(owner=self.owner, queue=queue)
            args = [queue, target, "RIGHT", "LEFT", wait] if self._blocking_move == "BLMOVE" \
                else [queue, target, wait]
            packed = self._wait_packed[(queue, wait)] = wire.command(
                conn, [self._blocking_move, *args])
        room = self.qos.can_consume_max_estimate()
        self._wait_polled = self.idle and (room is None or room > 1)  # the poll's and the wait's
        if self._wait_polled:
            self._wait_poll = self._fetch_call(conn, self._queue_cycle.items, 1, [], None,
                                               processing=False)
            packed = self._pack_fetch(conn, self._wait_poll) + packed
        self._waiting_on = queue
        self._taken_while_waiting.clear()
        self._in_poll = conn
        # kombu's class attribute (None) types it; kombu's own _brpop_start sets a float too
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        conn.send_packed_command([packed])
        return None

    def _brpop_read(self, **options: Any) -> bool:
        if self._waiting_on is None:
            return bool(super()._brpop_read(**options))
        if self._wait_poll is not None and self._read_poll():
            return True
        queue, self._waiting_on = self._waiting_on, None
        self._wait_polled = False
        try:
            try:
                moved = self.client.parse_response(self.client.connection, self._blocking_move,
                                                   **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
        finally:
            # kombu's class attribute (False) types it; kombu's own _brpop_read sets None too
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()
        self._queue_cycle.rotate(queue)
        if moved is None:
            raise Empty()
        self._polled_empty = False
        found = _envelope(moved)
        if found is None:  # not a plain kombu envelope: the fetch script's (it dead-letters it)
            if not self.fetch_many([queue], 1, moved=True):
                raise Empty()
            return True
        if found.tag in self._taken_while_waiting:  # a fetch meanwhile delivered it already
            raise Empty()
        self._adopt(queue, moved, found)
        return True

    def _read_poll(self) -> bool:
        """Read the reply to the poll sent with the pending wait and deliver what it took.
        True: it delivered, and the wait's reply is not here yet (the poller reads it when it
        comes); False: the wait's reply is here, to be read now (a reply already in redis-py's
        buffer makes the socket readable no more). Raises Empty when it took nothing and the
        wait goes on. A lost connection loses the wait as a lost wait's reply does; a poll
        Redis refused leaves the polls to the worker's turns, whose fetch meets the refusal
        where a fetch's is handled."""
        pending, self._wait_poll = self._wait_poll, None
        assert pending is not None, "a poll rides the pending wait"
        conn = self.client.connection
        try:
            try:
                delivered = self._deliver_reply(
                    pending, self.client.parse_response(conn, "EVALSHA"))
            except NoScriptError:  # flushed from Redis's cache: nothing of it ran
                self._fetch_loaded = False
                self._polled_empty = delivered = False
            except ResponseError as exc:
                logger.debug("The poll with an idle wait was refused: %s", exc)
                self._polled_empty = delivered = False
            if conn.can_read(timeout=0):
                return False
        except self.connection_errors:
            self._waiting_on = None
            # kombu's class attribute (False) types it; kombu's own _brpop_read sets None too
            self._in_poll = None  # type: ignore[assignment]
            conn.disconnect()
            raise
        if not delivered:
            raise Empty()
        return True

    def _adopt(self, queue: str, item: bytes, found: _Item) -> None:
        """Deliver what an idle wait moved straight from the wait's reply; its record as unacked
        and owned (:data:`_ADOPT`) goes out on the fetch connection in the write of the next
        call there (the fetch the worker sends before it starts the task) or before anything
        reads or settles through it, its reply read with that call's: the task waits neither a
        round trip nor a write of its own to start. Until Redis runs it, the message is in this
        owner's processing list, given back should the worker be lost."""
        assert self.owner is not None, "an adoption is an owner's"
        conn = self._fetch_connection()
        static = self._adopt_packed.get(queue)
        if static is None:
            keys = self._adopt_keys(self.owner, queue)
            static = self._adopt_packed[queue] = wire.arguments(
                conn, ["EVAL", _ADOPT, len(keys), *keys])
        self._unsent.append(b"*11\r\n%b%b" % (static, wire.arguments(
            conn, [item, time.time(), found.tag, found.record])))  # EVAL, script, 1+4 keys, 4 args
        self._unread.append(_Adoption(found.tag))
        self.qos.recorded.add(found.tag)
        self.keep_decoded(found.payload, found.body)
        self.connection._deliver(found.payload, queue)

    def _adopt_keys(self, owner: str, queue: str) -> list[str]:
        return [PROCESSING_KEY.format(owner=owner, queue=queue), self.unacked_index_key,
                self.unacked_key, OWNED_KEY.format(owner=owner)]

    # settling --------------------------------------------------------------------------------
    def ack_many(self, tags: Iterable[str]) -> None:
        """Ack a batch of deliveries in one pipeline."""
        tags = list(tags)
        if not tags:
            return
        self.read_unread()  # their records first, where they ride the fetch connection
        pipe = self._create_client().pipeline(transaction=False) \
            .zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags)
        if self.owned_key is not None:
            pipe.srem(self.owned_key, *tags)
        pipe.execute()
        for tag in tags:
            virtual.QoS.ack(self.qos, tag)

    def settle(self, tags: Iterable[str], requeue: bool) -> None:
        """Ack (or requeue at the head) deliveries made on a connection that was lost since:
        their tags are keys in Redis, valid on any connection."""
        tags = list(tags)
        self._adopt_moved(self._create_client(), tags)
        if not requeue:
            self.ack_many(tags)
            return
        with self.conn_or_acquire() as client:
            for tag in tags:
                self.qos.restore_by_tag(tag, client=client, leftmost=True)

    def finish_pending_read(self) -> None:
        """Read a pending blocking wait's reply now, while every consumer is registered: after
        ``basic_cancel`` kombu would read it later and hand the message it took to nobody."""
        while getattr(self, "_in_poll", None):  # the poll's reply, then the wait's
            try:
                self._brpop_read()
            except Empty:  # took nothing
                pass

    def liveness_keys(self) -> list[str]:
        """The keys the owner's liveness helper (:mod:`qtui.workers.liveness`) keeps: its
        ``alive`` key, its ``owned`` set, the set of owners and kombu's ``unacked_index``."""
        assert self.owner is not None, "an owner's keys: call own() first"
        return [ALIVE_KEY.format(owner=self.owner), OWNED_KEY.format(owner=self.owner),
                OWNERS_KEY, self.unacked_index_key]


class Transport(redis_broker.Transport):
    Channel = Channel


class SentinelChannel(Channel, redis_broker.SentinelChannel):
    """The worker's channel on the master a Redis Sentinel names."""


class SentinelTransport(redis_broker.SentinelTransport):
    Channel = SentinelChannel
