"""The beat's shared state in Redis: the lease is ``SET NX PX`` renewed by its holder, a tick is
claimed by ``SET NX`` on a key named by entry and scheduled time (Redis's own clock dates
the claim), and the rest are small keys
under ``beat_key_prefix``. Compare-and-set steps run as Lua scripts, so each is atomic."""

from __future__ import annotations

import json
import time
from typing import cast

import redis

from ..brokers.redis.urls import client_url
from ..config import mask_url
from .store import RUNS_KEPT, TICK_TTL, BeatStore, Claim, Node, Run

_HOLD = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
_CLAIM = """
local seen = redis.call('GET', KEYS[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local mine = 'claimed:' .. ARGV[1] .. '@' .. string.format('%.6f', now)
if not seen then
  redis.call('SET', KEYS[1], mine, 'EX', ARGV[2])
  return 'new'
end
if string.sub(seen, 1, 5) == 'sent:' then return 'sent' end
local holder, since = string.match(seen, '^claimed:(.*)@([%d.]+)$')
if holder == ARGV[1] then return 'mine' end
if now - tonumber(since) < tonumber(ARGV[3]) then return 'pending' end
redis.call('SET', KEYS[1], mine, 'EX', ARGV[2])
return 'orphaned'
"""


class RedisBeatStore(BeatStore):
    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(client_url(url), socket_connect_timeout=5,
                                           socket_timeout=5, health_check_interval=10)
        self.prefix = prefix
        self.where = mask_url(url)
        self.errors = (redis.RedisError, OSError)
        self._hold = self.client.register_script(_HOLD)
        self._release = self.client.register_script(_RELEASE)
        self._claim = self.client.register_script(_CLAIM)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _tick(self, entry: str, scheduled: float) -> str:
        return self._key("tick", entry, repr(scheduled))

    def hold_lease(self, node: str, ttl: float) -> bool:
        return bool(self._hold(keys=[self._key("lease")], args=[node, int(ttl * 1000)]))

    def release_lease(self, node: str) -> None:
        self._release(keys=[self._key("lease")], args=[node])

    def claim_tick(self, entry: str, scheduled: float, node: str, fresh: float) -> Claim:
        found = self._claim(keys=[self._tick(entry, scheduled)], args=[node, TICK_TTL, fresh])
        return Claim(found.decode() if isinstance(found, bytes) else found)

    def record_run(self, entry: str, run: Run) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            if not run.manual:
                pipe.set(self._tick(entry, run.scheduled), f"sent:{run.by}", ex=TICK_TTL)
                pipe.hset(self._key("position"), entry, repr(run.scheduled))
            pipe.lpush(self._key("runs", entry), run.to_json())
            pipe.ltrim(self._key("runs", entry), 0, RUNS_KEPT - 1)
            pipe.execute()

    def skip_to(self, entry: str, scheduled: float) -> None:
        self.client.hset(self._key("position"), entry, repr(scheduled))

    def position(self, entry: str) -> float | None:
        found = self.client.hget(self._key("position"), entry)
        return float(found) if found is not None else None

    def runs(self, entry: str, limit: int = RUNS_KEPT) -> list[Run]:
        return [Run.from_json(item)
                for item in self.client.lrange(self._key("runs", entry), 0, limit - 1)]

    def set_paused(self, entry: str, paused: bool) -> None:
        if paused:
            self.client.sadd(self._key("paused"), entry)
        else:
            self.client.srem(self._key("paused"), entry)

    def paused(self) -> set[str]:
        members = cast("set[bytes]", self.client.smembers(self._key("paused")))  # no decoding
        return {m.decode() for m in members}

    def report_node(self, node: Node, ttl: float) -> None:
        record = json.dumps({"leader": node.leader, "seen": node.seen, "until": node.seen + ttl})
        self.client.hset(self._key("nodes"), node.name, record)

    def nodes(self) -> list[Node]:
        now = time.time()
        found, gone = [], []
        records = cast("dict[bytes, bytes]", self.client.hgetall(self._key("nodes")))  # no decoding
        for name, text in records.items():
            record = json.loads(text)
            if record["until"] < now:
                gone.append(name)
            else:
                found.append(Node(name.decode(), record["leader"], record["seen"]))
        if gone:
            self.client.hdel(self._key("nodes"), *gone)
        return sorted(found, key=lambda n: n.name)

    def close(self) -> None:
        self.client.close()
