"""Joining a chord's header on Redis in Celery's layout, so Celery and qtui workers join one chord.

Each header task, when done, records ``[1, task_id, state, result]`` in the sorted set
``celery-taskset-meta-<group>.j`` (scored by its index in the header), with ``.s`` the header's
size, ``.t`` extra parts, ``.d`` the parts seen (a redelivered part counts once) and ``.c`` the
claim of the one worker that sends the body. The three Lua scripts are Celery's own
(``celery/backends/redis.py``, BSD licence), so both kinds of worker agree atomically on which
of them sends the body, once. qtui's claim token is the part's (its task id and index), and only
the worker ending a part whose process it reaped (``retake``) takes a claim that token holds: a
part killed while it sent the body sends it then (twice if the kill came between the publish
and the cleanup). Any other run of the part (a duplicate delivery, a second worker) needs the
claim free, as on Celery, so a duplicate running at the same time does not send the body.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import redis
from kombu.serialization import loads

from ..exceptions import ChordError
from .base import GROUP_PREFIX, exception_to_meta
from .chord import Send, fail_body, header_results, send_body

if TYPE_CHECKING:
    from ..protocol import TaskMessage
    from .redis import RedisBackend

logger = logging.getLogger("qtui.backend")

#: Seconds one worker holds the right to send the body (Celery: twice the join timeout, >= 5).
CLAIM_EXPIRES = 6
#: Seconds the claim is extended by while the body is being sent.
PUBLISH_EXPIRES = 30
#: Seconds a finished chord's ``done`` marker stops late duplicates of a part.
DONE_EXPIRES = 300

CHORD_PART_RETURN_LUA = """
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, ordered, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])
local claim_expires = tonumber(ARGV[7])
local claim_token = ARGV[8]
local retake = ARGV[9]
local done_marker = redis.call('GET', ckey)
if done_marker == 'done' then
    return {-1, 0, 0, 0}
end
local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
    if ordered == '1' then
        redis.call('ZADD', jkey, score, value)
    else
        redis.call('RPUSH', jkey, value)
    end
    redis.call('SADD', dkey, member)
end
local readycount
if ordered == '1' then
    readycount = redis.call('ZCOUNT', jkey, '-inf', '+inf')
else
    readycount = redis.call('LLEN', jkey)
end
if expires > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey}) do
        redis.call('EXPIRE', key, expires)
    end
    if group_expires > 0 then
        redis.call('EXPIRE', gkey, group_expires)
    end
end
local totaldiff = redis.call('GET', tkey)
local size = redis.call('GET', skey)
local claimed = 0
if size and readycount == tonumber(size) + tonumber(totaldiff or 0) then
    if redis.call('SET', ckey, claim_token, 'NX', 'EX', claim_expires) then
        claimed = 1
    elseif retake == '1' and redis.call('GET', ckey) == claim_token then
        claimed = 1
    end
end
return {readycount, totaldiff, size, claimed}
"""

CHORD_CLEANUP_LUA = """
local ckey, jkey, tkey, skey, dkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token = ARGV[1]
local done_expires = tonumber(ARGV[2])
if redis.call('GET', ckey) == token then
    redis.call('DEL', jkey, tkey, skey, dkey)
    if done_expires and done_expires > 0 then
        redis.call('SET', ckey, 'done', 'EX', done_expires)
    end
    return 1
end
return 0
"""

CHORD_CLAIM_EXTEND_LUA = """
local ckey, skey = KEYS[1], KEYS[2]
local token = ARGV[1]
local expires = tonumber(ARGV[2])
if redis.call('GET', ckey) == token then
    return redis.call('EXPIRE', ckey, expires)
end
if not redis.call('GET', ckey) and redis.call('EXISTS', skey) == 1 then
    return redis.call('SET', ckey, token, 'EX', expires, 'NX') and 1 or 0
end
return 0
"""


def group_key(group_id: str, suffix: str = "") -> str:
    return f"{GROUP_PREFIX}{group_id}{suffix}"


class RedisChordJoin:
    """The chord verbs of the Redis backend."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.client: redis.Redis = backend.client
        self._part_return = self.client.register_script(CHORD_PART_RETURN_LUA)
        self._cleanup = self.client.register_script(CHORD_CLEANUP_LUA)
        self._extend = self.client.register_script(CHORD_CLAIM_EXTEND_LUA)

    @property
    def expires(self) -> int:
        return int(self.backend.expires or 0)

    def set_chord_size(self, group_id: str, size: int) -> None:
        """As Celery: a new run of a chord forgets the claim of an earlier one."""
        self.client.delete(group_key(group_id, ".c"))
        self.client.set(group_key(group_id, ".s"), size, ex=self.expires or None)

    def on_chord_part_return(self, message: TaskMessage, state: str, result: Any,
                             send: Send | None = None, retake: bool = False) -> None:
        group_id, task_id = message.group, message.id
        if not group_id or not task_id:
            return
        score = "+inf" if message.group_index is None else message.group_index
        if isinstance(result, BaseException):
            result = exception_to_meta(result)
        encoded = self.backend.encode([1, task_id, state, result])
        keys = {s: group_key(group_id, s) for s in (".j", ".t", ".s", ".d", ".c")}
        # The part's own token: the worker ending a part whose process it reaped (``retake``)
        # takes back the claim that process held and sends the body.
        token = f"{task_id}:{score}"
        ready, diff, size, claimed = self._part_return(
            keys=[keys[".j"], keys[".t"], keys[".s"], keys[".d"], group_key(group_id), keys[".c"]],
            args=[task_id, encoded, 1, score, self.expires, self.expires, CLAIM_EXPIRES, token,
                  int(retake)])
        if ready == -1 or not size or not claimed:
            return
        if ready != int(size) + int(diff or 0):
            return
        if self.client.exists(group_key(group_id)):
            logger.error("Chord %s: its header was saved as a nested GroupResult, which qtui's "
                         "worker cannot join; its body is left to expire", group_id)
            return
        raws = cast("list[bytes]", self.client.zrange(keys[".j"], 0, -1))  # never decoded
        try:
            results = header_results(self._unpack(raw) for raw in raws)
        except ChordError as exc:
            fail_body(self.backend, message, exc)
            self.client.delete(keys[".s"])
            return
        if not self._extend(keys=[keys[".c"], keys[".s"]], args=[token, PUBLISH_EXPIRES]):
            logger.warning("Chord %s: body not sent, another worker holds the claim", group_id)
            return
        try:
            send_body(self.backend, message, results, send)
        finally:
            if not self._cleanup(keys=[keys[".c"], keys[".j"], keys[".t"], keys[".s"], keys[".d"]],
                                 args=[token, DONE_EXPIRES]):
                logger.warning("Chord %s: claim lost before cleanup; its keys are left to expire",
                               group_id)

    def _unpack(self, raw: bytes) -> tuple[str, str, Any]:
        _, task_id, state, value = loads(raw, self.backend.content_type, "utf-8",
                                         accept=self.backend.accept)
        return task_id, state, value
