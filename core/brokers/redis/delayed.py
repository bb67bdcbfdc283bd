"""The delayed (ETA) store on Redis: the sorted set ``qtui.delayed.<queue>`` scored by due
time; each member is the list the message goes back to, a newline, and the complete kombu
envelope (see :mod:`qtui.core.delayed`)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from typing import Any

from ...delayed import DELAYED_KEY, DelayedTasks, HeldTask, held_task, without_eta
from .queues import _unprefixed_keys

#: Move every member of a delayed set (KEYS[1]) to the tail of its list, as a new publish would.
#: ARGV[1]: the transport's ``global_keyprefix``, which a member's list name is stored without.
_RELEASE = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, member in ipairs(members) do
  local sep = string.find(member, '\\n', 1, true)
  redis.call('LPUSH', ARGV[1] .. string.sub(member, 1, sep - 1), string.sub(member, sep + 1))
end
redis.call('DEL', KEYS[1])
return #members
"""

#: Take one member (ARGV[1]) out of a delayed set (KEYS[1]); when it was still there, push
#: ARGV[3] (its envelope, changed) to the tail of list ARGV[2] (with the key prefix ARGV[4]).
#: 1 if taken: only one caller is.
_TAKE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then redis.call('LPUSH', ARGV[4] .. ARGV[2], ARGV[3]) end
return 1
"""


class RedisDelayed(DelayedTasks):
    """Redis: one sorted set per queue."""

    def count(self, queue: str) -> int:
        # kombu's client prefixes ZADD and DEL with the transport's global_keyprefix, not ZCARD
        key = _unprefixed_keys(self.channel)(DELAYED_KEY.format(queue=queue))
        return int(self.channel.client.zcard(key))

    def purge(self, queue: str) -> int:
        key = DELAYED_KEY.format(queue=queue)
        with self.channel.client.pipeline(transaction=True) as pipe:
            count, _ = pipe.zcard(_unprefixed_keys(self.channel)(key)).delete(key).execute()
        return int(count)

    def release(self, queue: str) -> int:
        client = self.channel.client
        return int(client.register_script(_RELEASE)(keys=[DELAYED_KEY.format(queue=queue)],
                                                    args=[self.channel.global_keyprefix or ""]))

    def tasks(self, queue: str, limit: int = 100) -> list[HeldTask] | None:
        return [held_task(envelope.get("headers") or {},
                          (envelope.get("properties") or {}).get("priority"))
                for _, _, envelope in self._members(queue, limit)]

    def run_now(self, queue: str, task_ids: Collection[str]) -> list[str]:
        def again(target: str, envelope: dict[str, Any]) -> tuple[str, str]:
            headers = without_eta(envelope.get("headers") or {})
            return target, json.dumps({**envelope, "headers": headers})
        return self._take(queue, task_ids, again)

    def delete(self, queue: str, task_ids: Collection[str]) -> list[str]:
        return self._take(queue, task_ids, lambda target, envelope: ("", ""))

    def _take(self, queue: str, task_ids: Collection[str], then: Any) -> list[str]:
        """Take the members of these tasks out of the set, each pushed where ``then(target,
        envelope)`` says (``("", "")``: nowhere)."""
        wanted, taken = set(task_ids), []
        take = self.channel.client.register_script(_TAKE)
        prefix = self.channel.global_keyprefix or ""
        for member, target, envelope in self._members(queue, -1):
            task_id = (envelope.get("headers") or {}).get("id")
            if task_id in wanted and take(keys=[DELAYED_KEY.format(queue=queue)],
                                          args=[member, *then(target, envelope), prefix]):
                taken.append(str(task_id))
        return taken

    def _members(self, queue: str, limit: int) -> Iterator[tuple[bytes, str, dict[str, Any]]]:
        """(member, the list it goes back to, its envelope) of the first ``limit`` members by
        due time (all with -1); a member not in qtui's layout has an empty envelope."""
        stop = -1 if limit < 0 else limit - 1
        for member in self.channel.client.zrange(DELAYED_KEY.format(queue=queue), 0, stop):
            text = member.decode() if isinstance(member, bytes) else member
            target, _, raw = text.partition("\n")
            try:
                envelope = json.loads(raw)
            except ValueError:  # not qtui's layout: shown without details
                envelope = {}
            yield member, target, envelope if isinstance(envelope, dict) else {}
